"""Many models in one compiled program: vmap over seeds, hyperparameters and folds.

N dense networks of one architecture train together: their train states are
stacked on a leading axis and one `jax.vmap`-ed epoch program updates them all.
What differs between models is data, never shape, so changing it never
recompiles: the seed (initial weights, dropout keys, batch order), learning
rate and L2 (injected optimizer hyperparameters), decay, dropout rate (a
traced keep-prob, `SweepMLP`) and fold.

Folds: the data are uploaded once with a leading fold axis (each fold may be
standardized by its own training rows) and every fold is a pair of 0/1 row
masks over the same arrays. A model's batches are drawn from its fold's rows
with the padded index/weight plan of `dlchapter.engine.loop`, so every model has the
same shapes, the program compiles once, and model i computes exactly what
`Trainer.fit` computes on that fold's rows. Per-model early stopping (Keras's rule,
`dlchapter.engine.callbacks`) runs on the device after each epoch: best value, wait and a `frozen` mask are updated with
`jnp.where`; a frozen model's updates are masked out and its best weights kept.
Histories come back as (N, epochs) arrays, NaN after a model stopped. A model
whose loss turns NaN/Inf is frozen and flagged `diverged`; the others go on.
"""

from __future__ import annotations

import collections
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.training.train_state import TrainState

from dlchapter.data.preprocessing import StandardScaler
from dlchapter.engine import losses
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.callbacks import EarlyStopping, early_stopping_update
from dlchapter.engine.crossval import Split
from dlchapter.engine.loop import batch_plan, epoch_order
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, eval_step, train_step
from dlchapter.models.dense import probabilities
from dlchapter.models.sweep_mlp import SweepMLP

PyTree = Any


@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep: what may differ between models without recompiling."""

    seed: int = 0
    learning_rate: float = 1e-3
    l2: float = 0.0
    dropout: float = 0.0  # rate after every hidden layer in `SweepConfig.dropout_layers`
    decay: float = 0.0  # the chapter's a0 / (1 + decay * epoch)
    fold: int = 0


@dataclass(frozen=True)
class SweepConfig:
    """What all models share (and what a compiled program depends on)."""

    task: str = "regression"
    hidden: tuple[int, ...] = (100, 200)
    out_features: int = 1
    activation: str = "relu"
    dropout_layers: tuple[int, ...] = ()
    optimizer: str = "adam"
    momentum: float | None = None
    clip_global_norm: float | None = None
    epochs: int = 100
    batch_size: int = 128
    shuffle: bool = True
    monitor: str | None = "val_loss"  # early stopping per model; None: every model runs all epochs
    patience: int = 4
    min_delta: float = 0.0
    mode: str = "auto"
    eval_batch_size: int = 1024

    def model(self) -> SweepMLP:
        return SweepMLP(self.hidden, self.out_features, self.activation, self.dropout_layers, TASKS[self.task].head)


@dataclass(frozen=True)
class SweepData:
    """Arrays with a leading fold axis, (1 or K, rows, ...), and each fold's training and validation rows.

    A fold axis of 1 is shared by every fold. Validation rows index `x_val`/`y_val`,
    or `x`/`y` when those are None (k-fold: both sides are rows of the same arrays).
    """

    x: np.ndarray
    y: np.ndarray
    train_rows: tuple[np.ndarray, ...]
    val_rows: tuple[np.ndarray, ...] | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def n_folds(self) -> int:
        return len(self.train_rows)

    @classmethod
    def holdout(
        cls, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None
    ) -> SweepData:
        """One fold: train on every row of (x, y), validate on (x_val, y_val) if given."""
        val = (None, None, None) if x_val is None else ((np.arange(len(x_val)),), x_val[None], y_val[None])
        return cls(x[None], y[None], (np.arange(len(x)),), *val)

    @classmethod
    def from_masks(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        train_mask_KxN: np.ndarray,
        val_mask_KxN: np.ndarray,
        *,
        x_per_fold: bool = False,
    ) -> SweepData:
        """Folds as 0/1 masks over the rows of (x, y); `x_per_fold`: x is (K, rows, ...), one copy per fold."""
        train, val = np.asarray(train_mask_KxN) > 0, np.asarray(val_mask_KxN) > 0
        if (train & val).any():
            raise ValueError("a row is both a training and a validation row of the same fold")
        x_K = x if x_per_fold else x[None]
        if x_K.shape[0] not in (1, train.shape[0]) or x_K.shape[1] != train.shape[1] or len(y) != train.shape[1]:
            raise ValueError(f"masks {train.shape} do not fit x {x.shape} and y {y.shape}")
        return cls(x_K, y[None], tuple(map(np.flatnonzero, train)), tuple(map(np.flatnonzero, val)))


def kfold_data(x: np.ndarray, y: np.ndarray, splits: Sequence[Split], *, scale: bool = True) -> SweepData:
    """k folds over (x, y); with `scale`, fold f's inputs are standardized by its training rows only."""
    train_mask, val_mask = np.zeros((len(splits), len(x)), bool), np.zeros((len(splits), len(x)), bool)
    for f, (train_idx, val_idx) in enumerate(splits):
        train_mask[f, train_idx], val_mask[f, val_idx] = True, True
    x_K = (
        np.stack([StandardScaler.fit(x, rows=train_idx).transform(x) for train_idx, _ in splits]).astype(np.float32)
        if scale
        else x
    )
    return SweepData.from_masks(x_K, y, train_mask, val_mask, x_per_fold=scale)


def _rows(a: jax.Array, fold: jax.Array, idx_B: jax.Array) -> jax.Array:
    """Rows `idx_B` of fold `fold` of a (1 or K, rows, ...) array."""
    return a[fold if a.shape[0] > 1 else 0, idx_B]


class Member(struct.PyTreeNode):
    """One model's train state, traced hyperparameters and early-stopping state (stacked: leading axis N)."""

    state: TrainState
    lr0: jax.Array
    decay: jax.Array
    keep_prob: jax.Array
    fold: jax.Array
    steps_per_epoch: jax.Array
    key: jax.Array  # dropout stream
    best: jax.Array
    best_epoch: jax.Array  # 1-based; 0 before the first epoch
    wait: jax.Array
    epochs_run: jax.Array
    frozen: jax.Array
    stopped: jax.Array
    diverged: jax.Array
    best_params: PyTree


@dataclass
class SweepResult:
    """Stacked final weights (best epoch's under early stopping) and per-model histories (N, epochs)."""

    specs: tuple[ModelSpec, ...]
    params: PyTree
    history: dict[str, np.ndarray]
    best_epoch: np.ndarray
    epochs_run: np.ndarray
    stopped_early: np.ndarray
    diverged: np.ndarray
    compile_seconds: float = 0.0  # tracing and compiling (first call of each shape only)
    run_seconds: float = 0.0  # everything else: initialisation, plans, training, fetching the histories

    def model_params(self, i: int) -> PyTree:
        """Model i's weights, unstacked."""
        return jax.tree.map(lambda a: a[i], self.params)


def _ratio(s: dict, name: str) -> jax.Array:
    return s[name] / jnp.maximum(s["count"], 1e-12)


def _r2(s: dict) -> jax.Array:
    sst = s["sum_y2"] - s["sum_y"] ** 2 / jnp.maximum(s["count"], 1e-12)
    return jnp.where(sst > 0, 1.0 - s["sse"] / jnp.where(sst > 0, sst, 1.0), jnp.nan)


# `metrics_lib.METRICS[name].result` on the device, from the same sums
_FINISH = {
    "accuracy": lambda s: _ratio(s, "correct"),
    "mse": lambda s: _ratio(s, "sse"),
    "mae": lambda s: _ratio(s, "sae"),
    "rmse": lambda s: jnp.sqrt(_ratio(s, "sse")),
    "r2": _r2,
}


def _device_results(metrics: tuple[metrics_lib.Metric, ...], sums: dict) -> dict[str, jax.Array]:
    """`metrics_lib.finish` on the device: loss and metric values from accumulated sums."""
    return {"loss": _ratio(sums["loss"], "sum"), **{m.name: _FINISH[m.name](sums[m.name]) for m in metrics}}


def _where(cond: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _zeros_like_shapes(fn, *args) -> PyTree:
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))


def _evaluate_member(params, apply_fn, fold, x, y, idx_VxB, w_VxB, *, loss_fn, metrics) -> dict:
    """Sums of `eval_step` over a padded plan of rows of fold `fold`, dropout off."""

    def step(p, idx_B, w_B):
        return eval_step(
            p,
            apply_fn,
            {"x": _rows(x, fold, idx_B), "y": _rows(y, fold, idx_B), "weight": w_B},
            loss_fn=loss_fn,
            metrics=metrics,
        )

    def body(sums, inputs):
        return jax.tree.map(jnp.add, sums, step(params, *inputs)), None

    return jax.lax.scan(body, _zeros_like_shapes(step, params, idx_VxB[0], w_VxB[0]), (idx_VxB, w_VxB))[0]


def _member_epoch(
    m: Member,
    data: dict,
    idx_SxB,
    w_SxB,
    val_idx_KxVxB,
    val_w_KxVxB,
    epoch,
    *,
    loss_fn,
    metrics,
    rule: EarlyStopping | None,
) -> tuple[Member, dict]:
    """One epoch of one model (vmapped over models): masked train steps, validation, early stopping."""
    was_frozen = m.frozen
    train_fn = functools.partial(train_step, loss_fn=loss_fn, metrics=metrics)

    def step(state: TrainState, idx_B, w_B):
        count = jnp.floor_divide(state.step, m.steps_per_epoch)
        hyper = {**state.opt_state.hyperparams, "learning_rate": m.lr0 / (1.0 + m.decay * count)}
        state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
        with_rate = state.replace(apply_fn=functools.partial(state.apply_fn, keep_prob=m.keep_prob))
        new, sums = train_fn(
            with_rate,
            {"x": _rows(data["x"], m.fold, idx_B), "y": _rows(data["y"], m.fold, idx_B), "weight": w_B},
            m.key,
        )
        return new.replace(apply_fn=state.apply_fn), sums

    def body(carry, inputs):
        state, sums, bad = carry
        new_state, batch_sums = step(state, *inputs)
        active = (jnp.sum(inputs[1]) > 0) & ~was_frozen
        bad = bad | (active & ~jnp.isfinite(batch_sums["loss"]["sum"]))
        return (_where(active, new_state, state), jax.tree.map(jnp.add, sums, batch_sums), bad), None

    zero = _zeros_like_shapes(lambda s, i, w: step(s, i, w)[1], m.state, idx_SxB[0], w_SxB[0])
    (state, sums, bad), _ = jax.lax.scan(body, (m.state, zero, jnp.zeros((), bool)), (idx_SxB, w_SxB))
    logs = _device_results(metrics, sums)
    if val_idx_KxVxB is not None:
        val_sums = _evaluate_member(
            state.params,
            state.apply_fn,
            m.fold,
            data["x_val"],
            data["y_val"],
            val_idx_KxVxB[m.fold],
            val_w_KxVxB[m.fold],
            loss_fn=loss_fn,
            metrics=metrics,
        )
        logs.update({f"val_{k}": v for k, v in _device_results(metrics, val_sums).items()})
    logs["lr"] = state.opt_state.hyperparams["learning_rate"]
    running = ~was_frozen
    m = m.replace(state=state, epochs_run=jnp.where(running, epoch, m.epochs_run))
    if rule is not None:
        value = logs[rule.monitor]
        judged = running & ~bad
        improved, _, wait, stop = early_stopping_update(
            m.best,
            m.wait,
            value,
            mode="max" if rule.maximize else "min",
            min_delta=rule.min_delta,
            patience=rule.patience,
            first=m.best_epoch == 0,
        )
        improved, stop = judged & improved, judged & stop
        wait = jnp.where(judged, wait, m.wait)
        m = m.replace(
            best=jnp.where(improved, value, m.best),
            best_epoch=jnp.where(improved, epoch, m.best_epoch),
            wait=wait,
            best_params=_where(improved, state.params, m.best_params),
            stopped=m.stopped | stop,
        )
    m = m.replace(frozen=was_frozen | m.stopped | bad, diverged=m.diverged | bad)
    logs = {k: jnp.where(running, v, jnp.nan) for k, v in logs.items()}
    return m, {**logs, "frozen": m.frozen}


class SweepTrainer:
    """Compiles a sweep's epoch program once per shape and trains N models with it.

    `traces` counts how often each program was traced: changing hyperparameters,
    seeds or folds (with N unchanged) leaves it at 1.
    """

    def __init__(self, config: SweepConfig):
        known = ["loss", *TASKS[config.task].metrics]
        if config.monitor is not None and config.monitor.removeprefix("val_") not in known:
            raise ValueError(f"cannot monitor {config.monitor!r}; the task logs {known} (and val_ of each)")
        self.config = config
        self.model = config.model()
        self.traces: collections.Counter[str] = collections.Counter()
        self._loss_fn = losses.get_loss(TASKS[config.task].loss)
        self._metrics = metrics_lib.get_metrics(TASKS[config.task].metrics)
        self.rule = (
            EarlyStopping(config.monitor, config.patience, config.min_delta, config.mode) if config.monitor else None
        )
        epoch = functools.partial(_member_epoch, loss_fn=self._loss_fn, metrics=self._metrics, rule=self.rule)
        self._epoch = jax.jit(
            self._counted("epoch", jax.vmap(epoch, in_axes=(0, None, 0, 0, None, None, None))), donate_argnums=0
        )
        self._init = jax.jit(self._counted("init", jax.vmap(self._init_member, in_axes=(0, 0, 0, 0, 0, 0, 0, None))))
        evaluate = functools.partial(_evaluate_member, loss_fn=self._loss_fn, metrics=self._metrics)
        self._evaluate = jax.jit(
            jax.vmap(
                lambda p, f, x, y, i, w: _device_results(self._metrics, evaluate(p, self.model.apply, f, x, y, i, w)),
                in_axes=(0, 0, None, None, None, None),
            )
        )
        self._predict = jax.jit(
            jax.vmap(
                lambda p, f, x: self.model.apply({"params": p}, x[f if x.shape[0] > 1 else 0], train=False),
                in_axes=(0, 0, None),
            )
        )
        self._compiled: dict[Any, Any] = {}

    def _counted(self, name: str, fn):
        def traced(*args):
            self.traces[name] += 1
            return fn(*args)

        return traced

    def optimizer(self):
        """The optimizer every model shares; its learning rate and L2 are set per model in the state."""
        c = self.config
        return make_optimizer(OptimizerConfig(c.optimizer, 1.0, 0.0, 0.0, c.clip_global_norm, c.momentum))

    def _init_member(self, seed, lr0, l2, decay, keep, fold, spe, sample_x) -> Member:
        init_key, dropout_key = jax.random.split(jax.random.key(seed))
        params = self.model.init({"params": init_key}, sample_x, train=False)["params"]
        state = TrainState.create(apply_fn=self.model.apply, params=params, tx=self.optimizer())
        hyper = {**state.opt_state.hyperparams, "learning_rate": lr0, "l2": l2}
        state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
        best = jnp.asarray(-jnp.inf if self.rule and self.rule.maximize else jnp.inf, jnp.float32)
        zero, false = jnp.zeros((), jnp.int32), jnp.zeros((), bool)
        return Member(
            state, lr0, decay, keep, fold, spe, dropout_key, best, zero, zero, zero, false, false, false, params
        )

    def init(self, specs: Sequence[ModelSpec], data: SweepData) -> tuple[Member, float]:
        """Stacked initial members (model i initialised exactly as a single run with specs[i].seed), and the
        compile seconds."""
        for s in specs:
            if not 0.0 <= s.dropout < 1.0 or not 0 <= s.fold < data.n_folds:
                raise ValueError(f"bad model spec {s}: dropout must be in [0, 1) and fold in [0, {data.n_folds})")
        spe = [math.ceil(len(data.train_rows[s.fold]) / self._batch_size(data)) for s in specs]
        col = lambda name, dtype: jnp.asarray([getattr(s, name) for s in specs], dtype)  # noqa: E731
        keep = jnp.asarray(np.float32([1.0 - s.dropout for s in specs]))  # rounded once, as Flax's 1.0 - rate
        args = (
            col("seed", jnp.int32),
            col("learning_rate", jnp.float32),
            col("l2", jnp.float32),
            col("decay", jnp.float32),
            keep,
            col("fold", jnp.int32),
            jnp.asarray(spe, jnp.int32),
            jnp.asarray(data.x[0, :1]),
        )
        program, seconds = self._aot("init", self._init, *args)
        return program(*args), seconds

    def _batch_size(self, data: SweepData) -> int:  # as Trainer.fit: never larger than the (largest) training set
        return min(self.config.batch_size, max(len(r) for r in data.train_rows))

    def train_plan(self, specs: Sequence[ModelSpec], data: SweepData, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Index and weight matrices (N, steps, batch): each model's `epoch_order` over its fold's rows, as
        `Trainer.fit` walks them."""
        batch = self._batch_size(data)
        plans: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for s in specs:
            if (s.seed, s.fold) not in plans:
                rows = data.train_rows[s.fold]
                plans[s.seed, s.fold] = batch_plan(
                    rows[epoch_order(len(rows), s.seed, epoch, self.config.shuffle)], batch
                )
        return _stack_plans([plans[s.seed, s.fold] for s in specs])

    def _row_plan(self, rows: Sequence[np.ndarray]) -> tuple[jax.Array, jax.Array]:
        """(K, steps, batch) evaluation plan over each fold's rows, padded to a common number of steps."""
        batch = max(1, min(self.config.eval_batch_size, max(len(r) for r in rows)))
        idx, weight = _stack_plans([batch_plan(np.asarray(r), batch) for r in rows])
        return jnp.asarray(idx), jnp.asarray(weight)

    def _aot(self, name: str, jitted, *args) -> tuple[Any, float]:
        """`jitted` compiled ahead of time for these argument shapes, and the seconds that took (0 when cached)."""
        leaves, treedef = jax.tree.flatten(args)
        key = (name, treedef, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves))
        if key in self._compiled:
            return self._compiled[key], 0.0
        started = time.perf_counter()
        self._compiled[key] = jitted.lower(*args).compile()
        return self._compiled[key], time.perf_counter() - started

    def fit(self, specs: Sequence[ModelSpec], data: SweepData) -> SweepResult:
        """Train every model of `specs` together; stops when every model has stopped early (or at `epochs`)."""
        specs = tuple(specs)
        started = time.perf_counter()
        members, compile_seconds = self.init(specs, data)
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        device = {
            "x": x,
            "y": y,
            "x_val": x if data.x_val is None else jnp.asarray(data.x_val),
            "y_val": y if data.y_val is None else jnp.asarray(data.y_val),
        }
        val_idx, val_w = self._row_plan(data.val_rows) if data.val_rows is not None else (None, None)
        if self.rule is not None and self.rule.monitor.startswith("val_") and val_idx is None:
            raise ValueError(f"early stopping monitors {self.rule.monitor!r} but the data have no validation rows")
        logs, pending = [], None  # pending: the previous epoch's frozen mask, read one epoch late (no stall)
        for epoch in range(self.config.epochs):
            idx, weight = self.train_plan(specs, data, epoch)
            args = (
                members,
                device,
                jnp.asarray(idx),
                jnp.asarray(weight),
                val_idx,
                val_w,
                jnp.asarray(epoch + 1, jnp.int32),
            )
            program, seconds = self._aot("epoch", self._epoch, *args)
            compile_seconds += seconds
            members, epoch_logs = program(*args)
            logs.append(epoch_logs)
            if pending is not None and bool(jnp.all(pending)):
                break  # every model had stopped before this epoch: it changed nothing
            pending = epoch_logs["frozen"]
        host = jax.device_get(logs)
        run_seconds = time.perf_counter() - started - compile_seconds
        history = {k: np.full((len(specs), self.config.epochs), np.nan, np.float32) for k in host[0] if k != "frozen"}
        for k, values in history.items():
            values[:, : len(host)] = np.stack([row[k] for row in host], axis=1)
        m = jax.device_get(members.replace(state=None, best_params=None))
        params, best_epoch = (
            (members.best_params, m.best_epoch) if self.rule is not None else (members.state.params, m.epochs_run)
        )
        return SweepResult(
            specs,
            params,
            history,
            np.asarray(best_epoch),
            np.asarray(m.epochs_run),
            np.asarray(m.stopped),
            np.asarray(m.diverged),
            compile_seconds,
            run_seconds,
        )

    def evaluate(
        self, result: SweepResult, x: np.ndarray, y: np.ndarray, *, x_per_fold: bool = False
    ) -> dict[str, np.ndarray]:
        """Every model's loss and metrics on (x, y), (N,) arrays; `x_per_fold`: x is (K, rows, ...), each model
        reads its fold's."""
        idx, w = self._row_plan([np.arange(len(y))])
        x_K = jnp.asarray(x if x_per_fold else x[None])
        sums = self._evaluate(result.params, _folds(result), x_K, jnp.asarray(y)[None], idx[0], w[0])
        return {k: np.asarray(v) for k, v in jax.device_get(sums).items()}

    def predict(self, result: SweepResult, x: np.ndarray, *, x_per_fold: bool = False, raw: bool = False) -> np.ndarray:
        """(N, rows, outputs): every model's outputs (through the head unless `raw`)."""
        x_K = jnp.asarray(x if x_per_fold else x[None])
        outputs = self._predict(result.params, _folds(result), x_K)
        return np.asarray(outputs if raw else probabilities(outputs, TASKS[self.config.task].head))


def _stack_plans(plans: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(P, steps, batch) index and weight matrices: each plan padded with weight-0 steps to the longest."""
    n_steps, batch = max(i.shape[0] for i, _ in plans), plans[0][0].shape[1]
    idx, weight = np.zeros((len(plans), n_steps, batch), np.int32), np.zeros((len(plans), n_steps, batch), np.float32)
    for p, (i, w) in enumerate(plans):
        idx[p, : len(i)], weight[p, : len(w)] = i, w
    return idx, weight


def _folds(result: SweepResult) -> jax.Array:
    return jnp.asarray([s.fold for s in result.specs], jnp.int32)
