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

import collections
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.engine import losses
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.fit_hooks import Callback, FitRun, fit_hooks
from dlchapter.engine.loop import Batch, batch_plan, epoch_order, eval_chunk, gather, num_rows, take_rows, train_chunk
from dlchapter.engine.optim import current_learning_rate
from dlchapter.engine.parallel import Placement, SingleDevice
from dlchapter.engine.steps import eval_step, train_step
from dlchapter.engine.task import TASKS, FitConfig, History, Task, split_validation
from dlchapter.engine.train_state import (
    TrainState,
    create_train_state,
    module_of,
    train_kwargs,
    variables_of,
    weights_pair,
)
from dlchapter.models.dense import probabilities
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


# On CPU, YNNPACK fusions run each dot and convolution on one core; without them XLA uses Eigen's
# multi-threaded kernels (benchmarks/NOTES.md: diamonds MLP 1.04 -> 0.74 ms per step on 2 cores).
# Copy insertion with region analysis drops the per-step copies of the weights in a fused loop
# (7 -> 1 copies in the MLP's loop body, results bit for bit the same; NOTES.md, Nov 30 b).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_copy_insertion_use_region_analysis": True}


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


def _check_same_rows(x: PyTree, y: PyTree, where: str) -> None:
    """Raises ValueError naming `where` when x and y differ in rows (row i of x goes with row i of y)."""
    if num_rows(x) != num_rows(y, "y"):
        raise ValueError(f"{where}: x has {num_rows(x)} rows but y has {num_rows(y, 'y')}; they must match")


class Trainer:
    """Compiles a task's train and eval programs once and runs fit/evaluate/predict.

    `traces` counts how often each program was traced: a test checks it is 1.
    `debug_nans=True` turns on `jax_debug_nans` (process-wide) and buffer donation off.
    `placement=parallel.DataParallel.create()` trains data parallel over every device
    of every process (state and data replicated, each batch split); default: one device.
    """

    def __init__(
        self,
        task: Task,
        *,
        steps_per_call: int | None = None,
        eval_batch_size: int = 1024,
        debug_nans: bool = False,
        placement: Placement | None = None,
        cpu_compiler_options: dict[str, str] | None = None,
    ):  # None: CPU_COMPILER_OPTIONS; {}: XLA's defaults
        if debug_nans:  # JAX then re-runs the failing op un-jitted and raises where the NaN appeared
            jax.config.update("jax_debug_nans", True)
        self._donate = () if debug_nans else (0, 1, 2)  # donated buffers cannot be re-run
        self.task = task
        self.placement = placement or SingleDevice()
        self.steps_per_call = steps_per_call
        cpu_options = CPU_COMPILER_OPTIONS if cpu_compiler_options is None else cpu_compiler_options
        self._options = cpu_options if jax.default_backend() == "cpu" else None
        self.eval_batch_size = eval_batch_size
        self.traces: collections.Counter[str] = collections.Counter()
        loss_fn = losses.get_loss(task.loss, task.from_logits)
        self._metrics = metrics_lib.get_metrics(task.metrics, task.from_logits)
        self._merge = functools.partial(metrics_lib.merge_states, self._metrics)
        self._checked_logits = not (task.from_logits and task.is_classification)
        self._step_fn = functools.partial(train_step, loss_fn=loss_fn, metrics=self._metrics)
        self._eval_fn = functools.partial(eval_step, loss_fn=loss_fn, metrics=self._metrics)
        self._train_programs: dict[int, Callable] = {}
        self._eval_programs: dict[tuple[int, Callable], Callable] = {}
        self._predict_programs: dict[Callable, Callable] = {}
        self._zero_sums_cache: dict[tuple, dict] = {}  # `_zero_sums`'s host zeros by model and shapes

    def _counted(self, name: str, fn: Callable) -> Callable:
        def traced(*args):
            self.traces[name] += 1
            return fn(*args)

        return traced

    def train_program(self, n_steps: int) -> Callable:
        """The jitted chunk of `n_steps` train steps (state and sums donated)."""
        if n_steps not in self._train_programs:
            fn = functools.partial(train_chunk, step_fn=self._step_fn, n_steps=n_steps, merge=self._merge)
            self._train_programs[n_steps] = jax.jit(
                self._counted("train", fn), donate_argnums=self._donate, compiler_options=self._options
            )
        return self._train_programs[n_steps]

    def _eval_program(self, n_steps: int, apply_fn: Callable) -> Callable:
        key = (n_steps, apply_fn)
        if key not in self._eval_programs:
            step = functools.partial(self._eval_fn, apply_fn=apply_fn)
            step_fn = lambda weights, batch: step(weights[0], batch=batch, model_state=weights[1])  # noqa: E731
            fn = functools.partial(eval_chunk, step_fn=step_fn, n_steps=n_steps, merge=self._merge)
            self._eval_programs[key] = jax.jit(
                self._counted("eval", fn), donate_argnums=(1,), compiler_options=self._options
            )
        return self._eval_programs[key]

    def _predict_program(self, apply_fn: Callable) -> Callable:
        """The jitted forward pass on one batch of gathered rows; `jax.jit` caches one executable per shape."""
        if apply_fn not in self._predict_programs:

            def forward(variables: PyTree, x_dev: jax.Array, idx_B: jax.Array) -> jax.Array:
                return apply_fn(variables, take_rows(x_dev, idx_B), **train_kwargs(apply_fn, False))

            counted = self._counted("predict", forward)
            self._predict_programs[apply_fn] = jax.jit(counted, compiler_options=self._options)
        return self._predict_programs[apply_fn]

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

    def _zero_sums(self, state: TrainState, data: Batch, batch_size: int) -> dict:
        """Empty metric sums as host numpy arrays (the placement copies them to the devices, fresh buffers each call).

        Host zeros, not `jnp.zeros`: each eager jnp op outside jit is a program of its own to trace, lower and
        compile (or fetch from the persistent cache) in every process. The shapes are traced once per model,
        batch size and data and parameter shapes, not every epoch.
        """
        weights = weights_pair(state)
        leaves, treedef = jax.tree.flatten((weights, data))
        key = (state.apply_fn, batch_size, treedef, tuple((np.shape(a), str(a.dtype)) for a in leaves))
        if key not in self._zero_sums_cache:
            shapes = jax.eval_shape(
                lambda p, d: self._eval_fn(
                    p[0],
                    state.apply_fn,
                    gather(d, jnp.zeros(batch_size, jnp.int32), jnp.ones(batch_size)),
                    model_state=p[1],
                ),
                weights,
                data,
            )
            zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)  # the sums of SumMetrics
            others = {m.name: m.empty() for m in self._metrics if not isinstance(m, metrics_lib.SumMetric)}
            self._zero_sums_cache[key] = {**zeros, **jax.device_get(others)}
        return self._zero_sums_cache[key]

    def _finish(self, sums: dict) -> dict[str, float]:
        host = jax.device_get(sums)
        result = {"loss": float(host["loss"]["sum"] / max(host["loss"]["count"], 1e-12))}
        result.update(metrics_lib.finish(self._metrics, host))
        return result

    def _eval_plan(self, state: TrainState, data: Batch) -> tuple[Callable, tuple, range]:
        """The eval program for `data`, its arguments before the start row, and the start rows."""
        n_rows = num_rows(data["x"])
        batch_size = min(self.eval_batch_size, n_rows)
        n_batches = math.ceil(n_rows / batch_size)
        n_steps = min(self.steps_per_call or n_batches, n_batches)
        idx, weight = batch_plan(np.arange(n_rows), batch_size, n_steps)
        idx_dev, w_dev = self.placement.plan(idx, weight)
        program = self._eval_program(n_steps, state.apply_fn)
        weights, sums = self.placement.replicate((weights_pair(state), self._zero_sums(state, data, batch_size)))
        return program, (weights, sums, data, idx_dev, w_dev), range(0, idx.shape[0], n_steps)

    def evaluate_on_device(self, state: TrainState, data: Batch) -> dict[str, float]:
        """Loss and metrics over device-resident data, in padded batches."""
        program, (params, sums, data, idx_dev, w_dev), starts = self._eval_plan(state, data)
        for start in starts:
            sums = self.placement.sync(program(params, sums, data, idx_dev, w_dev, start))
        return self._finish(sums)

    def evaluate(self, state: TrainState, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Loss and metrics on (x, y) as {"loss": float, metric name: float}; every row counted once.

        `x`: an array or pytree of arrays (N, ...); `y`: targets (N, ...). Dropout off, collections read only.

        Raises ValueError when `x` has no rows (a mean over 0 rows is undefined) or x and y differ in rows.
        """
        if num_rows(x) == 0:
            raise ValueError("evaluate: x has no rows (0 examples); nothing to evaluate")
        _check_same_rows(x, y, "evaluate")
        return self.evaluate_on_device(state, self.placement.replicate({"x": x, "y": y}))

    def predict(self, state: TrainState, x: np.ndarray, *, raw: bool = False) -> np.ndarray:
        """Outputs for every row of `x` (probabilities through the head unless `raw`).

        Returns a float array of shape (rows, *output_shape). The forward pass is compiled once per
        input shape and reused (`traces["predict"]` counts compilations); 0 rows give an empty
        array of shape (0, *output_shape).
        """
        n_rows = num_rows(x)
        program = self._predict_program(state.apply_fn)
        if n_rows == 0:
            one_row = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *np.shape(a)[1:]), np.asarray(a).dtype), x)
            variables = variables_of(*weights_pair(state))
            out = jax.eval_shape(program, variables, one_row, jax.ShapeDtypeStruct((1,), jnp.int32))
            return np.zeros((0, *out.shape[1:]), out.dtype)
        batch_size = min(self.eval_batch_size, n_rows)
        idx, _ = batch_plan(np.arange(n_rows), batch_size)
        x_dev, variables = self.placement.replicate((x, variables_of(*weights_pair(state))))
        batches = [np.asarray(program(variables, x_dev, self.placement.replicate(row))) for row in idx]
        outputs = np.concatenate(batches)[:n_rows]
        if raw or not self.task.from_logits:
            return outputs
        return np.asarray(probabilities(jnp.asarray(outputs), self.task.head))

    def _warn_if_probabilities(self, state: TrainState, x: PyTree) -> None:
        """Once per Trainer: warn when a logits classification task's outputs all lie in [0, 1].

        Costs one forward compile on up to 256 training rows, so it is skipped for the chapter's own
        models (dlchapter.models), which end in a linear layer by construction.
        """
        self._checked_logits = True
        if type(module_of(state.apply_fn)).__module__.startswith("dlchapter.models."):
            return
        rows = min(num_rows(x), 256)
        outputs = self.predict(state, take_rows(x, np.arange(rows)), raw=True)
        if rows and np.all((outputs >= 0) & (outputs <= 1)):
            logger.warning(
                "every output of the first epoch lies in [0, 1]: if the model ends in a sigmoid or "
                "softmax, pass Task(..., from_logits=False) (losses and accuracy expect logits now)"
            )

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
        Raises ValueError when x and y differ in rows, x has no rows, or `config.epochs` or `batch_size` < 1;
        TypeError for a callback that is not a Callback; TrainingDiverged on a NaN or infinite loss.
        """
        hooks = fit_hooks(callbacks, on_epoch_end=on_epoch_end, early_stopping=early_stopping, checkpoint=checkpoint)
        try:
            plan = self._prepare(state, x, y, config, key, validation_data)
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
        _check_same_rows(x, y, "fit")  # before the split, which would index y by x's rows
        if num_rows(x) == 0:
            raise ValueError("fit: x has no rows (0 examples); nothing to train on")
        if validation_data is not None:
            _check_same_rows(*validation_data, "fit: validation_data")
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
        return _FitPlan(run, train_data, val_data, batch_size, n_steps, self.train_program(n_steps))

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
                f"loss became {logs['loss']} at step {int(nonfinite) + 1} (epoch {epoch + 1}); "
                "lower the learning rate or check the inputs for NaN"
            )
        return logs
