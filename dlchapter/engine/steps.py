"""The pure steps the engine compiles: `train_step` (one gradient step) and `eval_step` (one batch's sums).

Both take a padded batch {"x": pytree (B, ...), "y": (B, ...), "weight": (B,) float32 0/1} and return metric
sums {name: state} that `dlchapter.engine.metrics` merges and finishes; no hyperparameter literals inside. The model is
called through `state.apply_fn` with linen's convention (`dlchapter.engine.train_state`), so a linen and an nnx module
take the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dlchapter.engine import losses
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.loop import Batch
from dlchapter.engine.train_state import TrainState, train_kwargs, variables_of

PyTree = Any


def train_step(
    state: TrainState, batch: Batch, key: jax.Array, *, loss_fn: losses.LossFn, metrics: tuple
) -> tuple[TrainState, dict]:
    """One gradient step on a (possibly padded) batch; returns the new state and batch sums."""
    dropout_key = jax.random.fold_in(key, state.step)
    model_state = getattr(state, "model_state", None) or {}
    kwargs = train_kwargs(state.apply_fn, True)

    def compute_loss(params: PyTree) -> tuple[jax.Array, tuple[jax.Array, PyTree]]:
        variables = variables_of(params, model_state)
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
    outputs = apply_fn(variables_of(params, model_state), batch["x"], **train_kwargs(apply_fn, False))
    count = jnp.sum(batch["weight"])
    sums = {"loss": {"sum": loss_fn(outputs, batch["y"], batch["weight"]) * count, "count": count}}
    sums.update(metrics_lib.batch_stats(metrics, outputs, batch["y"], batch["weight"]))
    return sums
