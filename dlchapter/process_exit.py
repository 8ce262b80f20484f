"""The end of a command-line process: `exit_process`, the fast exit the launchers and the `dlchapter` command use.

Re-exported by `dlchapter.cli`, where the launchers in experiments/ import it from.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def exit_process(status: int) -> NoReturn:
    """End a command-line process with `status`, skipping the interpreter's teardown when that is safe.

    The atexit handlers run (logging, TensorBoard writers, orbax, multiprocessing clean-ups) and stdout
    and stderr are flushed; then `os._exit` skips freeing every module and object one by one, which after
    a JAX run takes about half a second to a second on a 2-core CPU (`benchmarks/cold_start.py`, NOTES.md).
    Falls back to `sys.exit` (the normal teardown) while a non-daemon thread is still running, without
    CPython's `atexit._run_exitfuncs`, or with DLCHAPTER_FAST_EXIT=0 (false, no, off). Only for `__main__` entry points:
    a caller that wants the status back calls `main`/`launch` instead.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    from dlchapter.reporting.helper_process import switched_off

    if others or run_exit_handlers is None or switched_off("DLCHAPTER_FAST_EXIT"):
        sys.exit(status)
    jax_exit = _jax_exit_without_teardown()
    run_exit_handlers()
    jax_exit()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more can be said
            stream.flush()
    os._exit(status)


def _jax_exit_without_teardown() -> Callable[[], None]:
    """Unregister JAX's atexit `clean_up`, which destroys the backend clients and clears every cache one by one
    (22 ms of the diamonds run on a 2-core CPU: `os._exit` frees all that at once), and return what of it still
    matters at exit: waiting for pending host callbacks (`jax.effects_barrier`) and leaving a multi-process job
    (`jax.distributed.shutdown`), to be called after the other atexit handlers (orbax's may still need the job).
    Without JAX imported, or a JAX without that handler, nothing changes."""
    clean_up = getattr(sys.modules.get("jax._src.api"), "clean_up", None)
    if clean_up is None:
        return lambda: None
    atexit.unregister(clean_up)

    def leave() -> None:
        import jax

        jax.effects_barrier()
        jax.distributed.shutdown()

    return leave
