"""On-device losses, each a weighted mean over examples.

Every loss takes the model's raw outputs (values for regression, logits for
classification: never probabilities, so the cross-entropies stay numerically
stable), the targets and a per-example weight `w_B` (1 for a real row, 0 for
padding). Padded rows contribute nothing; the mean is over real rows only, so a
padded final batch gives exactly the loss of the smaller batch Keras would use.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
LossFn = Callable[[Array, Array, Array], Array]


def weighted_mean(values_B: Array, w_B: Array) -> Array:
    """Mean of per-example values over rows with non-zero weight (0 when all weights are 0)."""
    return jnp.sum(values_B * w_B) / jnp.maximum(jnp.sum(w_B), 1e-12)


def _as_column(values: Array) -> Array:
    """Regression outputs of shape (B, 1) and targets of shape (B,) meet as (B, k)."""
    return values.reshape(values.shape[0], -1)


def squared_error(pred_B1: Array, y_B: Array) -> Array:
    """Per-example squared error, averaged over output columns."""
    return jnp.mean((_as_column(pred_B1) - _as_column(y_B)) ** 2, axis=-1)


def absolute_error(pred_B1: Array, y_B: Array) -> Array:
    """Per-example absolute error, averaged over output columns."""
    return jnp.mean(jnp.abs(_as_column(pred_B1) - _as_column(y_B)), axis=-1)


def binary_cross_entropy_per_example(logits_B1: Array, y_B: Array) -> Array:
    """-[y log σ(z) + (1-y) log(1-σ(z))], computed from logits z without overflow."""
    logits = _as_column(logits_B1)
    labels = _as_column(y_B).astype(logits.dtype)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)


def categorical_cross_entropy_per_example(logits_BxC: Array, y_BxC: Array) -> Array:
    """-Σ_c y_c log softmax(z)_c for one-hot (or soft) targets."""
    return optax.softmax_cross_entropy(logits_BxC, y_BxC.astype(logits_BxC.dtype))


def sparse_categorical_cross_entropy_per_example(logits_BxC: Array, y_B: Array) -> Array:
    """-log softmax(z)_y for integer class targets."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B.astype(jnp.int32))


def mse(pred_B1: Array, y_B: Array, w_B: Array) -> Array:
    """Mean squared error."""
    return weighted_mean(squared_error(pred_B1, y_B), w_B)


def mae(pred_B1: Array, y_B: Array, w_B: Array) -> Array:
    """Mean absolute error."""
    return weighted_mean(absolute_error(pred_B1, y_B), w_B)


def binary_cross_entropy(logits_B1: Array, y_B: Array, w_B: Array) -> Array:
    """Binary cross-entropy from logits (Keras's `binary_crossentropy` on a sigmoid output)."""
    return weighted_mean(binary_cross_entropy_per_example(logits_B1, y_B), w_B)


def categorical_cross_entropy(logits_BxC: Array, y_BxC: Array, w_B: Array) -> Array:
    """Categorical cross-entropy from logits and one-hot targets."""
    return weighted_mean(categorical_cross_entropy_per_example(logits_BxC, y_BxC), w_B)


def sparse_categorical_cross_entropy(logits_BxC: Array, y_B: Array, w_B: Array) -> Array:
    """Categorical cross-entropy from logits and integer targets."""
    return weighted_mean(sparse_categorical_cross_entropy_per_example(logits_BxC, y_B), w_B)


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "mae": mae,
    "binary_crossentropy": binary_cross_entropy,
    "categorical_crossentropy": categorical_cross_entropy,
    "sparse_categorical_crossentropy": sparse_categorical_cross_entropy,
}


def get_loss(name: str) -> LossFn:
    """The loss registered under `name` (Keras's spelling)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}") from None


def l2_penalty(params: object, l2: float | Array) -> Array:
    """Keras's L2 regularizer summed over every kernel: l2 * Σ w², biases excluded.

    A kernel is any parameter leaf named "kernel" (Dense and Conv weights).
    """
    total = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if _leaf_name(path) == "kernel":
            total = total + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
    return l2 * total


def _leaf_name(path: tuple) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))
