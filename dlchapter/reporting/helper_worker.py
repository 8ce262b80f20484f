"""The helper process of `dlchapter.reporting.helper_process`: runs the jobs its parent sends, one at a time.

    python -m dlchapter.reporting.helper_worker     (started by `helper_process`, never by hand)

Protocol, pickled objects over the process's own stdin and stdout (a job's prints go to stderr instead):
the parent sends `(job_id, optional, payload)` with `payload = pickle.dumps((fn, args, kwargs))`; the helper
answers `(job_id, True, result)` or `(job_id, False, (exception, traceback text))`, in the order of the jobs.
When its stdin ends (the parent closed it, or died), the helper skips the jobs still queued that are `optional`
(prefetches and imports nobody will read), finishes the others (figures: no half-written file is left) and
exits. It ignores SIGINT: Ctrl-C is for the training process.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from typing import Any, BinaryIO


def _read_jobs(source: BinaryIO, jobs: queue.Queue, ended: threading.Event) -> None:
    """Queue every job the parent sends; on end of input, mark the end and wake the job loop."""
    try:
        while True:
            jobs.put(pickle.load(source))
    except (EOFError, OSError, pickle.UnpicklingError):
        ended.set()
        jobs.put(None)


def _picklable_error(error: BaseException) -> tuple[BaseException, str]:
    """`error` and its traceback text; a RuntimeError with its text if `error` itself cannot be pickled."""
    text = "".join(traceback.format_exception(error))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return error, text


def _run(payload: bytes) -> tuple[bool, Any]:
    try:
        fn, args, kwargs = pickle.loads(payload)
        return True, fn(*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
        return False, _picklable_error(error)


def main() -> None:
    """The job loop; exits (without the interpreter's teardown) when the input ends or the parent stops reading."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the protocol's pipes on their own descriptors; fd 0 reads nothing and fd 1 is stderr, so no job's output
    # (Python's or a C library's) can reach them
    source, sink = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdin, sys.stdout = open(os.devnull), sys.stderr  # noqa: SIM115
    jobs: queue.Queue = queue.Queue()
    ended = threading.Event()
    threading.Thread(target=_read_jobs, args=(source, jobs, ended), daemon=True).start()
    while (job := jobs.get()) is not None:
        job_id, optional, payload = job
        if optional and ended.is_set():
            continue
        ok, value = _run(payload)
        try:
            answer = pickle.dumps((job_id, ok, value))
        except Exception as error:  # a result that does not pickle: the job fails with that reason
            answer = pickle.dumps((job_id, False, _picklable_error(error)))
        try:
            sink.write(answer)
            sink.flush()
        except OSError:  # the parent is gone
            break
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
