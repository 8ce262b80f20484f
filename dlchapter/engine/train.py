"""The training engine: pure train/eval steps and a Keras-like fit/evaluate/predict.

Data are put on the device once; each epoch the host computes a batch order
from (seed, epoch) and sends one small index matrix, and a jitted program runs
`steps_per_call` steps at a time, gathering batches on the device. Every batch
has the same shape: the last one is padded and carries a 0/1 weight, so nothing
recompiles and no row is dropped or counted twice. Metrics accumulate on the
device and are fetched once per epoch.

The contract (README, "Bring your own model"):
- the model is any `flax.linen.Module`; `train=` is passed only when its `__call__` takes it, and
  dropout draws from the "dropout" rng stream;
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
import contextlib
import functools
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state as flax_train_state
from tqdm.auto import tqdm

from dlchapter.checkpoint.resume import (
    CheckpointConfig,
    Position,
    PreemptionGuard,
    Restored,
    RunCheckpointer,
    TrainingInterrupted,
    trained_weights,
)
from dlchapter.checkpoint.run_identity import fit_identity
from dlchapter.data.splits import holdout_split
from dlchapter.engine import losses
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.loop import Batch, batch_plan, epoch_order, eval_chunk, gather, num_rows, take_rows, train_chunk
from dlchapter.engine.optim import current_learning_rate
from dlchapter.engine.parallel import Placement, SingleDevice
from dlchapter.models.dense import probabilities
from dlchapter.reporting import tracking

PyTree = Any
logger = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Task:
    """What is learned: the loss, the metrics, the output head and what the model outputs.

    `loss`: a registered name (losses.LOSSES) or a callable `(outputs, targets, weights_B) -> scalar`.
    `metrics`: registered names (metrics.METRICS) or objects with name/empty/update/merge/compute.
    `head`: "linear", "sigmoid" or "softmax", applied by `predict` to raw outputs.
    `from_logits`: True when the model outputs logits (the chapter's models); False for a model that
    ends in its own sigmoid/softmax (Keras's `from_logits=False`): losses and accuracy then take
    probabilities and `predict` returns the outputs as they are.
    """

    loss: str | losses.LossFn
    metrics: tuple[metrics_lib.MetricLike, ...] = ()
    head: str = "linear"
    from_logits: bool = True

    @property
    def is_classification(self) -> bool:
        return self.head != "linear"


TASKS: dict[str, Task] = {
    "regression": Task("mse", ("mae", "rmse")),
    "binary": Task("binary_crossentropy", ("accuracy",), "sigmoid"),
    "multiclass": Task("categorical_crossentropy", ("accuracy",), "softmax"),
    "sparse_multiclass": Task("sparse_categorical_crossentropy", ("accuracy",), "softmax"),
}


@dataclass(frozen=True)
class FitConfig:
    """How `fit` iterates. `validation_split` holds out rows of the training data:
    `validation_mode` "stratified" (per class, seeded; regression falls back to
    "shuffled"), "shuffled", or "last" (Keras's last fraction, in order).
    How many steps run per compiled call is the `Trainer`'s choice."""

    epochs: int = 1
    batch_size: int = 32
    shuffle: bool = True
    validation_split: float = 0.0
    validation_mode: str = "stratified"
    seed: int = 0
    progress: bool | None = None  # None: a bar only when stderr is a terminal


@dataclass
class History:
    """Per-epoch values of every metric ("loss", "val_loss", "lr", ...) and the best epoch (1-based)."""

    values: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    best_epoch: int | None = None
    stopped_early: bool = False
    compile_seconds: float | None = None  # train (and validation) programs' ahead-of-time compile; not in epoch_seconds

    @property
    def epochs_run(self) -> int:
        return len(self.values.get("loss", []))

    def as_rows(self) -> list[dict[str, float]]:
        """One dict per epoch, with its 1-based number."""
        return [{"epoch": i + 1, **{k: v[i] for k, v in self.values.items()}} for i in range(self.epochs_run)]


class TrainState(flax_train_state.TrainState):
    """Flax's TrainState (step, apply_fn, params, tx, opt_state) plus the model's other variables.

    `model_state` holds the mutable collections other than "params" (e.g. {"batch_stats": ...} of
    BatchNorm): train steps update them, evaluation and prediction use them, checkpoints save them.
    It is {} for models without such collections, and then a step does exactly the work it did before.
    """

    model_state: PyTree = struct.field(default_factory=dict)


def create_train_state(model: Any, tx: optax.GradientTransformation, sample_x: PyTree, key: jax.Array) -> TrainState:
    """Initialise `model` (any `flax.linen.Module`) on one example's shape and wrap it with the optimizer.

    `sample_x`: an array or pytree of arrays with a leading batch axis (its first row is used).
    `train=False` is passed to `model.init` only when the module's `__call__` takes `train`.
    The initialisation is jitted (one compile instead of one per random op)
    and cached per model, so repeated runs of one architecture compile it once.
    """
    first_row = jax.tree.map(
        lambda a: jax.device_put(np.asarray(a[:1])) if not isinstance(a, jax.Array) else a[:1], sample_x
    )  # device_put: no compiled program (jnp.asarray compiles one per shape)
    variables = dict(_jitted_init(model)(key, first_row))
    params = variables.pop("params")
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, model_state=variables)


@functools.lru_cache(maxsize=32)
def _jitted_init(model: Any) -> Callable:
    kwargs = {"train": False} if _takes_train(type(model)) else {}
    return jax.jit(lambda k, x: model.init({"params": k}, x, **kwargs))


@functools.cache
def _takes_train(module_type: type) -> bool:
    """Whether `module_type.__call__` accepts a `train` keyword (inspected once per class)."""
    parameters = inspect.signature(module_type.__call__).parameters
    return "train" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _module_of(apply_fn: Callable) -> Any:
    """The module behind `apply_fn` (a bound `Module.apply`, maybe wrapped by partials or precision policies)."""
    fn = apply_fn
    while not hasattr(fn, "__self__") and (isinstance(fn, functools.partial) or hasattr(fn, "__wrapped__")):
        fn = fn.func if isinstance(fn, functools.partial) else fn.__wrapped__
    return getattr(fn, "__self__", None)


def _train_kwargs(apply_fn: Callable, train: bool) -> dict[str, bool]:
    """{"train": train} when the module behind `apply_fn` takes it, else {} (a plain function: the former)."""
    module = _module_of(apply_fn)
    return {"train": train} if module is None or _takes_train(type(module)) else {}


def _variables(params: PyTree, model_state: PyTree | None) -> dict:
    return {"params": params, **(model_state or {})}


def train_step(
    state: TrainState, batch: Batch, key: jax.Array, *, loss_fn: losses.LossFn, metrics: tuple
) -> tuple[TrainState, dict]:
    """One gradient step on a (possibly padded) batch; returns the new state and batch sums."""
    dropout_key = jax.random.fold_in(key, state.step)
    model_state = getattr(state, "model_state", None) or {}
    kwargs = _train_kwargs(state.apply_fn, True)

    def compute_loss(params: PyTree) -> tuple[jax.Array, tuple[jax.Array, PyTree]]:
        variables = _variables(params, model_state)
        if model_state:  # BatchNorm & co: the step returns the updated collections
            outputs, updates = state.apply_fn(
                variables, batch["x"], rngs={"dropout": dropout_key}, mutable=list(model_state), **kwargs
            )
        else:
            outputs, updates = state.apply_fn(variables, batch["x"], rngs={"dropout": dropout_key}, **kwargs), None
        return loss_fn(outputs, batch["y"], batch["weight"]), (outputs, updates)

    (loss, (outputs, updates)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    count = jnp.sum(batch["weight"])
    sums = {"loss": {"sum": loss * count, "count": count}}
    sums.update(metrics_lib.batch_stats(metrics, outputs, batch["y"], batch["weight"]))
    new_state = state.apply_gradients(grads=grads)
    if model_state:
        new_state = new_state.replace(model_state={**model_state, **updates})
    return new_state, sums


def eval_step(
    params: PyTree,
    apply_fn: Callable,
    batch: Batch,
    *,
    loss_fn: losses.LossFn,
    metrics: tuple,
    model_state: PyTree | None = None,
) -> dict:
    """Loss and metric sums of one padded batch, dropout off, the model's collections (`model_state`) read only."""
    outputs = apply_fn(_variables(params, model_state), batch["x"], **_train_kwargs(apply_fn, False))
    count = jnp.sum(batch["weight"])
    sums = {"loss": {"sum": loss_fn(outputs, batch["y"], batch["weight"]) * count, "count": count}}
    sums.update(metrics_lib.batch_stats(metrics, outputs, batch["y"], batch["weight"]))
    return sums


def split_validation(
    x: PyTree, y: np.ndarray, config: FitConfig, *, classification: bool
) -> tuple[PyTree, np.ndarray, tuple[PyTree, np.ndarray]]:
    """(x_fit, y_fit, (x_val, y_val)) as `config.validation_split`/`validation_mode` ask.

    `x` is an array or a pytree of arrays with a leading batch axis; every leaf is split alike.
    """
    mode = config.validation_mode
    if mode not in ("stratified", "shuffled", "last"):
        raise ValueError(f"validation_mode must be 'stratified', 'shuffled' or 'last', got {mode!r}")
    stratify = y if mode == "stratified" and classification else None
    kept, held = holdout_split(
        num_rows(x), config.validation_split, seed=config.seed, stratify=stratify, shuffle=mode != "last"
    )
    return take_rows(x, kept), take_rows(y, kept), (take_rows(x, held), take_rows(y, held))


# On CPU, YNNPACK fusions run each dot and convolution on one core; without them XLA uses Eigen's
# multi-threaded kernels (benchmarks/NOTES.md: diamonds MLP 1.04 -> 0.74 ms per step on 2 cores).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _compiler_options() -> dict[str, str] | None:
    return CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None


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
        self._options = (
            (CPU_COMPILER_OPTIONS if cpu_compiler_options is None else cpu_compiler_options)
            if jax.default_backend() == "cpu"
            else None
        )
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
                return apply_fn(variables, take_rows(x_dev, idx_B), **_train_kwargs(apply_fn, False))

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
        replicated = self.placement.replicate((state, self._zero_sums(state, data, batch_size), np.int32(-1)))
        args = (*replicated, data, *self.placement.plan(idx, weight), 0, self.placement.replicate(key))
        started = time.perf_counter()
        self.train_program(n_steps).lower(*args).compile()
        return time.perf_counter() - started

    def _zero_sums(self, state: TrainState, data: Batch, batch_size: int) -> dict:
        """Empty metric sums as host numpy arrays (the placement copies them to the devices, fresh buffers each call).

        Host zeros, not `jnp.zeros`: each eager jnp op outside jit is a program of its own to trace, lower and
        compile (or fetch from the persistent cache) in every process. The shapes are traced once per model,
        batch size and data and parameter shapes, not every epoch.
        """
        weights = _weights_pair(state)
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
        weights, sums = self.placement.replicate((_weights_pair(state), self._zero_sums(state, data, batch_size)))
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

        Raises ValueError when `x` has no rows (a mean over 0 rows is undefined).
        """
        if num_rows(x) == 0:
            raise ValueError("evaluate: x has no rows (0 examples); nothing to evaluate")
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
            variables = _variables(*_weights_pair(state))
            out = jax.eval_shape(program, variables, one_row, jax.ShapeDtypeStruct((1,), jnp.int32))
            return np.zeros((0, *out.shape[1:]), out.dtype)
        batch_size = min(self.eval_batch_size, n_rows)
        idx, _ = batch_plan(np.arange(n_rows), batch_size)
        x_dev, variables = self.placement.replicate((x, _variables(*_weights_pair(state))))
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
        if type(_module_of(state.apply_fn)).__module__.startswith("dlchapter.models."):
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
        x: np.ndarray,
        y: np.ndarray,
        config: FitConfig,
        key: jax.Array,
        *,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        early_stopping: EarlyStopping | None = None,
        checkpoint: CheckpointConfig | None = None,
        on_epoch_end: Callable[[int, Mapping[str, float], TrainState], None] | None = None,
    ) -> tuple[TrainState, History]:
        """Train for `config.epochs` (or until early stopping); returns the final state and history.

        With early stopping the returned state holds the best epoch's weights.
        `key` drives dropout; the batch order comes from `config.seed`.
        With `checkpoint`, progress is saved at epoch ends (and every N steps),
        a run whose directory holds a checkpoint resumes from it, and SIGTERM or
        SIGINT saves at the next step boundary, then raises TrainingInterrupted.
        `on_epoch_end(epoch, logs, state)` is called after each epoch (1-based).
        """
        if validation_data is None and config.validation_split:
            x, y, validation_data = split_validation(x, y, config, classification=self.task.is_classification)
        if num_rows(x) != num_rows(y, "y"):
            raise ValueError(f"x has {num_rows(x)} rows but y has {num_rows(y, 'y')}")
        train_data = self.placement.replicate({"x": x, "y": y})
        val_data = self.placement.replicate(dict(zip("xy", validation_data))) if validation_data is not None else None
        n_rows = num_rows(x)
        batch_size = min(config.batch_size, n_rows)
        steps_per_epoch = math.ceil(n_rows / batch_size)
        n_steps = min(self.steps_per_call or steps_per_epoch, steps_per_epoch)
        program = self.train_program(n_steps)
        history = History()
        stopper = early_stopping.start() if early_stopping else None
        zero_sums = lambda: self.placement.replicate(self._zero_sums(state, train_data, batch_size))  # noqa: E731
        saver = (
            RunCheckpointer(checkpoint, stopper, default_identity=fit_identity(config, x, y)) if checkpoint else None
        )
        position, resumed_sums = Position(0, 0), None
        restored = saver.restore(state, zero_sums(), key) if saver else None
        if restored is not None:
            state, key, position = restored.state, restored.key, restored.position
            resumed_sums = restored.sums if position.row else None
            history.values.update(restored.history_values)
            history.stopped_early = restored.stopped_early
            if restored.finished and (restored.stopped_early or position.epoch >= config.epochs):
                position = Position(config.epochs, 0)  # nothing left to train (a larger --epochs continues a run)
            logger.info(_resume_line(restored, config.epochs, saver.directory))
        state, key, resumed_sums = self.placement.replicate((state, key, resumed_sums))
        bar = tqdm(
            total=config.epochs * steps_per_epoch,
            initial=position.epoch * steps_per_epoch + position.row,
            disable=tracking.bar_disabled(config.progress),
            unit="step",
        )
        fit_log = tracking.fit_log(config.epochs, n_rows, position.epoch + 1)  # epoch lines; events in a run scope
        with saver or contextlib.nullcontext(), PreemptionGuard() if saver else contextlib.nullcontext() as guard:
            for epoch in range(position.epoch, config.epochs):
                started = time.perf_counter()
                idx, weight = batch_plan(epoch_order(n_rows, config.seed, epoch, config.shuffle), batch_size, n_steps)
                idx_dev, w_dev = self.placement.plan(idx, weight)
                first_row = position.row if epoch == position.epoch else 0
                sums = resumed_sums if resumed_sums is not None and epoch == position.epoch else zero_sums()
                nonfinite = self.placement.replicate(np.int32(-1))
                for start in range(first_row, idx.shape[0], n_steps):
                    if fit_log.compile_seconds is None:  # compile apart, so epoch 1's seconds are training only
                        args = (state, sums, nonfinite, train_data, idx_dev, w_dev, start, key)
                        started += fit_log.compile(functools.partial(program.lower, *args))
                        if val_data is not None:
                            eval_program, eval_args, _ = self._eval_plan(state, val_data)
                            lower_eval = functools.partial(eval_program.lower, *eval_args, 0)
                            started += fit_log.compile(lower_eval, "validation")
                        history.compile_seconds = fit_log.compile_seconds
                    state, sums, nonfinite = self.placement.sync(
                        program(state, sums, nonfinite, train_data, idx_dev, w_dev, start, key)
                    )
                    done_before = epoch * steps_per_epoch + min(start, steps_per_epoch)
                    done = epoch * steps_per_epoch + min(start + n_steps, steps_per_epoch)
                    bar.update(done - done_before)
                    if saver and start + n_steps < idx.shape[0] and (saver.due(done_before, done) or guard.requested):
                        self._raise_if_diverged(nonfinite, sums, epoch)  # never save a broken state
                        saver.save(done, state, sums, key, Position(epoch, start + n_steps), history)
                        if guard.requested:
                            raise _interrupted(guard.requested, done, saver)
                logs = self._raise_if_diverged(nonfinite, sums, epoch)
                if val_data is not None:
                    logs.update({f"val_{k}": v for k, v in self.evaluate_on_device(state, val_data).items()})
                if hasattr(state.opt_state, "hyperparams"):
                    logs["lr"] = float(current_learning_rate(state.opt_state))  # the rate this epoch's last step used
                logs["epoch_seconds"] = time.perf_counter() - started
                for name, value in logs.items():
                    history.values[name].append(value)
                fit_log.epoch_end(epoch + 1, logs, samples=n_rows - first_row * batch_size)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k not in ("lr", "epoch_seconds")})
                if not self._checked_logits:
                    self._warn_if_probabilities(state, x)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, logs, state)
                stop = stopper is not None and stopper.update(epoch + 1, logs, trained_weights(state))
                history.stopped_early = stop
                finished = stop or epoch + 1 == config.epochs
                if saver and (finished or guard.requested or saver.due_at_epoch_end(epoch + 1)):
                    saver.save(
                        (epoch + 1) * steps_per_epoch,
                        state,
                        sums,
                        key,
                        Position(epoch + 1, 0),
                        history,
                        logs=logs,
                        finished=finished,
                    )
                    if guard.requested and not finished:
                        raise _interrupted(guard.requested, (epoch + 1) * steps_per_epoch, saver)
                if stop:
                    break
        bar.close()
        if saver:
            saver.close()
        if stopper is not None:
            history.best_epoch = stopper.best_epoch
            best = stopper.best_params
            state = (
                state.replace(params=best[0], model_state=best[1])
                if trained_weights(state) is not state.params
                else state.replace(params=best)
            )
        return state, history

    def _raise_if_diverged(self, nonfinite: jax.Array, sums: dict, epoch: int) -> dict[str, float]:
        """The epoch's logs so far; raises TrainingDiverged if any step's loss was not finite."""
        logs = self._finish(sums)
        if int(nonfinite) >= 0:
            raise TrainingDiverged(
                f"loss became {logs['loss']} at step {int(nonfinite) + 1} (epoch {epoch + 1}); lower the "
                "learning rate or check the inputs for NaN"
            )
        return logs


def _weights_pair(state: Any) -> tuple[PyTree, PyTree]:
    """(params, model_state) of `state`; model_state {} for states without collections."""
    return state.params, getattr(state, "model_state", None) or {}


def _resume_line(restored: Restored, epochs: int, directory: Any) -> str:
    """The one line that says a run resumed (or had nothing left to do), with the step and epoch."""
    done, where = restored.position.epoch, f"checkpoint step {restored.step} in {directory}"
    if restored.finished and restored.stopped_early:
        return f"{where}: the run stopped early after {done} epochs; nothing to train (--restart trains again)"
    if restored.finished and done >= epochs:
        return f"{where}: the run finished its {done} epochs; nothing to train"
    batch = f", batch {restored.position.row}" if restored.position.row else ""
    return f"resuming from {where} at epoch {done + 1}{batch} of {epochs}"


def _interrupted(signal_name: str, step: int, saver: RunCheckpointer) -> TrainingInterrupted:
    saver.close()
    return TrainingInterrupted(
        f"{signal_name} received: stopped after step {step} with a checkpoint in {saver.directory}. "
        "Run the same command again to resume from it (or pass --restart to start over)."
    )
