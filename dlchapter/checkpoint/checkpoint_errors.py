"""Checkpoint errors in one line: the exception types, OS write failures, and orbax's teardown noise.

Orbax and tensorstore report a full disk or a read-only directory as a
ValueError whose text ends in `[os_error_code='28']`, after many lines of
traceback; `write_error` turns such a failure into one CheckpointWriteError
that names the directory and the cause. A failed read or write also leaves
"Event loop is closed" errors and unawaited tensorstore coroutines behind,
reported at garbage collection through `sys.unraisablehook`, and the failed
fragment writes of the same save, logged by asyncio ("Task exception was never
retrieved", "Future exception ...") whenever the garbage collector finds their tasks;
`install_quiet_unraisable_hook` drops those (and only those).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import warnings
from typing import Any


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not fit what it is restored into."""


class TrainingInterrupted(RuntimeError):
    """A SIGTERM or SIGINT arrived; a checkpoint was saved at the next step boundary.

    Defined here, beside the other errors and without JAX, so that error handlers (`cli.launch`,
    `tracking.track_run`) catch it without importing the resume machinery; `dlchapter.checkpoint.resume`
    re-exports it.
    """


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, read-only file system, no permission, ...)."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint's arrays do not fit the state it is restored into: another model or optimizer, or a state
    laid out by another dlchapter version. The message names the first differing entry."""


class NoUsableCheckpoint(CheckpointError):
    """Every checkpoint in a directory is damaged; the message gives each step's reason."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped or moved aside; the message names the step and why."""


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def os_errno(err: BaseException) -> int | None:
    """The errno behind a write failure: an OSError in the chain, or tensorstore's `os_error_code`."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return err.errno
        match = _OS_ERROR_CODE.search(str(err))
        if match:
            return int(match.group(1))
        err = err.__cause__ or err.__context__
    return None


def write_error(err: BaseException, what: str, directory: Any) -> CheckpointError | None:
    """A one-line CheckpointWriteError for an operating-system write failure, else None (a bug: re-raise)."""
    code = os_errno(err)
    if code is None:
        return None
    name = errno.errorcode.get(code, str(code))
    hint = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "check its permissions",
        errno.EPERM: "check its permissions",
        errno.EFBIG: "a file-size limit (ulimit -f) was reached",
    }
    return CheckpointWriteError(
        f"cannot write {what} in {directory}: {os.strerror(code)} ({name}); "
        f"{hint.get(code, 'check the disk')}, or pass another --workdir"
    )


# Python's warning for an unawaited coroutine names it by its qualified name. orbax's serialization coroutines
# (orbax/checkpoint/_src/serialization: `async_serialize`, `_async_serialize_replica_slices`,
# `async_serialize_from_host.<locals>.write_fragment`, `ArrayHandler.….<locals>._serialize_batch`) all match.
UNAWAITED_SERIALIZATION = (
    r"coroutine '(?:[\w.]+\.<locals>\.)?_?(?:async_serialize|serialize)\w*(?:\.<locals>\.\w+)?' was never awaited$"
)


def _is_orbax_coroutine(obj: Any) -> bool:
    code = getattr(obj, "cr_code", None)
    return code is not None and ("orbax" in code.co_filename or "tensorstore" in code.co_filename)


def _is_orbax_teardown_noise(unraisable: Any) -> bool:
    """Errors orbax and tensorstore leave behind after a failed read or write, reported at garbage collection."""
    exc, obj = unraisable.exc_value, unraisable.object
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    return _is_orbax_coroutine(obj)


def _quiet_unawaited_orbax_coroutines() -> None:
    """Python reports an unawaited coroutine through `warnings._warn_unawaited_coroutine(coro)` (CPython 3.8+,
    looked up on the module at each report); wrapped, it drops orbax's and tensorstore's coroutines by their
    code's file, whatever their names (CI saw `Store._get_array_metadatas` after a damaged read)."""
    original = getattr(warnings, "_warn_unawaited_coroutine", None)
    if original is None or getattr(original, "_dlchapter_quiet", False):
        return

    def warn_unless_orbax(coro: Any) -> None:
        if not _is_orbax_coroutine(coro):
            original(coro)

    warn_unless_orbax._dlchapter_quiet = True  # type: ignore[attr-defined]
    warnings._warn_unawaited_coroutine = warn_unless_orbax  # type: ignore[attr-defined]


_ABANDONED_ASYNC_LOGS = (
    "Task exception was never retrieved",
    "Future exception was never retrieved",
    "Task was destroyed but it is pending!",
)
# Words that mark the task, future or its exception as orbax's or tensorstore's: the coroutine's file, or the
# failed write's path (orbax writes into `*.orbax-checkpoint-tmp` folders) and tensorstore's OCDBT database.
_ORBAX_MARKS = ("orbax", "tensorstore", "OCDBT")


def _is_orbax_task_log(record: logging.LogRecord) -> bool:
    """asyncio's log of an orbax/tensorstore write task or future nobody awaited, failed or still pending when the
    process ends: the save's other fragments, whose failure the save already raised (as one CheckpointWriteError)."""
    message = record.getMessage()
    return message.startswith(_ABANDONED_ASYNC_LOGS) and any(mark in message for mark in _ORBAX_MARKS)


def _keep_unless_orbax_task_log(record: logging.LogRecord) -> bool:
    return not _is_orbax_task_log(record)


def install_quiet_unraisable_hook() -> None:
    """Drops only `_is_orbax_teardown_noise`; everything else goes to the hook installed before.

    An orbax/tensorstore serialization coroutine that a failed write left unawaited can also be finalized at
    interpreter exit, where Python reports it as `RuntimeWarning: coroutine '…' was never awaited` (seen under
    load, e.g. for `async_serialize_from_host.<locals>.write_fragment`); that warning, for orbax's serialization
    coroutines only (by their code's file, `_quiet_unawaited_orbax_coroutines`, and by name,
    `UNAWAITED_SERIALIZATION`, where Python's hook cannot be wrapped), is ignored too, and so are asyncio's
    logs of those coroutines' failed tasks (`_is_orbax_task_log`; seen under load on a full disk).
    """
    warnings.filterwarnings("ignore", message=UNAWAITED_SERIALIZATION, category=RuntimeWarning)  # where unwrapped
    _quiet_unawaited_orbax_coroutines()
    asyncio_logger = logging.getLogger("asyncio")
    if _keep_unless_orbax_task_log not in asyncio_logger.filters:
        asyncio_logger.addFilter(_keep_unless_orbax_task_log)
    previous = sys.unraisablehook
    if getattr(previous, "_dlchapter_quiet", False):
        return

    def hook(unraisable: Any) -> None:
        if not _is_orbax_teardown_noise(unraisable):
            previous(unraisable)

    hook._dlchapter_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
