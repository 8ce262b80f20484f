"""What `fit` saves so that a run can resume exactly, and preemption handling.

A checkpoint holds the train state (step, params, optimizer state), the dropout
key, the epoch's running metric sums and early stopping's best weights (as
arrays, through `dlchapter.checkpoint.store`), plus JSON meta: the epoch and the next
row of its batch plan, the history so far, early stopping's counters and the
run's resolved config (its identity, `dlchapter.checkpoint.run_identity`).
Because the batch order is a function of (seed, epoch) and the dropout key of
the step, resuming replays exactly the batches and randomness still to come.

On restore the meta is checked against `validate_meta`'s schema (a step that
fails is set aside like a damaged one) and the stored config against the
current one: a run with another config is refused (`RunMismatch`) before any
array is read; a larger `epochs` continues training.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from dlchapter.checkpoint import set_aside
from dlchapter.checkpoint.checkpoint_errors import (  # orbax loads when a run checkpoints
    CheckpointError,
    CheckpointMismatch,
    NoUsableCheckpoint,
    TrainingInterrupted,  # noqa: F401  (re-exported: defined with the errors, caught without importing JAX)
)
from dlchapter.checkpoint.model_io import from_stored, stored_state
from dlchapter.checkpoint.run_identity import check_same_run, refusal_advice
from dlchapter.engine.callbacks import EarlyStoppingTracker


def resume_hint(config: Any) -> str:
    """What to run after an interrupted checkpointing run with `config` (a `CheckpointConfig` or
    `SweepCheckpoint`): the same command (or, in Python, the same fit call; a run without a run config) resumes,
    unless it has --restart / restart=True (which would start over again)."""
    restart = config.restart
    if config.run_config is None:
        if restart:
            return "Call fit again with CheckpointConfig(restart=False) to resume from it (restart=True starts over)."
        return "Call fit again with the same arguments to resume from it (CheckpointConfig(restart=True) starts over)."
    if restart:
        return "Run the same command without --restart to resume from it (with --restart it starts over again)."
    return "Run the same command again to resume from it (or pass --restart to start over)."


@dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often `fit` checkpoints.

    A checkpoint is written every `every_epochs` epochs (and when training
    ends), and also every `every_steps` steps inside an epoch (0: never). The last `keep_last` are
    kept, plus the best by the early-stopping metric. `restart=True` starts over: what the directory holds is
    set aside (`dlchapter.checkpoint.set_aside`) and deleted by the new run's first save, or put back when the
    new run fails before it; otherwise a run resumes from it.
    `run_config` is the run's resolved config as a JSON dict
    (`dlchapter.configs.config.config_dict`): it is stored with every checkpoint, and a
    later run resumes only when its own matches (`dlchapter.checkpoint.run_identity`).
    Without it, `fit` stores and compares its FitConfig and the data's shapes.
    """

    directory: Path
    every_steps: int = 0
    every_epochs: int = 1
    keep_last: int = 3
    restart: bool = False
    run_config: Mapping[str, Any] | None = None


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
    step: int


class RunCheckpointer:
    """Saves and restores one `fit` run's progress through a `CheckpointStore`.

    Used as a context manager around training: a run that raises before its first save puts the checkpoints
    that `restart` set aside back in place (`dlchapter.checkpoint.set_aside`).
    """

    def __init__(
        self,
        config: CheckpointConfig,
        stopper: EarlyStoppingTracker | None,
        default_identity: Mapping[str, Any] | None = None,
    ):
        directory = Path(config.directory)
        self.replacement = set_aside.Replacement(directory, config.restart)
        """`--restart`'s set-aside earlier checkpoints, until this run's first save (`checkpoint.set_aside`)."""
        self.config = config
        self.stopper = stopper
        self.identity = dict(config.run_config if config.run_config is not None else default_identity or {})
        self.advice = refusal_advice(config.run_config)
        """What a refusal tells the user to do: the command line's flags for a CLI run, CheckpointConfig's otherwise."""
        monitor = stopper.rule.monitor if stopper else None
        mode = "max" if stopper and stopper.rule.maximize else "min"
        from dlchapter.checkpoint.store import CheckpointStore  # orbax: imported by runs that checkpoint

        self.store = CheckpointStore(directory, keep_last=config.keep_last, best_metric=monitor, best_mode=mode)

    def due(self, steps_before: int, steps_after: int) -> bool:
        """Whether a mid-epoch checkpoint falls between these two step counts."""
        every = self.config.every_steps
        return every > 0 and steps_after // every > steps_before // every

    def due_at_epoch_end(self, epochs_done: int) -> bool:
        """Whether the epoch-end checkpoint after `epochs_done` epochs is due."""
        return epochs_done % max(self.config.every_epochs, 1) == 0

    def save(
        self,
        step: int,
        state: Any,
        sums: Any,
        key: jax.Array,
        position: Position,
        history: Any,
        *,
        logs: dict | None = None,
        finished: bool = False,
    ) -> None:
        """Write a checkpoint for global step `step` (synchronously: it is complete on return)."""
        tree = {"state": stored_state(state), "sums": sums, "key": key, "best_params": self._best_params(state)}
        meta = {
            "epoch": position.epoch,
            "row": position.row,
            "history": {k: list(v) for k, v in history.values.items()},
            "stopped_early": history.stopped_early,
            "early_stopping": self.stopper.state_dict() if self.stopper else None,
            "finished": finished,
            "run_config": self.identity,
        }
        metrics = {self.stopper.rule.monitor: logs[self.stopper.rule.monitor]} if self.stopper and logs else None
        self.store.save(step, tree, meta, metrics=metrics)
        self.store.wait()
        self.replacement.saved()

    def _best_params(self, state: Any) -> Any:
        if self.stopper is None or self.stopper.best_params is None:
            return trained_weights(state)  # a placeholder of the right structure; meta says there is no best yet
        return self.stopper.best_params

    def restore(self, state: Any, sums: Any, key: jax.Array) -> Restored | None:
        """The newest good checkpoint restored into the structure of (state, sums, key), or None."""
        if self.store.latest_step() is None:
            return None
        template = {"state": stored_state(state), "sums": sums, "key": key, "best_params": trained_weights(state)}
        try:
            tree, meta, step = self.store.restore(template, validate_meta=validate_meta, accept=self._accept)
        except NoUsableCheckpoint as err:
            self.store.close()
            raise NoUsableCheckpoint(f"{err}; {self.advice}") from None
        except CheckpointMismatch as err:
            self.store.close()
            why = "they were written for another model or optimizer, or by an older dlchapter"
            raise CheckpointMismatch(f"{err}: {why}; {self.advice}") from None
        except CheckpointError:
            self.store.close()
            raise
        if self.stopper is not None and meta["early_stopping"] is not None:
            self.stopper.load_state_dict(meta["early_stopping"], tree["best_params"])
        return Restored(
            from_stored(state, tree["state"]),
            tree["sums"],
            tree["key"],
            Position(meta["epoch"], meta["row"]),
            meta["history"],
            meta["stopped_early"],
            meta["finished"],
            step,
        )

    def _accept(self, meta: dict[str, Any], step: int) -> None:
        check_same_run(meta.get("run_config"), self.identity, f"{self.store.directory} (step {step})", self.advice)

    @property
    def directory(self) -> Path:
        return Path(self.config.directory)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> RunCheckpointer:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        """After a failure before the first save: the set-aside earlier checkpoints back in place."""
        if error_type is not None:
            self.abandon()

    def abandon(self) -> None:
        """The run failed: close the store and, before the run's first save, put the set-aside
        earlier checkpoints (`--restart`) back in place."""
        self.store.close_after_failure()
        self.replacement.failed()


def trained_weights(state: Any) -> Any:
    """What early stopping keeps of the best epoch: `state.params`, or (params, model_state) when the
    model has mutable collections such as BatchNorm's batch_stats."""
    model_state = getattr(state, "model_state", None)
    return (state.params, model_state) if model_state else state.params


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def validate_meta(meta: Mapping[str, Any]) -> None:
    """The schema of `RunCheckpointer`'s meta; raises ValueError, TypeError or KeyError naming the bad entry.

    epoch and row: counts; history: name -> one number (or null) per finished
    epoch; stopped_early and finished: booleans; early_stopping: null or
    {best: number, best_epoch: null or 1..epoch, wait: count}; run_config: an object.
    """
    for name in ("epoch", "row"):
        if not _is_count(meta[name]):
            raise ValueError(f"{name} must be a count, got {meta[name]!r}")
    epoch, history = meta["epoch"], meta["history"]
    if not isinstance(history, dict):
        raise TypeError(f"history must be an object, got {type(history).__name__}")
    for name, values in history.items():
        if not isinstance(values, list) or len(values) != epoch or not all(map(_is_number, values)):
            raise ValueError(f"history[{name!r}] must hold {epoch} numbers (one per finished epoch)")
    if epoch and "loss" not in history:
        raise ValueError("history has no 'loss'")
    for name in ("stopped_early", "finished"):
        if not isinstance(meta[name], bool):
            raise TypeError(f"{name} must be true or false, got {meta[name]!r}")
    stopping = meta["early_stopping"]
    if stopping is not None:
        best_epoch = stopping["best_epoch"] if isinstance(stopping, dict) else "?"
        if not (
            isinstance(stopping, dict)
            and _is_number(stopping["best"])
            and _is_count(stopping["wait"])
            and (best_epoch is None or (_is_count(best_epoch) and 1 <= best_epoch <= epoch))
        ):
            raise ValueError(f"early_stopping is not {{best, best_epoch <= epoch, wait}}: {stopping!r}")
        if stopping["best"] is not None and math.isnan(stopping["best"]) and best_epoch is not None:
            raise ValueError("early_stopping.best is NaN for a recorded best epoch")
    if "run_config" in meta and not isinstance(meta["run_config"], (dict, type(None))):
        raise TypeError(f"run_config must be an object, got {type(meta['run_config']).__name__}")


class PreemptionGuard:
    """While active, SIGTERM and SIGINT set `requested` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere the guard
    is inert and signals keep their usual effect. A signal the training loop did not act
    on (`acknowledge`: it saved and stopped), because it came too late (during the last
    epoch: training finished and saved), is delivered again when the guard ends without
    an error, so it still stops the run (Ctrl-C: one line and exit 130) instead of being dropped.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        self.acknowledged = False
        self._previous: dict[int, Any] = {}

    def acknowledge(self) -> None:
        """The loop acted on `requested` (saved and stopped): it is not delivered again at the end."""
        self.acknowledged = True

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        guarded = bool(self._previous)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if guarded and self.requested is not None and not self.acknowledged and exc_type is None:
            signal.raise_signal(signal.Signals[self.requested])  # to the handler it would have reached
