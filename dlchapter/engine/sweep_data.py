"""The data, models and results of a many-models program (`dlchapter.engine.many_models`).

`ModelSpec` is what one model may change without recompiling; `SweepResult` what a program returns.
The data: arrays with a leading fold axis and each fold's rows.

`SweepData` holds inputs and targets with a leading fold axis of 1 (shared by every fold) or K
(one copy per fold, e.g. standardized by that fold's training rows), and each fold's training and
validation rows as index arrays. `kfold_data` builds one from `dlchapter.engine.crossval` splits.
Inputs may be one array or a pytree of arrays (a dict of features); every leaf carries the fold axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter.data.preprocessing import StandardScaler
from dlchapter.engine.crossval import Split
from dlchapter.engine.loop import num_rows

PyTree = Any


@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep: what may differ between models without recompiling."""

    seed: int = 0
    learning_rate: float = 1e-3
    l2: float = 0.0
    dropout: float = 0.0  # needs a module whose __call__ takes `keep_prob` (SweepMLP)
    decay: float = 0.0  # the chapter's a0 / (1 + decay * epoch)
    fold: int = 0


@dataclass
class SweepResult:
    """Stacked final weights (best epoch's under early stopping) and per-model histories (N, epochs).

    `params` and `model_state` (the mutable collections, {} without any) have a leading axis N;
    `history[name]` is float32 (N, epochs), NaN after a model stopped; the others are (N,) arrays.
    """

    specs: tuple[ModelSpec, ...]
    params: PyTree
    history: dict[str, np.ndarray]
    best_epoch: np.ndarray
    epochs_run: np.ndarray
    stopped_early: np.ndarray
    diverged: np.ndarray
    compile_seconds: float = 0.0  # tracing and compiling (first call of each shape only)
    run_seconds: float = 0.0  # everything else: initialisation, plans, training, fetching the histories
    model_state: PyTree = field(default_factory=dict)

    def model_params(self, i: int) -> PyTree:
        """Model i's weights, unstacked."""
        return jax.tree.map(lambda a: a[i], self.params)

    def model_variables(self, i: int) -> dict:
        """Model i's variables {"params": ..., **collections}, unstacked (what `module.apply` takes)."""
        return jax.tree.map(lambda a: a[i], {"params": self.params, **self.model_state})


def check_specs(specs: Sequence[ModelSpec]) -> None:
    """Raises TypeError for an entry that is not a ModelSpec, ValueError for a seed outside [0, 2**31) (the
    programs carry seeds as int32), a learning rate that is not finite and > 0, or an L2 or decay that is
    not finite and >= 0. Dropout and fold are checked against the module and the data by `ManyModels`."""
    for s in specs:
        if not isinstance(s, ModelSpec):
            raise TypeError(f"specs must be ModelSpec objects, got {type(s).__name__}: {s!r}")
        if not isinstance(s.seed, int | np.integer) or not 0 <= s.seed < 2**31:
            raise ValueError(f"bad model spec {s}: seed must be an integer in [0, 2**31)")
        if not (math.isfinite(s.learning_rate) and s.learning_rate > 0):
            raise ValueError(f"bad model spec {s}: learning_rate must be finite and > 0")
        for name in ("l2", "decay"):
            if not (math.isfinite(getattr(s, name)) and getattr(s, name) >= 0):
                raise ValueError(f"bad model spec {s}: {name} must be finite and >= 0")


def _rows_per_fold(tree: PyTree, name: str) -> int:
    """The rows axis (axis 1) shared by every leaf of `tree` (leaves are (folds, rows, ...))."""
    shapes = [np.shape(a) for a in jax.tree.leaves(tree)]
    rows = {shape[1] if len(shape) >= 2 else None for shape in shapes}
    if not shapes or None in rows or len(rows) != 1:
        raise ValueError(f"every array of {name} needs shape (folds, rows, ...) with the same rows; got {shapes}")
    return rows.pop()


def check_data(x: PyTree, y: PyTree, row_sets: Sequence[np.ndarray] | None, where: str) -> int:
    """Rows per fold of (x, y) (fold axis first); raises ValueError when x and y differ in rows or fold
    axes, or an index of `row_sets` lies outside [0, rows). `where` names the pair in the message."""
    fold_count(x, y)
    rows, y_rows = _rows_per_fold(x, f"{where} x"), _rows_per_fold(y, f"{where} y")
    if rows != y_rows:
        raise ValueError(f"{where}: x has {rows} rows per fold but y has {y_rows}; they must match")
    for f, idx in enumerate(row_sets or ()):
        idx = np.asarray(idx)
        if idx.size and (idx.min() < 0 or idx.max() >= rows):
            raise ValueError(f"{where}: fold {f}'s rows index outside [0, {rows}) (min {idx.min()}, max {idx.max()})")
    return rows


def stack_plans(plans: Sequence[tuple[np.ndarray, np.ndarray]], min_steps: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(P, steps, batch) index and weight matrices: each plan padded with weight-0 steps to the longest.

    A padding step repeats the plan's own batches (step s holds its step s % steps), so a model's plan
    only ever names its own rows (`loop.batch_plan`); with weight 0 everywhere such a step never runs.
    """
    n_steps, batch = max(min_steps, *(i.shape[0] for i, _ in plans)), plans[0][0].shape[1]
    idx, weight = np.zeros((len(plans), n_steps, batch), np.int32), np.zeros((len(plans), n_steps, batch), np.float32)
    for p, (i, w) in enumerate(plans):
        idx[p], weight[p, : len(w)] = i[np.arange(n_steps) % len(i)], w
    return idx, weight


def fold_count(*trees: PyTree) -> int:
    """The fold axis length shared by every leaf: 1 or K (leaves with 1 are shared by every fold)."""
    sizes = {np.shape(a)[0] for t in trees for a in jax.tree.leaves(t)}
    if len(sizes - {1}) > 1:
        raise ValueError(f"every array needs a fold axis of 1 or K; got fold axes {sorted(sizes)}")
    return max(sizes)


def flat_folds(tree: PyTree, k: int) -> PyTree:
    """Leaves (1 or k, rows, ...) as (k * rows, ...): row r of fold f becomes row f * rows + r."""

    def flat(a):
        a = np.asarray(a)
        return jnp.asarray(np.broadcast_to(a, (k, *a.shape[1:])).reshape(-1, *a.shape[2:]))

    return jax.tree.map(flat, tree)


def _with_fold_axis(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda a: np.asarray(a)[None], tree)


@dataclass(frozen=True)
class SweepData:
    """Arrays with a leading fold axis, (1 or K, rows, ...), and each fold's training and validation rows.

    `x` and `y` are arrays or pytrees of arrays; a fold axis of 1 is shared by every fold. Validation rows
    index `x_val`/`y_val`, or `x`/`y` when those are None (k-fold: both sides are rows of the same arrays).
    """

    x: PyTree
    y: PyTree
    train_rows: tuple[np.ndarray, ...]
    val_rows: tuple[np.ndarray, ...] | None = None
    x_val: PyTree | None = None
    y_val: PyTree | None = None

    @property
    def n_folds(self) -> int:
        return len(self.train_rows)

    def check(self) -> None:
        """Raises ValueError when x and y (or x_val and y_val) differ in rows or fold axes, or a training or
        validation row index lies outside its arrays' rows."""
        check_data(self.x, self.y, self.train_rows, "training data")
        if self.x_val is None:
            check_data(self.x, self.y, self.val_rows, "validation rows of the training data")
        else:
            check_data(self.x_val, self.y_val, self.val_rows, "validation data")

    @classmethod
    def holdout(cls, x: PyTree, y: PyTree, x_val: PyTree | None = None, y_val: PyTree | None = None) -> SweepData:
        """One fold: train on every row of (x, y) (arrays or pytrees, (rows, ...)), validate on (x_val, y_val)."""
        val = (None, None, None)
        if x_val is not None:
            val = ((np.arange(num_rows(x_val)),), _with_fold_axis(x_val), _with_fold_axis(y_val))
        return cls(_with_fold_axis(x), _with_fold_axis(y), (np.arange(num_rows(x)),), *val)

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
        """Folds as 0/1 masks (K, rows) over the rows of (x, y); `x_per_fold`: x is (K, rows, ...), one copy per fold.

        Raises ValueError when a row is on both sides of a fold or the masks do not fit x and y.
        """
        train, val = np.asarray(train_mask_KxN) > 0, np.asarray(val_mask_KxN) > 0
        if (train & val).any():
            raise ValueError("a row is both a training and a validation row of the same fold")
        x_K = x if x_per_fold else x[None]
        if x_K.shape[0] not in (1, train.shape[0]) or x_K.shape[1] != train.shape[1] or len(y) != train.shape[1]:
            raise ValueError(f"masks {train.shape} do not fit x {x.shape} and y {y.shape}")
        return cls(x_K, y[None], tuple(map(np.flatnonzero, train)), tuple(map(np.flatnonzero, val)))


def kfold_data(x: np.ndarray, y: np.ndarray, splits: Sequence[Split], *, scale: bool = True) -> SweepData:
    """k folds over (x, y); with `scale`, fold f's inputs are standardized by its training rows only (float32)."""
    train_mask, val_mask = np.zeros((len(splits), len(x)), bool), np.zeros((len(splits), len(x)), bool)
    for f, (train_idx, val_idx) in enumerate(splits):
        train_mask[f, train_idx], val_mask[f, val_idx] = True, True
    x_K = x
    if scale:
        x_K = np.stack([StandardScaler.fit(x, rows=idx).transform(x) for idx, _ in splits]).astype(np.float32)
    return SweepData.from_masks(x_K, y, train_mask, val_mask, x_per_fold=scale)
