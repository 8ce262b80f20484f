"""A run's host-side work (parsing its CSV, drawing its figures) in one helper process beside the JAX process.

On a command-line run the training process spends about a second importing JAX and tracing its programs on one
core; a second core can meanwhile import pandas, parse and check the data set, import matplotlib and later draw the
PNGs. `dlchapter.cli.run_experiment` runs each experiment inside `helper_process()`: one worker started by
`concurrent.futures.ProcessPoolExecutor` (spawn, so it shares no JAX state). Inside that context

- `prefetch(fn, *args, **kwargs)` starts `fn(*args, **kwargs)` in the helper, and `fetch(fn, *args, **kwargs)` with
  the same arguments returns its result (re-raising its exception, e.g. a `DataError`, in the caller);
- a function decorated with `@drawn_in_helper` (the figures of `dlchapter.reporting.plots`) is queued there and
  returns its `path` argument at once; `wait_for_figures()` (called by `report.write_run` before the summary and
  the TensorBoard events name or read the files, and on leaving the context) waits for them and re-raises the
  first failure.

Outside the context (library use, notebooks) or with DLCHAPTER_HELPER_PROCESS=0, everything runs in the calling
process, unchanged. The helper's results are the same objects the calling process would compute (the data set's
arrays and the PNG bytes are equal; `tests/data/test_helper_process.py`). The helper ignores SIGINT (Ctrl-C
reaches the training process, which saves and stops; leaving the context then stops the helper) and exits when
its parent dies; if it dies first (killed, out of memory), a warning says so and the work it had not finished is
done in the calling process. Measured gain: `benchmarks/cold_start.py` (benchmarks/NOTES.md, "third session").
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger(__name__)
ENV_SWITCH = "DLCHAPTER_HELPER_PROCESS"  # "0": no helper process, everything in the calling process
F = TypeVar("F", bound=Callable[..., Any])


class _Helper:
    """The worker and what was submitted to it."""

    def __init__(self, warm_up: tuple[str, ...]) -> None:
        self.pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
        )
        self.warm_up = warm_up  # imported in the worker after its first job
        self.prefetched: dict[tuple, Future] = {}
        self.figures: list[tuple[Future, Callable[..., Any], tuple, dict]] = []
        self.warm_ups: list[Future] = []
        self.alive = True  # False once the worker died: the rest runs in the calling process

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Queue `fn` in the worker; raises BrokenProcessPool when it has died."""
        first = not self.prefetched and not self.figures
        future = self.pool.submit(fn, *args, **kwargs)
        if first:
            self.warm_ups = [self.pool.submit(_warm_up, module) for module in self.warm_up]
        return future

    def close(self) -> None:
        """Cancel what has not started, then end the worker by its last job (no interpreter teardown there)."""
        for future in (*self.prefetched.values(), *self.warm_ups):
            future.cancel()
        if self.prefetched or self.figures or self.warm_ups:  # the worker was started
            with contextlib.suppress(BrokenProcessPool, RuntimeError):  # already dead, or already shut down
                self.pool.submit(_end_worker)
        self.pool.shutdown(wait=True)


_HELPER: _Helper | None = None


def _start_worker() -> None:
    """The worker's initializer: ignore Ctrl-C (the training process handles it) and end with the parent.

    A worker holds both ends of its own job queue, so it would wait for jobs forever (and keep the run's stdout
    and stderr open) after the training process was killed; a daemon thread watches the parent's sentinel.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with-parent").start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(1)


def _warm_up(module: str) -> None:
    """Import `module` in the helper while it has nothing else to do (matplotlib before the first figure)."""
    __import__(module)


@contextlib.contextmanager
def helper_process(
    warm_up: tuple[str, ...] = ("dlchapter.reporting.plots", "matplotlib.figure", "matplotlib.backends.backend_agg"),
) -> Iterator[None]:
    """Run prefetches and figures of the enclosed code in one helper process (see the module docstring).

    The helper starts with the first submission; `warm_up` modules are imported there after it. Leaving the
    context waits for the figures (re-raising a failure), cancels unused prefetches and stops the helper.
    Nested use, DLCHAPTER_HELPER_PROCESS=0, or a process allowed on one CPU only leaves the enclosed code in the
    calling process.
    """
    global _HELPER
    if _HELPER is not None or os.environ.get(ENV_SWITCH, "1") == "0" or _usable_cpus() < 2:
        yield
        return
    _HELPER = helper = _Helper(warm_up)
    try:
        yield
        wait_for_figures()
    finally:
        _HELPER = None
        helper.close()


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one): with one, a helper only adds work."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _end_worker() -> None:
    """The helper's last job: exit at once (its interpreter's teardown, freeing matplotlib and pandas object by
    object, would hold up the run's end by 0.2-0.5 s)."""
    os._exit(0)


def _key(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple:
    return (fn.__module__, fn.__qualname__, repr(args), repr(sorted(kwargs.items())))


def prefetch(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Start `fn(*args, **kwargs)` in the helper (a module-level function; picklable arguments); no-op outside."""
    if _HELPER is not None and _HELPER.alive and _key(fn, args, kwargs) not in _HELPER.prefetched:
        try:
            _HELPER.prefetched[_key(fn, args, kwargs)] = _HELPER.submit(fn, *args, **kwargs)
        except BrokenProcessPool as error:  # `fetch` will compute it here
            _without_helper(error)


def fetch(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The result of a matching `prefetch` (its exception re-raised here), else `fn(*args, **kwargs)` here.

    If the helper died (killed, out of memory), a warning says so and `fn` runs here instead.
    """
    future = None if _HELPER is None else _HELPER.prefetched.pop(_key(fn, args, kwargs), None)
    if future is not None:
        try:
            return future.result()
        except BrokenProcessPool as error:
            _without_helper(error)
    return fn(*args, **kwargs)


def _without_helper(error: BaseException) -> None:
    """The helper died: warn once; what comes next runs in the calling process (`wait_for_figures` redraws)."""
    if _HELPER is not None and _HELPER.alive:
        logger.warning("the helper process stopped (%s); continuing without it", error)
        _HELPER.alive = False


def drawn_in_helper(fn: F) -> F:
    """Decorate a figure function whose `path` argument is the file it writes and returns (as a Path).

    Inside `helper_process()` the call is queued in the helper and `Path(path)` is returned at once; the file
    exists after `wait_for_figures()`. Elsewhere (and in the helper itself) the function runs as written.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def draw(*args: Any, **kwargs: Any) -> Path:
        if _HELPER is None or not _HELPER.alive:
            return fn(*args, **kwargs)
        path = Path(signature.bind(*args, **kwargs).arguments["path"])
        args, kwargs = _host_arrays(args), _host_arrays(kwargs)
        try:
            _HELPER.figures.append((_HELPER.submit(draw, *args, **kwargs), fn, args, kwargs))
        except BrokenProcessPool as error:
            _without_helper(error)
            return fn(*args, **kwargs)
        return path

    return draw  # type: ignore[return-value]


def _host_arrays(tree: Any) -> Any:
    """`tree` with device arrays (anything with `__array__` but not numpy's) as numpy arrays, so the helper
    unpickles them without importing JAX."""
    if isinstance(tree, dict):
        return {key: _host_arrays(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_host_arrays(value) for value in tree)
    if hasattr(tree, "__array__") and not isinstance(tree, np.ndarray | np.generic):
        return np.asarray(tree)
    return tree


def wait_for_figures() -> None:
    """Wait for every queued figure and re-raise the first failure; if the helper died, draw the rest here."""
    if _HELPER is None:
        return
    figures, _HELPER.figures = _HELPER.figures, []
    errors = [future.exception() for future, *_ in figures]
    broken = next((error for error in errors if isinstance(error, BrokenProcessPool)), None)
    if broken is not None:
        _without_helper(broken)
    for error, (_, fn, args, kwargs) in zip(errors, figures, strict=True):
        if isinstance(error, BrokenProcessPool):
            fn(*args, **kwargs)
        elif error is not None:
            raise error
