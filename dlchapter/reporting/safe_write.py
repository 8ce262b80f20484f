"""The one way a run writes a file: an exclusive temporary file beside the target, then `os.replace`.

Every report file (JSON, CSV, Markdown, PNG, index pages, NumPy archives) and
every download goes through `atomic_open` (or `write_text` / `write_bytes`):

- the temporary file is created with `tempfile.mkstemp` in the target's own
  directory (``O_CREAT | O_EXCL``, a random name, mode 0600 while written), so
  nothing planted under a predictable name (a symbolic link at
  ``.metrics.json.tmp``) is ever opened;
- when the body of the ``with`` block finishes, the file is flushed, given the
  usual permissions (0666 less the umask) and renamed onto the target with
  `os.replace`. A symbolic link found at the target's name is thereby replaced
  itself; the file it pointed to is never opened, truncated or written;
- on any error (or KeyboardInterrupt) the temporary file is removed and the
  target is left as it was: a reader sees the old file or the new one, never
  half of either.

The directory is the caller's choice: a run directory given as a symbolic link
(a workdir on another disk) is written in the directory the link names. A
target that is itself a directory raises `IsADirectoryError` before anything
is written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0o022)  # read it once, at import (single-threaded), and put it back
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()

# The names this process wrote, per directory (resolved): `dlchapter.reporting.report_manifest` reads a run
# directory's with `take_written` when the report is finished, to tell this run's files from an earlier run's.
_WRITTEN: dict[Path, set[str]] = {}


def record_written(path: str | os.PathLike) -> None:
    """Note that `path` was written by this process (done by `atomic_open`; figures drawn elsewhere call it)."""
    target = Path(path)
    _WRITTEN.setdefault(target.parent.resolve(), set()).add(target.name)


def take_written(directory: str | os.PathLike) -> set[str]:
    """The names of the files this process wrote in `directory` since the last call for it (and forget them)."""
    return _WRITTEN.pop(Path(directory).resolve(), set())


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    suffix: str = ".tmp",
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO]:
    """Open a new temporary file for writing; on success it replaces `path` atomically.

    Args:
      path: the file to create or replace; its directory is created if needed.
      mode: "wb" (default) or "w" (text; `encoding` defaults to UTF-8).
      suffix: the temporary file's suffix (downloads use ".part").

    Raises:
      IsADirectoryError: `path` is an existing directory (not a link).
      OSError: the directory cannot be created or written, or the disk is full (the error names `path`);
        nothing is left behind.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    if target.is_dir() and not target.is_symlink():
        raise IsADirectoryError(f"{target} is a directory; cannot write a file there")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_temporary_prefix(target), suffix=suffix)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _FILE_MODE)
        os.replace(tmp_name, target)
        record_written(target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            raise type(error)(error.errno, error.strerror, str(target)) from error  # a full disk: name the file
        raise


def _temporary_prefix(target: Path) -> str:
    """The name start of `atomic_open`'s temporary files for `target`: hidden, beside it, named after it."""
    return f".{target.name}."


def remove_stale_temporaries(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Delete the temporary files that `atomic_open(path)` calls left behind (a process killed mid-write cannot
    clean up); returns them. Only for a caller that alone writes `path` now (a run holds its work directory's lock).
    """
    target = Path(path)
    stale = sorted(target.parent.glob(f"{glob_escape(_temporary_prefix(target))}*{suffix}"))
    for file in stale:
        file.unlink(missing_ok=True)
    return stale


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through `atomic_open`; returns the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` (line ends as given: no newline translation) to `path` through `atomic_open`."""
    return write_bytes(path, text.encode(encoding))
