"""The hooks of `Trainer.fit`: Keras-like callbacks, and the checkpointing, preemption and early stopping
built from them.

The contract (`Trainer.fit(..., callbacks=[...])`). A hook subclasses `Callback` and overrides any of:

- `on_train_begin(run)`: before the first epoch, after `fit` has placed the data and planned the batches;
  a hook may restore progress here by setting `run.state`, `run.key`, `run.position`, `run.history` and
  `run.sums` (the resumed epoch's running sums, read only when `run.position.row` > 0; `CheckpointHook` does);
- `on_train_batch_end(run, steps_before, steps_done)`: at each step boundary, after every compiled chunk of
  steps (the whole epoch when `steps_per_call` is None); the counts are global (epochs x steps per epoch);
  `run.epoch` (0-based), `run.next_row` and `run.mid_epoch` say where the loop stands and
  `run.check_finite()` raises `TrainingDiverged` before anything is saved of a broken state;
- `on_epoch_end(run, epoch, logs)`: after each epoch (1-based), when `logs` holds loss, metrics, val_* ,
  lr and epoch_seconds and `run.history` has them; setting `run.stop_training = True` ends training after
  this epoch (recorded as `history.stopped_early`);
- `on_train_end(run)`: when training ends normally; a hook may replace `run.state` (early stopping
  restores the best weights);
- `close()`: whatever ends `fit` (an exception included): release what the hook holds (signal handlers,
  open stores).

Hooks run in a fixed order: the user's callbacks (and `on_epoch_end=`), then early stopping, then
checkpointing, so a checkpoint records the stop decision and a user's hook sees every epoch's logs first.
Metrics stay on the device between epochs; `run.state` is the live (donated) state: copy what you keep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

from dlchapter.checkpoint.resume import (
    CheckpointConfig,
    Position,
    PreemptionGuard,
    Restored,
    RunCheckpointer,
    TrainingInterrupted,
    resume_hint,
    trained_weights,
)
from dlchapter.checkpoint.run_identity import DATA_DIGEST_FIELD, data_digest, fit_identity
from dlchapter.engine.callbacks import EarlyStopping

PyTree = Any
logger = logging.getLogger("dlchapter.engine.train")  # the engine's lines keep the engine's logger name


@dataclass(eq=False)
class FitRun:
    """What one `fit` call's hooks read and may change.

    `config` (FitConfig), `steps_per_epoch`, `n_rows` (training rows), `history` (History), `x` and `y` (the
    training data after the validation split); `state`, `key` (the dropout key), `sums` (this epoch's running
    metric sums, on the device; `zero_sums()` makes empty ones), `nonfinite` (-1, or the first step whose loss
    was not finite), `position` (where training starts: 0-based epoch and next row; a resumed epoch starts
    from `sums`), `epoch` and `next_row` (where it stands), `rows_in_plan` (rows of this epoch's batch plan),
    `validation_data` ((x, y) that fit validates on, or None), `identity_probe` (what else binds a Python API
    run's checkpoints: `TrainerPrograms.identity_probe`).
    """

    config: Any
    steps_per_epoch: int
    n_rows: int
    history: Any
    state: PyTree
    key: jax.Array
    x: PyTree
    y: PyTree
    zero_sums: Callable[[], PyTree]
    check_finite_fn: Callable[[], dict[str, float]]
    sums: PyTree = None
    nonfinite: Any = None
    position: Position = field(default_factory=lambda: Position(0, 0))
    epoch: int = 0
    next_row: int = 0
    rows_in_plan: int = 0
    validation_data: tuple[PyTree, PyTree] | None = None
    identity_probe: Callable[[], dict[str, Any]] | None = None

    @property
    def stop_training(self) -> bool:
        """Keras's `model.stop_training`: set it in `on_epoch_end` to end training after this epoch."""
        return self.history.stopped_early

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self.history.stopped_early = bool(value)

    @property
    def mid_epoch(self) -> bool:
        """Whether steps of the current epoch remain after this boundary."""
        return self.next_row < self.rows_in_plan

    def check_finite(self) -> dict[str, float]:
        """The epoch's logs so far; raises TrainingDiverged when any step's loss was NaN or infinite."""
        return self.check_finite_fn()


class Callback:
    """A `fit` hook (Keras's `keras.callbacks.Callback` with the run passed in); every method is a no-op."""

    def on_train_begin(self, run: FitRun) -> None:
        """Before the first epoch."""

    def on_train_batch_end(self, run: FitRun, steps_before: int, steps_done: int) -> None:
        """After each compiled chunk of train steps."""

    def on_epoch_end(self, run: FitRun, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch (1-based), with its logs."""

    def on_train_end(self, run: FitRun) -> None:
        """When training ends normally."""

    def close(self) -> None:
        """Whatever ends `fit`."""


class LambdaCallback(Callback):
    """`fit`'s `on_epoch_end=fn`: `fn(epoch, logs, state)` after each epoch (1-based)."""

    def __init__(self, on_epoch_end: Callable[[int, Mapping[str, float], Any], None]):
        self.fn = on_epoch_end

    def on_epoch_end(self, run: FitRun, epoch: int, logs: dict[str, float]) -> None:
        self.fn(epoch, logs, run.state)


class EarlyStoppingHook(Callback):
    """Keras's EarlyStopping as a hook: judges each epoch's logs, stops, restores the best weights at the end.

    The best weights are `trained_weights(state)` (params, with the model's collections when it has any),
    copied off the donated buffers; `tracker` is what a checkpoint saves and restores.
    """

    def __init__(self, rule: EarlyStopping):
        self.tracker = rule.start()

    def on_epoch_end(self, run: FitRun, epoch: int, logs: dict[str, float]) -> None:
        if self.tracker.update(epoch, logs, trained_weights(run.state)):
            run.stop_training = True

    def on_train_end(self, run: FitRun) -> None:
        run.history.best_epoch = self.tracker.best_epoch
        best, state = self.tracker.best_params, run.state
        run.state = (
            state.replace(params=best[0], model_state=best[1])
            if trained_weights(state) is not state.params
            else state.replace(params=best)
        )


class CheckpointHook(Callback):
    """Exact resume, checkpoints at epoch ends and every N steps, and preemption, as one hook.

    `on_train_begin` restores the newest good checkpoint (`dlchapter.checkpoint.resume`) into the run and installs a
    `PreemptionGuard`: SIGTERM or SIGINT then saves at the next step boundary and raises TrainingInterrupted.
    `stopper` is early stopping's tracker (its best weights and counters are saved and restored).
    """

    def __init__(self, config: CheckpointConfig, stopper: Any = None):
        self.config = config
        self.stopper = stopper
        self.saver: RunCheckpointer | None = None
        self.guard: PreemptionGuard | None = None
        self._stack = contextlib.ExitStack()
        self._closed = False
        self._ended = False  # on_train_end ran: fit finished normally

    def on_train_begin(self, run: FitRun) -> None:
        config, identity = self.config, None
        if config.run_config is None:  # the Python API: the data, initial weights and optimizer bind the run
            identity = fit_identity(run.config, run.x, run.y, run.state, run.validation_data, run.key)
            identity.update(run.identity_probe() if run.identity_probe is not None else {})
        else:  # a command line's config names its data set; the digest tells other data under that name apart
            digest = data_digest(run.x, run.y, run.validation_data)
            config = dataclasses.replace(config, run_config={**config.run_config, DATA_DIGEST_FIELD: digest})
        self.saver = RunCheckpointer(config, self.stopper, default_identity=identity)
        restored = self.saver.restore(run.state, run.zero_sums(), run.key)
        if restored is not None:
            epochs = run.config.epochs
            run.state, run.key, run.position = restored.state, restored.key, restored.position
            run.sums = restored.sums
            run.history.values.update(restored.history_values)
            run.history.stopped_early = restored.stopped_early
            if restored.finished and (restored.stopped_early or restored.position.epoch >= epochs):
                run.position = Position(epochs, 0)  # nothing left to train (a larger --epochs continues a run)
            logger.info(resume_line(restored, epochs, self.saver.directory))
        self.guard = self._stack.enter_context(PreemptionGuard())

    def on_train_batch_end(self, run: FitRun, steps_before: int, steps_done: int) -> None:
        if run.mid_epoch and (self.saver.due(steps_before, steps_done) or self.guard.requested):
            run.check_finite()  # never save a broken state
            self.saver.save(steps_done, run.state, run.sums, run.key, Position(run.epoch, run.next_row), run.history)
            if self.guard.requested:
                raise self._interrupted(steps_done)

    def on_epoch_end(self, run: FitRun, epoch: int, logs: dict[str, float]) -> None:
        finished = run.stop_training or epoch == run.config.epochs
        if finished or self.guard.requested or self.saver.due_at_epoch_end(epoch):
            step = epoch * run.steps_per_epoch
            self.saver.save(
                step, run.state, run.sums, run.key, Position(epoch, 0), run.history, logs=logs, finished=finished
            )
            if self.guard.requested and not finished:
                raise self._interrupted(step)

    def on_train_end(self, run: FitRun) -> None:
        self._ended = True
        self.close()

    def close(self) -> None:
        """The signal handlers as they were; the store closed. When `fit` did not end normally and the run
        has not saved yet, a `--restart`'s set-aside earlier checkpoints are put back (`RunCheckpointer.abandon`).
        """
        self._stack.close()
        if self.saver is not None and not self._closed:
            self._closed = True
            self.saver.close() if self._ended else self.saver.abandon()

    def _interrupted(self, step: int) -> TrainingInterrupted:
        self.guard.acknowledge()
        self.close()
        return TrainingInterrupted(
            f"{self.guard.requested} received: stopped after step {step} with a checkpoint in "
            f"{self.saver.directory}. {resume_hint(self.config)}"
        )


def fit_hooks(
    callbacks: list[Callback] | tuple[Callback, ...] | None,
    *,
    on_epoch_end: Callable | None,
    early_stopping: EarlyStopping | None,
    checkpoint: CheckpointConfig | None,
) -> list[Callback]:
    """`fit`'s hooks in their order: the user's callbacks, `on_epoch_end`, early stopping, checkpointing.

    Raises TypeError for a callback that is not a `Callback`.
    """
    if isinstance(callbacks, Callback):
        raise TypeError(f"callbacks must be a list of Callback objects; got one {type(callbacks).__name__}: pass [it]")
    hooks = list(callbacks or ())
    for hook in hooks:
        if not isinstance(hook, Callback):
            raise TypeError(f"callbacks must be dlchapter Callback objects, got {type(hook).__name__}")
    if on_epoch_end is not None:
        hooks.append(LambdaCallback(on_epoch_end))
    stopping = EarlyStoppingHook(early_stopping) if early_stopping else None
    hooks += [stopping] if stopping else []
    hooks += [CheckpointHook(checkpoint, stopping.tracker if stopping else None)] if checkpoint else []
    return hooks


def resume_line(restored: Restored, epochs: int, directory: Any) -> str:
    """The one line that says a run resumed (or had nothing left to do), with the step and epoch."""
    done, where = restored.position.epoch, f"checkpoint step {restored.step} in {directory}"
    if restored.finished and restored.stopped_early:
        return f"{where}: the run stopped early after {done} epochs; nothing to train (--restart trains again)"
    if restored.finished and done >= epochs:
        return f"{where}: the run finished its {done} epochs; nothing to train"
    batch = f", batch {restored.position.row}" if restored.position.row else ""
    return f"resuming from {where} at epoch {done + 1}{batch} of {epochs}"
