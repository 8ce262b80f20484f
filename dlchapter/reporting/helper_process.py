"""A run's host-side work (parsing its CSV, drawing its figures) in one helper process beside the JAX process.

On a command-line run the training process spends about a second importing JAX and tracing its programs on one
core; a second core can meanwhile import pandas, parse and check the data set, import matplotlib and later draw the
PNGs. `dlchapter.cli.run_experiment` runs each experiment inside `helper_process()`: one fresh Python process
(`python -m dlchapter.reporting.helper_worker`, so it shares no JAX state), fed pickled jobs through a pipe.
Inside that context

- `import_in_helper(modules)` starts the helper at once and imports `modules` there: `run_experiment` sends a
  data set's loader and pandas before it parses the command line, so the data set is parsed by the time the
  training process has imported JAX; a run that ends before anything else was sent (a bad flag, `--help`)
  kills the helper instead of waiting for those imports;
- `prefetch(fn, *args, **kwargs)` starts `fn(*args, **kwargs)` in the helper, and `fetch(fn, *args, **kwargs)` with
  the same arguments returns its result (re-raising its exception, e.g. a `DataError`, in the caller);
- a function decorated with `@drawn_in_helper` (the figures of `dlchapter.reporting.plots`) is queued there and
  returns its `path` argument at once; the helper draws each figure in a child it forks (on Linux), so a run's
  figures are drawn side by side; `wait_for_figures()` (called by `report.write_run` before the summary and
  the TensorBoard events name or read the files, and on leaving the context) waits for them and re-raises the
  first failure.

Outside the context (library use, notebooks) or with DLCHAPTER_HELPER_PROCESS=0, everything runs in the calling
process, unchanged. The helper's results are the same objects the calling process would compute (the data set's
arrays and the PNG bytes are equal; `tests/data/test_helper_process.py`). The helper ignores SIGINT (Ctrl-C
reaches the training process, which saves and stops; leaving the context then stops the helper) and ends when
its parent ends, killed or not, after finishing a figure it has begun (no half-written file); if it dies first
(killed, out of memory), a warning says so and the work it had not finished is done in the calling process.
Measured gain: `benchmarks/cold_start.py` (benchmarks/NOTES.md, "third session" and "fourth session").
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
ENV_SWITCH = "DLCHAPTER_HELPER_PROCESS"  # 0/false/no/off: no helper process, everything in the calling process
CLOSE_TIMEOUT_S = 60  # the longest the end of a run waits for the helper (a figure it is still drawing)
F = TypeVar("F", bound=Callable[..., Any])


class HelperDied(RuntimeError):
    """The helper process ended before answering (killed, out of memory): its work is redone in the caller."""


class RemoteTraceback(Exception):
    """The traceback of an error raised in the helper (the `__cause__` of that error, re-raised here)."""

    def __str__(self) -> str:
        return "\n" + "".join(self.args)


class _Helper:
    """The helper process and the jobs sent to it.

    Jobs go down its stdin; a daemon thread reads the answers from its stdout into `Future`s. It runs in a
    session of its own (a terminal's Ctrl-C reaches only the training process) and ends when its stdin ends.
    """

    def __init__(self, warm_up: tuple[str, ...]) -> None:
        self.warm_up = warm_up  # imported in the helper after its first job
        self.process: subprocess.Popen | None = None
        self.pending: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.next_id = 0
        self.prefetched: dict[tuple, Future] = {}
        self.figures: list[tuple[Future, Callable[..., Any], tuple, dict]] = []
        self.alive = True  # False once the helper died: the rest runs in the calling process
        self.only_imports = True  # nothing but `import_in_helper` sent yet: stopping it now loses no work

    def submit(
        self, fn: Callable[..., Any], *args: Any, optional: bool = False, forked: bool = False, **kwargs: Any
    ) -> Future:
        """Send `fn(*args, **kwargs)` (the helper starts on the first call); raises HelperDied when it has died.
        An `optional` job is skipped when the run ends before the helper starts it; a `forked` one runs in a child
        of the helper, beside the jobs after it (`helper_worker`)."""
        self.start()
        future = self._send(fn, args, kwargs, optional, forked)
        if self.only_imports:  # the first real job: the figures' modules are imported after it
            self.only_imports = False
            self.import_modules(self.warm_up)
        return future

    def start(self) -> None:
        """Start the helper process, unless it runs already."""
        if self.process is not None:
            return
        paths = [os.path.abspath(p or os.curdir) for p in sys.path if isinstance(p, str)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlchapter.reporting.helper_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},  # finds what this process imports
            start_new_session=True,
        )
        threading.Thread(target=self._read_answers, daemon=True, name="helper-answers").start()

    def import_modules(self, modules: Sequence[str]) -> None:
        """Queue an import of each of `modules` (optional jobs: skipped when the run ends first)."""
        for module in modules:
            self._send(importlib.import_module, (module,), {}, True, False)

    def _send(self, fn: Callable[..., Any], args: tuple, kwargs: dict, optional: bool, forked: bool) -> Future:
        future: Future = Future()
        payload = pickle.dumps((fn, args, kwargs))  # here: an argument that cannot be pickled is the caller's error
        with self.lock:
            job_id, self.next_id = self.next_id, self.next_id + 1
            self.pending[job_id] = future
        try:
            pickle.dump((job_id, optional, forked, payload), self.process.stdin)  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        except OSError as error:
            with self.lock:
                self.pending.pop(job_id, None)
            raise HelperDied(f"the helper process ended ({error})") from error
        return future

    def _read_answers(self) -> None:
        """Resolve each job's future from the helper's answers; when they end, fail every job still pending."""
        try:
            while True:
                job_id, ok, value = pickle.load(self.process.stdout)  # type: ignore[union-attr]
                with self.lock:
                    future = self.pending.pop(job_id)
                if ok:
                    future.set_result(value)
                else:
                    error, text = value
                    error.__cause__ = RemoteTraceback(text)
                    future.set_exception(error)
        except (EOFError, OSError, pickle.UnpicklingError) as error:
            with self.lock:
                pending, self.pending = list(self.pending.values()), {}
            for future in pending:
                future.set_exception(HelperDied(f"the helper process ended ({type(error).__name__})"))

    def close(self) -> None:
        """Close the helper's stdin (it skips the optional jobs still queued and exits), then wait for it."""
        if self.process is None:
            return
        if self.only_imports:  # ended before its first job (a bad flag, --help): nothing to wait for
            self.stop()
            return
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("the helper process did not end within %d s; stopping it", CLOSE_TIMEOUT_S)
            self.stop()

    def stop(self) -> None:
        """Kill the helper and the children it forked (its own process group), and wait for it."""
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        self.process.kill()  # type: ignore[union-attr]
        self.process.wait()  # type: ignore[union-attr]
        for stream in (self.process.stdin, self.process.stdout):  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]


_HELPER: _Helper | None = None


@contextlib.contextmanager
def helper_process(
    warm_up: tuple[str, ...] = ("dlchapter.reporting.plots", "matplotlib.figure", "matplotlib.backends.backend_agg"),
) -> Iterator[None]:
    """Run prefetches and figures of the enclosed code in one helper process (see the module docstring).

    The helper starts with the first submission; `warm_up` modules are imported there after it. Leaving the
    context waits for the figures (re-raising a failure), drops unused prefetches and ends the helper.
    Nested use, DLCHAPTER_HELPER_PROCESS=0, or a process allowed on one CPU only leaves the enclosed code in the
    calling process.
    """
    global _HELPER
    if _HELPER is not None or switched_off(ENV_SWITCH) or _usable_cpus() < 2:
        yield
        return
    _HELPER = helper = _Helper(warm_up)
    try:
        yield
        wait_for_figures()
    finally:
        _HELPER = None
        helper.close()


def switched_off(variable: str) -> bool:
    """True when the environment variable `variable` is 0, false, no or off (any case); unset means on."""
    return os.environ.get(variable, "1").strip().lower() in ("0", "false", "no", "off")


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one): with one, a helper only adds work."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _key(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple:
    return (fn.__module__, fn.__qualname__, repr(args), repr(sorted(kwargs.items())))


def import_in_helper(modules: Sequence[str]) -> None:
    """Start the helper now and import `modules` there (e.g. pandas, before the command line is even parsed), so
    that a `prefetch` sent later finds them loaded; no-op outside `helper_process()`. If nothing else is sent
    before the context ends (a bad flag, `--help`), the helper is stopped at once instead of awaited."""
    if modules and _HELPER is not None and _HELPER.alive:
        try:
            _HELPER.start()
            _HELPER.import_modules(modules)
        except (HelperDied, OSError) as error:
            _without_helper(error)


def prefetch(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Start `fn(*args, **kwargs)` in the helper (a module-level function; picklable arguments); no-op outside."""
    if _HELPER is not None and _HELPER.alive and _key(fn, args, kwargs) not in _HELPER.prefetched:
        try:
            _HELPER.prefetched[_key(fn, args, kwargs)] = _HELPER.submit(fn, *args, optional=True, **kwargs)
        except HelperDied as error:  # `fetch` will compute it here
            _without_helper(error)


def fetch(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The result of a matching `prefetch` (its exception re-raised here), else `fn(*args, **kwargs)` here.

    If the helper died (killed, out of memory), a warning says so and `fn` runs here instead.
    """
    future = None if _HELPER is None else _HELPER.prefetched.pop(_key(fn, args, kwargs), None)
    if future is not None:
        try:
            return future.result()
        except HelperDied as error:
            _without_helper(error)
    return fn(*args, **kwargs)


def _without_helper(error: BaseException) -> None:
    """The helper died: warn once; what comes next runs in the calling process (`wait_for_figures` redraws)."""
    if _HELPER is not None and _HELPER.alive:
        logger.warning("a helper process stopped (%s); this process does the rest of its work", error)
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
        from dlchapter.reporting import safe_write

        safe_write.record_written(path)  # written by the helper: this process's run still produced it
        args, kwargs = _host_arrays(args), _host_arrays(kwargs)
        try:
            _HELPER.figures.append((_HELPER.submit(draw, *args, forked=True, **kwargs), fn, args, kwargs))
        except HelperDied as error:
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
    import numpy as np

    if hasattr(tree, "__array__") and not isinstance(tree, np.ndarray | np.generic):
        return np.asarray(tree)
    return tree


def wait_for_figures() -> None:
    """Wait for every queued figure and re-raise the first failure; if the helper died, draw the rest here."""
    if _HELPER is None:
        return
    figures, _HELPER.figures = _HELPER.figures, []
    errors = [future.exception() for future, *_ in figures]
    died = next((error for error in errors if isinstance(error, HelperDied)), None)
    if died is not None:
        _without_helper(died)
    for error, (_, fn, args, kwargs) in zip(errors, figures, strict=True):
        if isinstance(error, HelperDied):
            from dlchapter.reporting import safe_write

            safe_write.remove_stale_temporaries(fn(*args, **kwargs))  # the dead process's half-written file
        elif error is not None:
            raise error
