"""What `fit` saves so that a run can resume exactly, and preemption handling.

A checkpoint holds the train state (step, params, optimizer state), the dropout
key, the epoch's running metric sums and early stopping's best weights (as
arrays, through `dlchapter.checkpoint`), plus JSON meta: the epoch and the next
row of its batch plan, the history so far and early stopping's counters.
Because the batch order is a function of (seed, epoch) and the dropout key of
the step, resuming replays exactly the batches and randomness still to come.
"""

from __future__ import annotations

import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from dlchapter.callbacks import EarlyStoppingTracker
from dlchapter.checkpoint import CheckpointStore


class TrainingInterrupted(RuntimeError):
    """A SIGTERM or SIGINT arrived; a checkpoint was saved at the next step boundary."""


@dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often `fit` checkpoints.

    A checkpoint is written every `every_epochs` epochs (and when training
    ends), and also every `every_steps` steps inside an epoch (0: never). The last `keep_last` are
    kept, plus the best by the early-stopping metric. `restart=True` deletes
    what the directory holds and starts over; otherwise a run resumes from it.
    """

    directory: Path
    every_steps: int = 0
    every_epochs: int = 1
    keep_last: int = 3
    restart: bool = False


@dataclass(frozen=True)
class Position:
    """Where the loop stands: the 0-based epoch and the next row of its batch plan."""

    epoch: int
    row: int


@dataclass
class Restored:
    """What a checkpoint gives back to the loop."""

    state: Any
    sums: Any
    key: jax.Array
    position: Position
    history_values: dict[str, list[float]]
    stopped_early: bool
    finished: bool


class RunCheckpointer:
    """Saves and restores one `fit` run's progress through a `CheckpointStore`."""

    def __init__(self, config: CheckpointConfig, stopper: EarlyStoppingTracker | None):
        directory = Path(config.directory)
        if config.restart and directory.exists():
            shutil.rmtree(directory)
        self.config = config
        self.stopper = stopper
        monitor = stopper.rule.monitor if stopper else None
        mode = "max" if stopper and stopper.rule.maximize else "min"
        self.store = CheckpointStore(directory, keep_last=config.keep_last, best_metric=monitor, best_mode=mode)

    def due(self, steps_before: int, steps_after: int) -> bool:
        """Whether a mid-epoch checkpoint falls between these two step counts."""
        every = self.config.every_steps
        return every > 0 and steps_after // every > steps_before // every

    def due_at_epoch_end(self, epochs_done: int) -> bool:
        """Whether the epoch-end checkpoint after `epochs_done` epochs is due."""
        return epochs_done % max(self.config.every_epochs, 1) == 0

    def save(self, step: int, state: Any, sums: Any, key: jax.Array, position: Position, history: Any, *, logs: dict | None = None, finished: bool = False) -> None:
        """Write a checkpoint for global step `step` (synchronously: it is complete on return)."""
        tree = {"state": state, "sums": sums, "key": key, "best_params": self._best_params(state)}
        meta = {
            "epoch": position.epoch,
            "row": position.row,
            "history": {k: list(v) for k, v in history.values.items()},
            "stopped_early": history.stopped_early,
            "early_stopping": self.stopper.state_dict() if self.stopper else None,
            "finished": finished,
        }
        metrics = {self.stopper.rule.monitor: logs[self.stopper.rule.monitor]} if self.stopper and logs else None
        self.store.save(step, tree, meta, metrics=metrics)
        self.store.wait()

    def _best_params(self, state: Any) -> Any:
        if self.stopper is None or self.stopper.best_params is None:
            return state.params  # a placeholder of the right structure; meta says there is no best yet
        return self.stopper.best_params

    def restore(self, state: Any, sums: Any, key: jax.Array) -> Restored | None:
        """The newest good checkpoint restored into the structure of (state, sums, key), or None."""
        if self.store.latest_step() is None:
            return None
        template = {"state": state, "sums": sums, "key": key, "best_params": state.params}
        tree, meta, _ = self.store.restore(template)
        if self.stopper is not None and meta["early_stopping"] is not None:
            self.stopper.load_state_dict(meta["early_stopping"], tree["best_params"])
        return Restored(
            tree["state"], tree["sums"], tree["key"], Position(meta["epoch"], meta["row"]),
            meta["history"], meta["stopped_early"], meta["finished"],
        )

    @property
    def directory(self) -> Path:
        return Path(self.config.directory)

    def close(self) -> None:
        self.store.close()


class PreemptionGuard:
    """While active, SIGTERM and SIGINT set `requested` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere the guard
    is inert and signals keep their usual effect.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
