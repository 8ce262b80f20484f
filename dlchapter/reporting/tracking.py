"""How a training run reports while it trains: epoch log lines, TensorBoard scalars, compile time.

`Trainer.fit` opens one `FitLog` per call (`fit_log`) and hands it each
epoch's logs when it has fetched them anyway (no extra device sync). A
`FitLog` always logs one Keras `verbose=2`-shaped line per epoch through the
`dlchapter.epochs` logger at INFO (the library never configures handlers; the
CLI does, see `dlchapter.reporting.verbosity`); inside a run scope
(`track_run(workdir)`, opened by the CLI around each experiment) it also
writes the epoch's scalars to `<workdir>/tb/` as they come.

Why a run scope and not a callback argument: the runs (`dlchapter/runs/*`)
build their own `Trainer`s and call `fit` in a dozen places; a context
variable reaches every one of them without touching them, and code that calls
`fit` outside a scope (tests, notebooks) pays nothing but the log line. The
report writer (`report.write_run`) then adds the end-of-run events and, when
no scope streamed the epochs, writes them from history.csv.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlchapter.checkpoint.checkpoint_errors import TrainingInterrupted
from dlchapter.reporting import events, safe_write

epoch_logger = logging.getLogger("dlchapter.epochs")
logger = logging.getLogger(__name__)


@dataclass
class RunScope:
    """One run directory's tracking state: its writers, how many fits ran, their compile seconds."""

    workdir: Path
    progress: bool | None = None  # the progress bar's default for fits in this scope (None: on a terminal)
    fits: int = 0
    compile_seconds: list[float] = field(default_factory=list)
    compiled_from_cache: list[bool] = field(default_factory=list)  # per compilation: loaded from the persistent cache
    writers: list[Any] = field(default_factory=list)
    superseded: list[Path] = field(default_factory=list)  # an earlier run's event files: deleted by `finish_run`
    created: list[Path] = field(default_factory=list)  # the event files this run opened

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()


_SCOPE: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar("dlchapter_run_scope", default=None)


@contextlib.contextmanager
def track_run(workdir: Path, *, progress: bool | None = None) -> Iterator[RunScope]:
    """Make `workdir` the run directory that every `Trainer.fit` inside the block streams its epochs to.

    The earlier run's event files in `<workdir>/tb/` stay until this run's
    report is written (`finish_run`). When the block raises, the event files
    depend on the exception: `dlchapter.checkpoint.resume.TrainingInterrupted` (a
    checkpoint was saved and a rerun resumes, hiding the epochs after it with
    `purge_step`) keeps this run's files and deletes the earlier run's, so the
    resume continues this run alone; any other exception (but `SystemExit(0)`)
    deletes the files this run created and leaves the earlier run's as they were.
    """
    scope = RunScope(Path(workdir), progress)
    safe_write.take_written(workdir)  # an earlier failed run's files in this process are not this run's report
    token = _SCOPE.set(scope)
    try:
        yield scope
    except BaseException as error:
        scope.close()
        if not (isinstance(error, SystemExit) and not error.code):  # exit 0 is no failure: the files stay
            _remove(scope.superseded if isinstance(error, TrainingInterrupted) else scope.created)
        raise
    finally:
        _SCOPE.reset(token)
        scope.close()


def _remove(files: list[Path]) -> None:
    """Delete `files` (those still there) and the folders under tb/ that they leave empty."""
    for file in files:
        file.unlink(missing_ok=True)
    for folder in sorted({f.parent for f in files}, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: other files stay
            folder.rmdir()


def current_scope() -> RunScope | None:
    """The innermost open run scope, or None."""
    return _SCOPE.get()


def bar_disabled(progress: bool | None) -> bool | None:
    """tqdm's `disable` for `FitConfig.progress`: an explicit choice wins, then the scope's, else None (a terminal)."""
    scope = _SCOPE.get()
    choice = progress if progress is not None else (scope.progress if scope is not None else None)
    return None if choice is None else not choice


def format_epoch(epoch: int, epochs: int, logs: Mapping[str, float]) -> str:
    """Keras's `verbose=2` line: `Epoch 3/10 - 0.41s - loss: 0.5123 - accuracy: 0.8 - val_loss: ... - lr: 0.001`."""
    parts = [f"Epoch {epoch}/{epochs}", f"{logs.get('epoch_seconds', float('nan')):.2f}s"]
    training = [k for k in logs if not k.startswith("val_") and k not in ("lr", "epoch_seconds")]
    validation = [k for k in logs if k.startswith("val_")]
    parts += [f"{k}: {logs[k]:.4g}" for k in training + validation]
    if "lr" in logs:
        parts.append(f"lr: {logs['lr']:.4g}")
    return " - ".join(parts)


class FitLog:
    """What one `Trainer.fit` call reports: compile seconds and per-epoch lines and scalars."""

    def __init__(self, epochs: int, samples_per_epoch: int, first_epoch: int = 1):
        self.epochs = epochs
        self.samples_per_epoch = samples_per_epoch
        self.compile_seconds: float | None = None
        self._scope = _SCOPE.get()
        self._writer = None
        if self._scope is not None:
            self._scope.fits += 1
            if self._scope.fits == 1:  # at its end, a fresh run deletes the earlier run's events; a resumed
                # one (a rerun with nothing to train included) an earlier end's, which it writes anew
                self._scope.superseded = events.event_files(self._scope.workdir, final_only=first_epoch > 1)
            directory = events.events_dir(self._scope.workdir, self._scope.fits)
            before = set(events.event_files(self._scope.workdir))
            self._writer = events.open_writer(directory, purge_step=None if first_epoch == 1 else first_epoch)
            self._scope.writers.append(self._writer)
            self._scope.created += sorted(set(events.event_files(self._scope.workdir)) - before)

    def compile(self, lower: Callable[[], Any], program: str = "train") -> float:
        """Run `lower().compile()` (jax's ahead-of-time path; `jax.jit` then reuses the executable) and time it.

        Returns the seconds (tracing, lowering and XLA compilation); `compile_seconds` sums every program's.
        """
        from dlchapter.engine.compilation_cache import cache_hits

        hits = cache_hits()
        started = time.perf_counter()
        lower().compile()
        seconds = time.perf_counter() - started
        from_cache = cache_hits() > hits
        self.compile_seconds = (self.compile_seconds or 0.0) + seconds
        if self._scope is not None:
            self._scope.compile_seconds.append(seconds)
            self._scope.compiled_from_cache.append(from_cache)
        if from_cache:
            epoch_logger.info("loaded the %s program from the compilation cache in %.2fs", program, seconds)
        else:
            epoch_logger.info("compiled the %s program in %.2fs", program, seconds)
        return seconds

    def epoch_end(self, epoch: int, logs: Mapping[str, float], samples: int | None = None) -> None:
        """Log epoch `epoch`'s line (1-based) and, in a run scope, write its scalars."""
        epoch_logger.info(format_epoch(epoch, self.epochs, logs))
        if self._writer is None:
            return
        seconds = logs.get("epoch_seconds")
        extra = {}
        if seconds and math.isfinite(seconds) and seconds > 0:
            extra["samples_per_second"] = (self.samples_per_epoch if samples is None else samples) / seconds
        if self.compile_seconds is not None and epoch == 1:
            extra["compile_seconds"] = self.compile_seconds
        events.write_epoch(self._writer, epoch, logs, extra)
        self._writer.flush()


def fit_log(epochs: int, samples_per_epoch: int, first_epoch: int = 1) -> FitLog:
    """The reporter for one `Trainer.fit` call (joins the current run scope, if any).

    `first_epoch` (1-based) is the epoch training starts or resumes at: a fresh
    run deletes the earlier run's event files when it finishes (`finish_run`; see `track_run` for a failing run), a
    resumed one hides the events of the epochs from this one on (TensorBoard's `purge_step`).
    """
    return FitLog(epochs, samples_per_epoch, first_epoch)


def finish_run(
    workdir: Path, config: Mapping[str, Any], metrics: Mapping[str, Any], sections, figures
) -> dict[str, Any]:
    """Called by `report.write_run`: write the end-of-run events; return metrics with `compile_seconds` added.

    `compile_seconds` (seconds, float) is the ahead-of-time compile time this
    invocation spent, summed over the run's fits; 0.0 when its fits compiled
    nothing (a rerun of a finished checkpointed run: nothing left to train). It
    is added only when the run did not record its own, with `compile_from_cache` (bool) when it compiled
    anything: true when every program came from the persistent compilation cache (the seconds are a load).
    The earlier run's event files (see `track_run`) are deleted here, before this run's final events are written.
    """
    scope = _SCOPE.get()
    streamed = scope is not None and scope.fits > 0 and Path(scope.workdir).resolve() == Path(workdir).resolve()
    metrics = dict(metrics)
    if streamed and "compile_seconds" not in metrics:
        metrics["compile_seconds"] = float(sum(scope.compile_seconds))
        if scope.compiled_from_cache:  # every program loaded from the persistent cache: no compilation measured
            metrics["compile_from_cache"] = all(scope.compiled_from_cache)
    if streamed:
        _remove(scope.superseded)
        scope.superseded = []
    events.write_final(workdir, config, metrics, sections, figures, epochs_from_csv=not streamed)
    if scope is not None:
        scope.created.clear()  # the run is finished: an error after its report deletes nothing
    return metrics
