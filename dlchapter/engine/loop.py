"""Compiled multi-step programs and the batch plan they walk.

`train_chunk` runs several train steps in one compiled call (a `fori_loop`
over the chunk's active steps), gathering each batch on the device from an index matrix;
`batch_plan` builds that matrix with a 0/1 weight per row so every batch has
the same shape (the last batch's weight-0 slots wrap around to the epoch's
first rows, so BatchNorm's batch statistics see only training rows);
`epoch_order` makes the batch order a function of (seed, epoch) only, which is
what lets a run resume mid-epoch exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict[str, jax.Array]
PyTree = Any


def take_rows(tree: PyTree, idx: Any) -> PyTree:
    """Rows `idx` of every leaf of `tree` (an array or a pytree of arrays with a leading batch axis)."""
    return jax.tree.map(lambda a: a[idx], tree)


def num_rows(tree: PyTree, name: str = "x") -> int:
    """The common leading (batch) axis length of every leaf of `tree`.

    Raises ValueError when `tree` has no arrays, a leaf is a scalar, or the leaves disagree.
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves:
        raise ValueError(f"{name} holds no arrays")
    sizes = {jax.tree_util.keystr(path) or name: (np.shape(leaf) or (None,))[0] for path, leaf in leaves}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"every array of {name} needs the same leading (batch) axis; got rows {sizes}")
    return next(iter(sizes.values()))


def gather(data: Batch, idx_B: jax.Array, w_B: jax.Array) -> Batch:
    """One batch: rows `idx_B` of `data["x"]` and `data["y"]` (arrays or pytrees) and their weights."""
    return {"x": take_rows(data["x"], idx_B), "y": take_rows(data["y"], idx_B), "weight": w_B}


def _add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def _first_nonfinite(first: jax.Array, step: jax.Array, loss_sum: jax.Array) -> jax.Array:
    return jnp.where((first < 0) & ~jnp.isfinite(loss_sum), step, first)


def train_chunk(
    state: PyTree,
    sums: PyTree,
    nonfinite_step: jax.Array,
    data: Batch,
    idx_SxB: jax.Array,
    w_SxB: jax.Array,
    start: jax.Array,
    key: jax.Array,
    *,
    step_fn: Callable,
    n_steps: int,
    merge: Callable = _add,
) -> tuple[PyTree, PyTree, jax.Array]:
    """`n_steps` train steps from row `start` of an epoch's index matrix.

    Rows whose weights are all zero (padding up to a multiple of `n_steps`)
    leave the state untouched: `batch_plan` pads only at the end, so the active
    steps are a prefix of the chunk and a `fori_loop` runs exactly those (a
    scan would run every step and select the old state back for padding, a
    select over params and optimizer moments: up to 15% of an MLP step,
    benchmarks/NOTES.md). Returns the state, the running sums and the first
    step (or -1) whose loss was not finite. `merge(sums, batch_sums)` folds in a batch (default: add).
    """
    idx_KxB = jax.lax.dynamic_slice_in_dim(idx_SxB, start, n_steps)
    w_KxB = jax.lax.dynamic_slice_in_dim(w_SxB, start, n_steps)
    if n_steps == 1:
        step = state.step
        state, batch_sums = step_fn(state, gather(data, idx_KxB[0], w_KxB[0]), key)
        return state, merge(sums, batch_sums), _first_nonfinite(nonfinite_step, step, batch_sums["loss"]["sum"])

    def body(i, carry):
        state, sums, first = carry
        new_state, batch_sums = step_fn(state, gather(data, idx_KxB[i], w_KxB[i]), key)
        return new_state, merge(sums, batch_sums), _first_nonfinite(first, state.step, batch_sums["loss"]["sum"])

    n_active = jnp.sum(jnp.any(w_KxB > 0, axis=1))
    return jax.lax.fori_loop(0, n_active, body, (state, sums, nonfinite_step))


def eval_chunk(
    params: PyTree,
    sums: PyTree,
    data: Batch,
    idx_SxB: jax.Array,
    w_SxB: jax.Array,
    start: jax.Array,
    *,
    step_fn: Callable,
    n_steps: int,
    merge: Callable = _add,
) -> PyTree:
    """Accumulate evaluation sums over `n_steps` padded batches from row `start`."""
    idx_KxB = jax.lax.dynamic_slice_in_dim(idx_SxB, start, n_steps)
    w_KxB = jax.lax.dynamic_slice_in_dim(w_SxB, start, n_steps)

    def body(sums, inputs):
        return merge(sums, step_fn(params, gather(data, *inputs))), None

    if n_steps == 1:
        return body(sums, (idx_KxB[0], w_KxB[0]))[0]
    return jax.lax.scan(body, sums, (idx_KxB, w_KxB))[0]


def batch_plan(order: np.ndarray, batch_size: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Index and 0/1 weight matrices (steps, batch_size), int32 and float32, covering `order` once.

    `order`: int (rows,) row indices in visiting order (e.g. `epoch_order`). The first `order.size` slots
    hold `order` with weight 1. Whole weight-0 batches are added until the number of steps is a multiple
    of `multiple`. Every other slot (the rest of the last partial batch, then those batches) wraps
    around to the start of `order` with weight 0: slot j holds `order[j % order.size]`. Losses,
    gradients and metrics ignore those rows, but a layer that reads its whole batch in training
    (BatchNorm's batch statistics) sees them, so they are rows of the same epoch's `order`, never rows
    outside it (e.g. another fold's or a validation row). Keras runs a smaller last batch instead.
    An empty `order` gives one batch of index 0, weight 0.
    """
    n_steps = max(1, math.ceil(order.size / batch_size))
    n_steps = math.ceil(n_steps / multiple) * multiple
    slots = np.arange(n_steps * batch_size)
    order = np.asarray(order, np.int32).ravel()
    idx = order[slots % order.size] if order.size else np.zeros(slots.size, np.int32)
    weight = (slots < order.size).astype(np.float32)
    return idx.reshape(n_steps, batch_size), weight.reshape(n_steps, batch_size)


def epoch_order(n_rows: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order rows are visited in one epoch: a function of (seed, epoch) only."""
    if not shuffle:
        return np.arange(n_rows)
    return np.random.default_rng([seed, epoch]).permutation(n_rows)
