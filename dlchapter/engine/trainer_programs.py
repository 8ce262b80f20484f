"""The compiled programs of a `Trainer` (`dlchapter.engine.train`) and what runs on them besides `fit`.

`TrainerPrograms` holds a task's jitted programs, each compiled once per shape and counted in `traces`:
the chunk of train steps (`train_program`, `loop.train_chunk` over `steps.train_step`), the chunk of eval
steps (`loop.eval_chunk` over `steps.eval_step`) and the forward pass; and the host side of evaluation and
prediction on them (`evaluate`, `evaluate_on_device`, `predict`), with the metric states' zeros and
finishing. `Trainer` adds `fit` in phases. `CPU_COMPILER_OPTIONS` are the XLA flags its programs use on CPU.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter.engine import input_checks, losses
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.loop import Batch, batch_plan, eval_chunk, gather, num_rows, take_rows, train_chunk
from dlchapter.engine.parallel import Placement, SingleDevice
from dlchapter.engine.steps import eval_step, train_step
from dlchapter.engine.task import Task
from dlchapter.engine.train_state import TrainState, module_of, train_kwargs, variables_of, weights_pair
from dlchapter.models.dense import probabilities

PyTree = Any
logger = logging.getLogger("dlchapter.engine.train")  # the Trainer's warnings keep the Trainer's logger

# On CPU, YNNPACK fusions run each dot and convolution on one core; without them XLA uses Eigen's
# multi-threaded kernels (benchmarks/NOTES.md: diamonds MLP 1.04 -> 0.74 ms per step on 2 cores).
# Copy insertion with region analysis drops the per-step copies of the weights in a fused loop
# (7 -> 1 copies in the MLP's loop body, results bit for bit the same; NOTES.md, Nov 30 b).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_copy_insertion_use_region_analysis": True}


def check_same_rows(x: PyTree, y: PyTree, where: str) -> None:
    """Raises ValueError naming `where` when x and y differ in rows (row i of x goes with row i of y)."""
    if num_rows(x) != num_rows(y, "y"):
        raise ValueError(f"{where}: x has {num_rows(x)} rows but y has {num_rows(y, 'y')}; they must match")


class TrainerPrograms:
    """A task's jitted train, eval and predict programs, and evaluate/predict (arguments: `Trainer`)."""

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
        loss_fn = self._loss_fn = losses.get_loss(task.loss, task.from_logits)
        self._metrics = metrics_lib.get_metrics(task.metrics, task.from_logits)
        self._merge = functools.partial(metrics_lib.merge_states, self._metrics)
        self._checked_logits = not (task.from_logits and task.is_classification)
        self._step_fn = functools.partial(train_step, loss_fn=loss_fn, metrics=self._metrics)
        self._eval_fn = functools.partial(eval_step, loss_fn=loss_fn, metrics=self._metrics)
        self._train_programs: dict[int, Callable] = {}
        self._eval_programs: dict[tuple[int, Callable], Callable] = {}
        self._predict_programs: dict[Callable, Callable] = {}
        self._zero_sums_cache: dict[tuple, dict] = {}  # `_zero_sums`'s host zeros by model and shapes
        self._outputs_cache: dict[tuple, Any] = {}  # `check_inputs`'s output structs by model and shapes

    def check_inputs(self, state: TrainState, x: PyTree, y: PyTree, batch_size: int, where: str) -> PyTree:
        """`input_checks.check_inputs` for this task with the model's outputs on a batch of `batch_size` rows
        (`jax.eval_shape`, cached per model and shapes; nothing runs). Returns y ((N, 1) sparse labels squeezed).

        Raises ValueError naming x or y, what was found and what to do (`dlchapter.engine.input_checks`).
        """
        batch = max(1, batch_size)
        x_rows = input_checks.rows_struct(x, batch)
        params = weights_pair(state)
        leaves, treedef = jax.tree.flatten((params, x_rows))
        key = (state.apply_fn, treedef, tuple((np.shape(a), str(a.dtype)) for a in leaves))
        if key not in self._outputs_cache:
            apply_fn = state.apply_fn

            def forward(weights: PyTree, x_B: PyTree) -> PyTree:
                return apply_fn(variables_of(*weights), x_B, **train_kwargs(apply_fn, False))

            self._outputs_cache[key] = jax.eval_shape(forward, params, x_rows)
        out = self._outputs_cache[key]
        return input_checks.check_inputs(self.task.loss, self._loss_fn, x, y, out, batch, where)

    def identity_probe(self, state: TrainState, x: PyTree, y: PyTree, batch_size: int) -> dict[str, Any]:
        """What binds a Python API run's checkpoints besides its FitConfig and data (`run_identity.fit_identity`).

        The task (loss, metrics, head) and a digest of one train step from `state` on the first `batch_size`
        rows with a fixed key: its loss and metric sums, the weights' change and the model's other collections
        after it. So another activation, dropout rate, BatchNorm momentum, loss or metric is refused on resume,
        where the weights' shapes and initial values alone cannot tell. One extra small compiled step.
        """
        from dlchapter.checkpoint.run_identity import weights_digest  # noqa: PLC0415 - only checkpointing fits

        rows = np.arange(min(max(batch_size, 1), num_rows(x)))
        batch = {"x": take_rows(x, rows), "y": take_rows(y, rows), "weight": np.ones(rows.size, np.float32)}
        new_state, sums = jax.jit(self._step_fn)(state, batch, jax.random.key(0))
        change = jax.tree.map(
            lambda new, old: np.asarray(new, np.float64) - np.asarray(old, np.float64),
            jax.device_get(new_state.params),
            jax.device_get(state.params),
        )
        outcome = {"sums": jax.device_get(sums), "collections": jax.device_get(getattr(new_state, "model_state", {}))}
        return {
            "task": self.task.identity(self._metrics),
            "first_step_digest": weights_digest({"change": change, **outcome}),
        }

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

        Raises ValueError when `x` has no rows (a mean over 0 rows is undefined), x and y differ in rows, or
        they fail `check_inputs` (NaN or inf, labels or shapes that do not fit the task's loss and the model).
        """
        x, y = input_checks.as_numpy(x, "evaluate: x"), input_checks.as_numpy(y, "evaluate: y")
        if num_rows(x) == 0:
            raise ValueError("evaluate: x has no rows (0 examples); nothing to evaluate")
        check_same_rows(x, y, "evaluate")
        y = self.check_inputs(state, x, y, min(self.eval_batch_size, num_rows(x)), "evaluate")
        return self.evaluate_on_device(state, self.placement.replicate({"x": x, "y": y}))

    def predict(self, state: TrainState, x: np.ndarray, *, raw: bool = False) -> np.ndarray:
        """Outputs for every row of `x` (probabilities through the head unless `raw`).

        Returns a float array of shape (rows, *output_shape). The forward pass is compiled once per
        input shape and reused (`traces["predict"]` counts compilations); 0 rows give an empty
        array of shape (0, *output_shape).
        """
        x = input_checks.as_numpy(x, "predict: x")
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


__all__ = ["CPU_COMPILER_OPTIONS", "TrainerPrograms"]
