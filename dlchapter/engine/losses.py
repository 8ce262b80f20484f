"""On-device losses, each a weighted mean over examples.

Every loss takes the model's raw outputs (values for regression, logits for
classification: never probabilities, so the cross-entropies stay numerically
stable), the targets and a per-example weight `w_B` (1 for a real row, 0 for
padding). Padded rows contribute nothing; the mean is over real rows only, so a
padded final batch gives exactly the loss of the smaller batch Keras would use.

A model that ends in a sigmoid or softmax gives probabilities instead: `get_loss(name,
from_logits=False)` returns the cross-entropies on probabilities, clipped to [1e-7, 1 - 1e-7]
as Keras does (its `epsilon()`). Any callable `(outputs, targets, weights) -> scalar` is a loss too.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
LossFn = Callable[[Array, Array, Array], Array]
EPSILON = 1e-7  # Keras's backend epsilon(), the clip of probabilities before a log


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


def _clipped_log(p: Array) -> Array:
    return jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON))


def binary_cross_entropy_from_probabilities(p_B1: Array, y_B: Array, w_B: Array) -> Array:
    """-[y log p + (1-y) log(1-p)] for sigmoid outputs p (Keras's `from_logits=False`)."""
    p, labels = _as_column(p_B1), _as_column(y_B).astype(p_B1.dtype)
    per_example = -jnp.mean(labels * _clipped_log(p) + (1 - labels) * _clipped_log(1 - p), axis=-1)
    return weighted_mean(per_example, w_B)


def categorical_cross_entropy_from_probabilities(p_BxC: Array, y_BxC: Array, w_B: Array) -> Array:
    """-Σ_c y_c log p_c for softmax outputs p and one-hot targets."""
    return weighted_mean(-jnp.sum(y_BxC.astype(p_BxC.dtype) * _clipped_log(p_BxC), axis=-1), w_B)


def sparse_categorical_cross_entropy_from_probabilities(p_BxC: Array, y_B: Array, w_B: Array) -> Array:
    """-log p_y for softmax outputs p and integer targets."""
    p_y = jnp.take_along_axis(p_BxC, y_B.astype(jnp.int32).reshape(-1, 1), axis=-1)[:, 0]
    return weighted_mean(-_clipped_log(p_y), w_B)


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "mae": mae,
    "binary_crossentropy": binary_cross_entropy,
    "categorical_crossentropy": categorical_cross_entropy,
    "sparse_categorical_crossentropy": sparse_categorical_cross_entropy,
}


PROBABILITY_LOSSES: dict[str, LossFn] = {
    "binary_crossentropy": binary_cross_entropy_from_probabilities,
    "categorical_crossentropy": categorical_cross_entropy_from_probabilities,
    "sparse_categorical_crossentropy": sparse_categorical_cross_entropy_from_probabilities,
}


def get_loss(loss: str | LossFn, from_logits: bool = True) -> LossFn:
    """The loss registered under `loss` (Keras's spelling), or `loss` itself when it is callable.

    A callable is used as given: `(outputs, targets, weights_B) -> scalar`, weights 0 on padded rows
    (so it should be a weighted mean, like `weighted_mean`). With `from_logits=False` the registered
    cross-entropies take probabilities. Raises ValueError for an unknown name.
    """
    if callable(loss):
        return loss
    try:
        return LOSSES[loss] if from_logits else PROBABILITY_LOSSES.get(loss, LOSSES[loss])
    except KeyError:
        raise ValueError(
            f"unknown loss {loss!r}; known: {', '.join(sorted(LOSSES))}, or pass a callable "
            "(outputs, targets, weights) -> scalar"
        ) from None


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
