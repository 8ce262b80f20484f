"""The training engine: a Keras-like fit/evaluate/predict around the pure steps of `dlchapter.engine.steps`.

Data are put on the device once; each epoch the host computes a batch order
from (seed, epoch) and sends one small index matrix, and a jitted program runs
`steps_per_call` steps at a time, gathering batches on the device. Every batch
has the same shape: the last one is padded and carries a 0/1 weight, so nothing
recompiles and no row is dropped or counted twice. Metrics accumulate on the
device and are fetched once per epoch.

`Trainer.fit` runs in named phases: `_prepare` (validation split, data on the device, batch plan, program),
`_restore` (the hooks' `on_train_begin`; a checkpoint resumes here), then per epoch `_run_epoch` (compiled
chunks of steps, `on_train_batch_end` after each) and `_end_epoch` (logs, validation, history, log line,
`on_epoch_end`), and `on_train_end`. Checkpointing with preemption (`CheckpointHook`), early stopping with
best-weights restore (`EarlyStoppingHook`), `on_epoch_end=` and the user's `callbacks=[...]` are all hooks
(`dlchapter.engine.fit_hooks`, whose docstring is the hook contract): user hooks first, then early stopping, then
checkpointing; `run.stop_training = True` ends training after the epoch; `close()` runs whatever ends `fit`.
The compiled programs, `evaluate` and `predict` are `dlchapter.engine.trainer_programs.TrainerPrograms`.

The contract (README, "Bring your own model"):
- the model is any `flax.linen.Module`; `train=` is passed only when its `__call__` takes it, and
  dropout draws from the "dropout" rng stream; or a `flax.nnx.Module`, split into graphdef, params and the
  rest at the boundary, trained in `.train()` and evaluated in `.eval()` mode, its RNG streams reseeded from
  the step's dropout key (`dlchapter.engine.train_state`);
- mutable collections other than "params" (BatchNorm's "batch_stats") live in `TrainState.model_state`:
  train steps update them, evaluation and prediction read them, checkpoints and `save_model` store them;
- `x` (and `y`) are arrays or pytrees of arrays with a leading batch axis (e.g. {"image": (N, H, W, C),
  "table": (N, F)}); every leaf must have the same N;
- a loss is a registered name or a callable `(outputs, targets, weights_B) -> scalar` (weights 0/1,
  float32, 0 on padded rows); `Task(from_logits=False)` for models ending in sigmoid/softmax;
- a metric is a registered name or an object with name/empty/update/merge/compute (`dlchapter.engine.metrics`);
- `predict` compiles once per input shape; 0 rows give an empty array, `evaluate` on 0 rows a ValueError.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.engine import input_checks
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.fit_hooks import Callback, FitRun, fit_hooks
from dlchapter.engine.loop import Batch, batch_plan, epoch_order, num_rows
from dlchapter.engine.optim import current_learning_rate
from dlchapter.engine.steps import eval_step, train_step
from dlchapter.engine.task import TASKS, FitConfig, History, Task, split_validation
from dlchapter.engine.train_state import TrainState, create_train_state
from dlchapter.engine.trainer_programs import CPU_COMPILER_OPTIONS, TrainerPrograms, check_same_rows
from dlchapter.reporting import tracking

# re-exported: the engine's names stay importable from here
__all__ = [
    "TASKS",
    "CPU_COMPILER_OPTIONS",
    "FitConfig",
    "History",
    "Task",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "create_train_state",
    "eval_step",
    "split_validation",
    "train_step",
]

PyTree = Any
logger = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(eq=False)
class _FitPlan:
    """One `fit` call's fixed parts (phase 1) and its bar and log line (phase 2)."""

    run: FitRun
    train_data: Batch
    val_data: Batch | None
    batch_size: int
    n_steps: int
    program: Callable
    resumed_sums: PyTree = None
    bar: Any = None
    fit_log: Any = None


class Trainer(TrainerPrograms):
    """Compiles a task's train and eval programs once and runs fit/evaluate/predict.

    `traces` counts how often each program was traced: a test checks it is 1.
    `debug_nans=True` turns on `jax_debug_nans` (process-wide) and buffer donation off.
    `placement=parallel.DataParallel.create()` trains data parallel over every device
    of every process (state and data replicated, each batch split); default: one device.
    """

    def compile_train(self, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int, key: jax.Array) -> float:
        """Compile the train program `fit` will use for these shapes; returns the seconds it took.

        `jax.jit` keeps the executable, so `fit`'s first epoch then runs without compiling.
        """
        n_rows = num_rows(x)
        batch_size = min(batch_size, n_rows)
        steps_per_epoch = math.ceil(n_rows / batch_size)
        n_steps = min(self.steps_per_call or steps_per_epoch, steps_per_epoch)
        idx, weight = batch_plan(np.arange(n_rows), batch_size, n_steps)
        data = self.placement.replicate({"x": x, "y": y})
        carry = self.placement.replicate((state, self._zero_sums(state, data, batch_size), np.int32(-1)))
        args = (*carry, data, *self.placement.plan(idx, weight), 0, self.placement.replicate(key))
        started = time.perf_counter()
        self.train_program(n_steps).lower(*args).compile()
        return time.perf_counter() - started

    def fit(
        self,
        state: TrainState,
        x: PyTree,
        y: PyTree,
        config: FitConfig,
        key: jax.Array,
        *,
        validation_data: tuple[PyTree, PyTree] | None = None,
        early_stopping: EarlyStopping | None = None,
        checkpoint: CheckpointConfig | None = None,
        on_epoch_end: Callable[[int, Mapping[str, float], TrainState], None] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> tuple[TrainState, History]:
        """Train for `config.epochs` (or until early stopping); returns the final state and history.

        With early stopping the returned state holds the best epoch's weights.
        `key` drives dropout; the batch order comes from `config.seed`.
        With `checkpoint`, progress is saved at epoch ends (and every N steps),
        a run whose directory holds a checkpoint resumes from it, and SIGTERM or
        SIGINT saves at the next step boundary, then raises TrainingInterrupted.
        `on_epoch_end(epoch, logs, state)` is called after each epoch (1-based); `callbacks` are
        `dlchapter.engine.fit_hooks.Callback`s (the hook contract is in that module's docstring).
        The phases: `_prepare` (validation split, placement, batch plan, program), `_restore` (the hooks'
        `on_train_begin`: resume from a checkpoint), then per epoch `_run_epoch` and `_end_epoch`.
        `x`/`y` may be pandas DataFrames/Series (taken as `to_numpy()`). Before any step (`input_checks`):
        Raises ValueError when x and y differ in rows, x has no rows, `config.epochs` or `batch_size` < 1,
        `validation_split` is outside [0, 1), x or y hold NaN or inf, y does not fit a built-in loss and the
        model's outputs, the loss is not a scalar, or a monitored name is not logged;
        TypeError for a callback that is not a Callback; TrainingDiverged on a NaN or infinite loss.
        """
        hooks = fit_hooks(callbacks, on_epoch_end=on_epoch_end, early_stopping=early_stopping, checkpoint=checkpoint)
        try:
            plan = self._prepare(state, x, y, config, key, validation_data)
            self._check_monitors(plan, early_stopping, callbacks)
            self._restore(plan, hooks)
            run = plan.run
            for epoch in range(run.position.epoch, config.epochs):
                self._end_epoch(plan, hooks, epoch, *self._run_epoch(plan, hooks, epoch))
                if run.stop_training:
                    break
            plan.bar.close()
            for hook in hooks:
                hook.on_train_end(run)
            return run.state, run.history
        finally:
            for hook in reversed(hooks):
                hook.close()

    def _prepare(
        self,
        state: TrainState,
        x: PyTree,
        y: PyTree,
        config: FitConfig,
        key: jax.Array,
        validation_data: tuple[PyTree, PyTree] | None,
    ) -> _FitPlan:
        """Phase 1: the validation split, the data on the device, the batch plan's sizes and the program."""
        for name in ("epochs", "batch_size"):
            value = getattr(config, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"FitConfig.{name} must be an integer >= 1, got {value!r}")
        split = config.validation_split
        if not isinstance(split, int | float | np.number) or not 0 <= split < 1:
            raise ValueError(
                f"FitConfig.validation_split must be a fraction in [0, 1) of the rows held out for validation, "
                f"got {split!r}: e.g. 0.2, or 0 (and validation_data=) for none"
            )
        x, y = input_checks.as_numpy(x, "fit: x"), input_checks.as_numpy(y, "fit: y")
        check_same_rows(x, y, "fit")  # before the split, which would index y by x's rows
        if num_rows(x) == 0:
            raise ValueError("fit: x has no rows (0 examples); nothing to train on")
        y = self.check_inputs(state, x, y, min(config.batch_size, num_rows(x)), "fit")
        if validation_data is not None:
            x_val, y_val = (
                input_checks.as_numpy(a, f"fit: validation_data {n}") for a, n in zip(validation_data, "xy")
            )
            check_same_rows(x_val, y_val, "fit: validation_data")
            val_batch = min(self.eval_batch_size, num_rows(x_val))
            validation_data = (x_val, self.check_inputs(state, x_val, y_val, val_batch, "fit: validation_data"))
        elif config.validation_split:
            x, y, validation_data = split_validation(x, y, config, classification=self.task.is_classification)
        train_data = self.placement.replicate({"x": x, "y": y})
        val_data = self.placement.replicate(dict(zip("xy", validation_data))) if validation_data is not None else None
        n_rows = num_rows(x)
        batch_size = min(config.batch_size, n_rows)
        steps_per_epoch = math.ceil(n_rows / batch_size)
        n_steps = min(self.steps_per_call or steps_per_epoch, steps_per_epoch)
        zero_sums = lambda: self.placement.replicate(self._zero_sums(state, train_data, batch_size))  # noqa: E731
        run = FitRun(config, steps_per_epoch, n_rows, History(), state, key, x, y, zero_sums, lambda: None)
        run.check_finite_fn = lambda: self._raise_if_diverged(run.nonfinite, run.sums, run.epoch)
        run.validation_data = validation_data
        run.identity_probe = lambda: self.identity_probe(state, x, y, batch_size)
        return _FitPlan(run, train_data, val_data, batch_size, n_steps, self.train_program(n_steps))

    def _check_monitors(self, plan: _FitPlan, early_stopping: EarlyStopping | None, callbacks: Sequence) -> None:
        """Every monitored name (early stopping's, any callback's `monitor`) against what this fit will log."""
        names = ["loss", *(m.name for m in self._metrics), "epoch_seconds"]
        names += ["lr"] if hasattr(plan.run.state.opt_state, "hyperparams") else []
        watched = [("EarlyStopping", early_stopping.monitor)] if early_stopping is not None else []
        watched += [(type(c).__name__, c.monitor) for c in callbacks or () if isinstance(getattr(c, "monitor", 0), str)]
        for owner, monitor in watched:
            input_checks.check_monitor(owner, monitor, names, plan.val_data is not None)

    def _restore(self, plan: _FitPlan, hooks: list[Callback]) -> None:
        """Phase 2: the hooks' `on_train_begin` (a checkpoint hook resumes the run), then the progress bar and log."""
        run, config = plan.run, plan.run.config
        for hook in hooks:
            hook.on_train_begin(run)
        resumed = run.sums if run.position.row else None
        run.state, run.key, plan.resumed_sums = self.placement.replicate((run.state, run.key, resumed))
        done = run.position.epoch * run.steps_per_epoch + run.position.row
        plan.bar = tqdm(
            total=config.epochs * run.steps_per_epoch,
            initial=done,
            disable=tracking.bar_disabled(config.progress),
            unit="step",
        )
        plan.fit_log = tracking.fit_log(config.epochs, run.n_rows, run.position.epoch + 1)  # events in a run scope

    def _run_epoch(self, plan: _FitPlan, hooks: list[Callback], epoch: int) -> tuple[float, int]:
        """Phase 3: one epoch's chunks of steps (from the resumed row), each followed by the hooks'
        `on_train_batch_end`. Returns the epoch's start time (compilation excluded) and its first row."""
        run, config = plan.run, plan.run.config
        started = time.perf_counter()
        order = epoch_order(run.n_rows, config.seed, epoch, config.shuffle)
        idx, weight = batch_plan(order, plan.batch_size, plan.n_steps)
        idx_dev, w_dev = self.placement.plan(idx, weight)
        resumed = epoch == run.position.epoch
        first_row = run.position.row if resumed else 0
        run.sums = plan.resumed_sums if resumed and plan.resumed_sums is not None else run.zero_sums()
        run.nonfinite = self.placement.replicate(np.int32(-1))
        run.epoch, run.rows_in_plan = epoch, idx.shape[0]
        for start in range(first_row, idx.shape[0], plan.n_steps):
            args = (run.state, run.sums, run.nonfinite, plan.train_data, idx_dev, w_dev, start, run.key)
            if plan.fit_log.compile_seconds is None:  # compile apart, so epoch 1's seconds are training only
                started += self._compile_apart(plan, args)
            run.state, run.sums, run.nonfinite = self.placement.sync(plan.program(*args))
            done_before = epoch * run.steps_per_epoch + min(start, run.steps_per_epoch)
            done = epoch * run.steps_per_epoch + min(start + plan.n_steps, run.steps_per_epoch)
            plan.bar.update(done - done_before)
            run.next_row = start + plan.n_steps
            for hook in hooks:
                hook.on_train_batch_end(run, done_before, done)
        return started, first_row

    def _compile_apart(self, plan: _FitPlan, args: tuple) -> float:
        """Compile the train (and validation) programs before the first step; returns the seconds."""
        seconds = plan.fit_log.compile(functools.partial(plan.program.lower, *args))
        if plan.val_data is not None:
            eval_program, eval_args, _ = self._eval_plan(plan.run.state, plan.val_data)
            seconds += plan.fit_log.compile(functools.partial(eval_program.lower, *eval_args, 0), "validation")
        plan.run.history.compile_seconds = plan.fit_log.compile_seconds
        return seconds

    def _end_epoch(self, plan: _FitPlan, hooks: list[Callback], epoch: int, started: float, first_row: int) -> None:
        """Phase 4: the epoch's logs (validation, lr, seconds), history, log line and bar, then the hooks'
        `on_epoch_end` (the user's, early stopping, checkpointing)."""
        run = plan.run
        logs = run.check_finite()
        if plan.val_data is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate_on_device(run.state, plan.val_data).items()})
        if hasattr(run.state.opt_state, "hyperparams"):
            logs["lr"] = float(current_learning_rate(run.state.opt_state))  # the rate this epoch's last step used
        logs["epoch_seconds"] = time.perf_counter() - started
        for name, value in logs.items():
            run.history.values[name].append(value)
        run.history.epochs_trained += 1
        plan.fit_log.epoch_end(epoch + 1, logs, samples=run.n_rows - first_row * plan.batch_size)
        plan.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k not in ("lr", "epoch_seconds")})
        if not self._checked_logits:
            self._warn_if_probabilities(run.state, run.x)
        run.stop_training = False
        for hook in hooks:
            hook.on_epoch_end(run, epoch + 1, logs)

    def _raise_if_diverged(self, nonfinite: jax.Array, sums: dict, epoch: int) -> dict[str, float]:
        """The epoch's logs so far; raises TrainingDiverged if any step's loss was not finite."""
        logs = self._finish(sums)
        if int(nonfinite) >= 0:
            raise TrainingDiverged(
                f"loss became {logs['loss']} at step {int(nonfinite) + 1} (epoch {epoch + 1}); the inputs were "
                "checked finite, so lower the learning rate, or look for a log or division of 0 in the model or loss"
            )
        return logs
