"""One run per work directory: an OS file lock held for the whole run.

`exclusive_workdir(path)` takes a non-blocking `filelock.FileLock` on
`<path>/.dlchapter.lock` (flock on Unix: the kernel releases it when the
process dies, so a killed run leaves no stale lock behind) and writes the
holder's process id to `<path>/.dlchapter.lock.pid` for the message a second
run gets. Both files are removed when the run ends normally.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import filelock

LOCK_NAME = ".dlchapter.lock"
PID_NAME = ".dlchapter.lock.pid"


class WorkdirBusy(RuntimeError):
    """Another live process holds the work directory's lock."""


class WorkdirUnusable(RuntimeError):
    """The work directory cannot be created or locked (a file in the way, no permission, ...)."""


_HELD: set[str] = set()  # real paths of the work directories this process holds


def _holder(pid_file: Path) -> str:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return "another process (its id is not recorded yet)"
    return f"process {pid}"


@contextlib.contextmanager
def exclusive_workdir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Holds `path`'s lock (creating the directory) while the block runs; yields the directory.

    Raises WorkdirBusy at once (no waiting) when another live process holds
    it, naming that process's id; WorkdirUnusable when the directory cannot be
    created or the lock file cannot be written. Re-entrant within a process: a
    nested call on a directory this process already holds yields at once.
    """
    directory = Path(path)
    key = os.path.realpath(directory)
    if key in _HELD:
        yield directory
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WorkdirUnusable(f"cannot create the work directory {directory}: {err.strerror}") from None
    lock = filelock.FileLock(directory / LOCK_NAME, blocking=False, fallback_to_soft=False, is_singleton=False)
    pid_file = directory / PID_NAME
    try:
        lock.acquire()
    except filelock.Timeout:
        raise WorkdirBusy(
            f"the work directory {directory} is in use by {_holder(pid_file)}; wait for it to "
            "finish, or pass another --workdir"
        ) from None
    except OSError as err:
        raise WorkdirUnusable(f"cannot lock the work directory {directory}: {err.strerror}") from None
    _HELD.add(key)
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        yield directory
    finally:
        _HELD.discard(key)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        lock.release()
