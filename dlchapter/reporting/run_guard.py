"""What surrounds one run started from the command line: its work directory's lock and one-line messages.

`guarded_run(argv)` takes the `--workdir` named in `argv` exclusively for the
run (`dlchapter.reporting.workdir_lock`), shows dlchapter's own warnings as one
`warning: ...` line each on stderr. `sigterm_unwinds()` makes SIGTERM unwind the
run like Ctrl-C (`Terminated`), so that clean-ups run and one line says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dlchapter.reporting.workdir_lock import exclusive_workdir

EXIT_CTRL_C = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
EXIT_SIGTERM = 143  # 128 + SIGTERM


class Terminated(BaseException):
    """SIGTERM outside a checkpointing run's training (which saves and exits 3): unwinds like Ctrl-C."""


def interruption(stop: KeyboardInterrupt | Terminated) -> tuple[str, int]:
    """What stopped a run and its exit status: ("Ctrl-C", 130) or ("SIGTERM", 143)."""
    return ("SIGTERM", EXIT_SIGTERM) if isinstance(stop, Terminated) else ("Ctrl-C", EXIT_CTRL_C)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises `Terminated` inside the block (clean-ups run, one line is printed) instead of killing the
    process on the spot; only in the main thread and only over Python's default action (a caller's handler stays).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def ctrl_c_noticed() -> Iterator[list[int]]:
    """Ctrl-C raises KeyboardInterrupt as usual inside the block, and is also noted in the list yielded, so that a
    KeyboardInterrupt swallowed on its way up (by a library's `except BaseException` or bare `except:`) cannot let
    the run end with status 0, as runs interrupted 0.2-0.5 s in did. Main thread and Python's default handler only."""
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield arrived
        return

    def note_and_raise(signum: int, frame: Any) -> None:
        arrived.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note_and_raise)
    try:
        yield arrived
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM arriving inside the block are held until it ends, then delivered to the handlers in
    place before it: for importing C extensions (JAX's), whose initialisation a KeyboardInterrupt leaves half
    done (an ImportError traceback, or a crash: seen for Ctrl-C 0.14-0.22 s into a run). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda s, f: held.append(s)) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def workdir_of(argv: Sequence[str] | None) -> Path | None:
    """The `--workdir` given in `argv` (the process's arguments when None; the last one wins), or None.

    A `--workdir` without a value, or an empty one, is None here: the experiment's own parser then reports it.
    """
    tokens, workdir = list(sys.argv[1:] if argv is None else argv), None
    for i, token in enumerate(tokens):
        if token == "--workdir" and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            workdir = tokens[i + 1]
        elif token.startswith("--workdir="):
            workdir = token.split("=", 1)[1]
    return Path(workdir) if workdir else None


@contextlib.contextmanager
def one_line_messages() -> Iterator[None]:
    """dlchapter's warnings as one `warning: <message>` line each on stderr.

    The library's log lines (e.g. that a run resumed from a checkpoint) reach stderr through the handler that
    `dlchapter.reporting.verbosity.configure` installs for the command line.
    """
    previous_show = warnings.showwarning

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
    ) -> None:
        if category.__module__.startswith("dlchapter"):
            print(f"warning: {message}", file=sys.stderr)
        else:
            previous_show(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous_show


def is_secondary_process() -> bool:
    """True in process 1, 2, ... of a multi-process run (JAX_PROCESS_ID, `dlchapter.engine.parallel`),
    before JAX starts."""
    return os.environ.get("JAX_PROCESS_ID", "0").strip() not in ("", "0")


@contextlib.contextmanager
def guarded_run(argv: Sequence[str] | None) -> Iterator[None]:
    """The lock on `argv`'s --workdir (WorkdirBusy/WorkdirUnusable at once) and `one_line_messages`.

    Only an existing directory is locked here, before the flags are parsed, so that a second run into a busy
    work directory stops at once; a new one is created and locked by `dlchapter.cli.run_experiment` after its
    checks. The processes of one multi-process run share their --workdir: process 0 holds the lock for all.
    """
    workdir = None if is_secondary_process() else workdir_of(argv)
    if workdir is not None and not workdir.is_dir():
        workdir = None  # a new work directory is locked by the run itself once its flags are checked
    with exclusive_workdir(workdir) if workdir is not None else contextlib.nullcontext(), one_line_messages():
        yield
