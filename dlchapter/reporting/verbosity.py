"""What a command-line run shows on stderr: `--verbosity quiet|epoch|bar`.

For entry points only (the `dlchapter` command and `python -m experiments.X`
through `cli.launch`): the library itself only logs and never configures
handlers. `epoch` prints one Keras `verbose=2` line per epoch (the
`dlchapter.epochs` logger) and the library's other INFO messages; `bar` shows
tqdm's progress bar instead of the epoch lines (the bar stays when training
ends); `quiet` shows warnings and errors only. Default: `bar` when stderr is a
terminal, else `epoch` (a cluster job, nohup, a notebook's captured stderr).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from dlchapter.reporting.run_guard import workdir_of
from dlchapter.reporting.tracking import track_run

VERBOSITIES = ("quiet", "epoch", "bar")
_MARK = "_dlchapter_cli_handler"


class VerbosityError(ValueError):
    """A `--verbosity` flag without a valid value."""


class _TqdmHandler(logging.StreamHandler):
    """Writes through `tqdm.write`, so a log line never breaks a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def default_verbosity(stream: TextIO | None = None) -> str:
    """`bar` when `stream` (default stderr) is a terminal, else `epoch`."""
    stream = sys.stderr if stream is None else stream
    return "bar" if getattr(stream, "isatty", lambda: False)() else "epoch"


def configure(verbosity: str | None, stream: TextIO | None = None) -> bool:
    """Install the CLI's handler on the `dlchapter` logger for `verbosity`; returns whether to show the bar.

    Raises VerbosityError for a name outside VERBOSITIES. Calling it again replaces the handler.
    """
    verbosity = verbosity or default_verbosity(stream)
    if verbosity not in VERBOSITIES:
        raise VerbosityError(f"--verbosity must be one of {', '.join(VERBOSITIES)}, got {verbosity!r}")
    library = logging.getLogger("dlchapter")
    for handler in [h for h in library.handlers if getattr(h, _MARK, False)]:
        library.removeHandler(handler)
    handler = _TqdmHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(_WarningPrefix("%(message)s"))
    setattr(handler, _MARK, True)
    library.addHandler(handler)
    library.setLevel(logging.WARNING if verbosity == "quiet" else logging.INFO)
    library.propagate = False  # the CLI owns stderr: no second copy through a root handler another package installed
    logging.getLogger("dlchapter.epochs").setLevel(logging.INFO if verbosity == "epoch" else logging.WARNING)
    logging.getLogger("tensorboardX").setLevel(
        logging.ERROR
    )  # it warns that "confusion matrix" becomes confusion_matrix
    return verbosity == "bar"


class _WarningPrefix(logging.Formatter):
    """The message alone; a warning's line starts with `warning: `, as dlchapter's Python warnings do."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def pop_verbosity(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the `--verbosity` value or None, argv without it); VerbosityError when the flag has no valid value."""
    rest, value, items = [], None, list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--verbosity":
            if i + 1 >= len(items):
                raise VerbosityError(f"--verbosity needs a value: one of {', '.join(VERBOSITIES)}")
            value, i = items[i + 1], i + 2
            continue
        if item.startswith("--verbosity="):
            value = item.split("=", 1)[1]
        else:
            rest.append(item)
        i += 1
    if value is not None and value not in VERBOSITIES:
        raise VerbosityError(f"--verbosity must be one of {', '.join(VERBOSITIES)}, got {value!r}")
    return value, rest


@contextlib.contextmanager
def cli_run(argv: Sequence[str], verbosity: str | None = None) -> Iterator[list[str]]:
    """For `cli.launch`: configure logging, open a run scope on `--workdir`; yields argv without `--verbosity`."""
    flag, rest = pop_verbosity(argv)
    progress = configure(flag or verbosity)
    workdir = workdir_of(rest)
    with track_run(workdir, progress=progress) if workdir is not None else contextlib.nullcontext():
        yield rest
