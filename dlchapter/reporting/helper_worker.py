"""The helper process of `dlchapter.reporting.helper_process`: runs the jobs its parent sends, one at a time.

    python -m dlchapter.reporting.helper_worker     (started by `helper_process`, never by hand)

Protocol, pickled objects over the process's own stdin and stdout (a job's prints go to stderr instead):
the parent sends `(job_id, optional, forked, payload)` with `payload = pickle.dumps((fn, args, kwargs))`; the
helper answers `(job_id, True, result)` or `(job_id, False, (exception, traceback text))`. Jobs run one at a
time, in order, except `forked` ones (figures): each runs in a child forked from this warm process (matplotlib
already imported, so the child starts at once), while this process goes on with the next job; a run's figures
are drawn side by side on a machine with a spare core. At most `FORKED_AT_ONCE` children run at a time, and
their answers come when they finish. When its stdin ends (the parent closed it, or died), the helper skips the
jobs still queued that are `optional` (prefetches and imports nobody will read), finishes the others and waits
for its children (figures: no half-written file is left), and exits. It ignores SIGINT: Ctrl-C is for the
training process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO

from dlchapter.reporting.helper_process import HelperDied  # stdlib only: light

FORKED_AT_ONCE = 2  # figures drawn at the same time (children of this process); more would only share the cores
CAN_FORK = sys.platform == "linux"  # fork without exec: safe for matplotlib's Agg and numpy there


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


def _answer(job_id: int, ok: bool, value: Any) -> bytes:
    """The pickled answer; a result that does not pickle makes the job fail with that reason."""
    try:
        return pickle.dumps((job_id, ok, value))
    except Exception as error:
        return pickle.dumps((job_id, False, _picklable_error(error)))


class _Children:
    """The forked children running jobs, and the answers they send back through a pipe each."""

    def __init__(self, send: Callable[[bytes], None], protocol_fds: tuple[int, ...]) -> None:
        self.send = send
        self.protocol_fds = protocol_fds  # closed in each child: only this process talks to the parent
        self.slots = threading.BoundedSemaphore(FORKED_AT_ONCE)
        self.waiters: list[threading.Thread] = []

    def start(self, job_id: int, payload: bytes) -> None:
        """Run the job in a forked child (waiting for a free slot); a thread sends its answer when it ends."""
        self.slots.acquire()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run the job, hand the answer up, end without any clean-up of the parent's state
            for fd in (read_end, *self.protocol_fds):
                os.close(fd)
            answer = _answer(job_id, *_run(payload))
            with contextlib.suppress(OSError):  # the helper is gone (killed): nobody to answer
                with os.fdopen(write_end, "wb") as out:
                    out.write(answer)
            os._exit(0)
        os.close(write_end)
        waiter = threading.Thread(target=self._wait, args=(job_id, pid, read_end), daemon=True)
        waiter.start()
        self.waiters.append(waiter)

    def _wait(self, job_id: int, pid: int, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as source:
            answer = source.read()
        _, status = os.waitpid(pid, 0)
        if not answer:  # it died before answering (killed, out of memory): the parent redraws the figure
            code = os.waitstatus_to_exitcode(status)
            how = f"was stopped by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            died = HelperDied(f"the helper's process drawing a figure {how} before it finished")
            answer = _answer(job_id, False, (died, ""))
        self.slots.release()
        self.send(answer)

    def join(self) -> None:
        for waiter in self.waiters:
            waiter.join()


def main() -> None:
    """The job loop; exits (without the interpreter's teardown) when the input ends or the parent stops reading."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Python 3.12+ warns at every fork of a process with threads (a child could inherit a lock another thread
    # held). A child here runs one job in its main thread and touches nothing the other threads lock: it closes
    # the protocol pipes at once, the reader thread only fills the job queue and the waiters only write answers.
    warnings.filterwarnings("ignore", r"This process \(pid=\d+\) is multi-threaded", DeprecationWarning)
    # the protocol's pipes on their own descriptors; fd 0 reads nothing and fd 1 is stderr, so no job's output
    # (Python's or a C library's) can reach them
    source, sink = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdin, sys.stdout = open(os.devnull), sys.stderr  # noqa: SIM115
    jobs: queue.Queue = queue.Queue()
    ended = threading.Event()
    threading.Thread(target=_read_jobs, args=(source, jobs, ended), daemon=True).start()
    sink_lock = threading.Lock()
    gone = threading.Event()  # the parent stopped reading

    def send(answer: bytes) -> None:
        with sink_lock:
            try:
                sink.write(answer)
                sink.flush()
            except OSError:
                gone.set()

    children = _Children(send, (source.fileno(), sink.fileno()))
    while (job := jobs.get()) is not None and not gone.is_set():
        job_id, optional, forked, payload = job
        if optional and ended.is_set():
            continue
        if forked and CAN_FORK:
            children.start(job_id, payload)
        else:
            send(_answer(job_id, *_run(payload)))
    children.join()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
