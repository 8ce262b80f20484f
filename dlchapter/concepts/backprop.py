"""Backpropagation by hand: the chapter's logistic regression on two features.

For one example with features x (here 2 of them), weights w and bias b::

    z = w . x + b          a = sigmoid(z)
    L = -(y log a + (1 - y) log(1 - a))

The chain rule through a = sigmoid(z), with da/dz = a (1 - a), collapses to::

    dL/dz = a - y          dL/dw = (a - y) x          dL/db = a - y

and over a batch of N examples the loss and the gradients are averages.
``hand_gradients`` writes exactly these formulas; the tests check them
against ``jax.grad`` of ``log_loss``. ``fit_logistic_regression`` is plain
full-batch gradient descent, w <- w - lr * dL/dw, with no optimizer library.

Everything here is a pure function of arrays and works for any number of
features; dtypes follow the inputs (float64 under ``jax.enable_x64``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _as_float(x: jax.typing.ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check(w: jax.Array, x_NxF: jax.Array, y_N: jax.Array | None = None) -> None:
    if x_NxF.ndim != 2 or w.shape != (x_NxF.shape[1],):
        raise ValueError(f"expected x shaped (N, F) and w shaped (F,), got x {x_NxF.shape} and w {w.shape}")
    if y_N is not None and y_N.shape != (x_NxF.shape[0],):
        raise ValueError(f"expected y shaped ({x_NxF.shape[0]},), got {y_N.shape}")


def forward(w: jax.typing.ArrayLike, b: jax.typing.ArrayLike, x_NxF: jax.typing.ArrayLike) -> jax.Array:
    """Predicted probabilities a = sigmoid(x . w + b), shape (N,)."""
    w, x_NxF = _as_float(w), _as_float(x_NxF)
    _check(w, x_NxF)
    return jax.nn.sigmoid(x_NxF @ w + b)


def log_loss(
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike,
    x_NxF: jax.typing.ArrayLike,
    y_N: jax.typing.ArrayLike,
) -> jax.Array:
    """Mean binary cross-entropy -(y log a + (1 - y) log(1 - a)) over the batch.

    Computed from z = x . w + b as y softplus(-z) + (1 - y) softplus(z), which
    equals the formula above but stays finite when a rounds to 0 or 1.
    """
    w, x_NxF, y_N = _as_float(w), _as_float(x_NxF), _as_float(y_N)
    _check(w, x_NxF, y_N)
    z_N = x_NxF @ w + b
    return jnp.mean(y_N * jax.nn.softplus(-z_N) + (1.0 - y_N) * jax.nn.softplus(z_N))


def hand_gradients(
    w: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike,
    x_NxF: jax.typing.ArrayLike,
    y_N: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    """(dL/dw, dL/db) of the mean log-loss from the chain rule: mean((a - y) x), mean(a - y)."""
    w, x_NxF, y_N = _as_float(w), _as_float(x_NxF), _as_float(y_N)
    _check(w, x_NxF, y_N)
    a_N = forward(w, b, x_NxF)
    dz_N = a_N - y_N  # dL/dz for each example
    dw_F = x_NxF.T @ dz_N / x_NxF.shape[0]
    db = jnp.mean(dz_N)
    return dw_F, db


@partial(jax.jit, static_argnames="steps")
def _gradient_descent(
    w0: jax.Array,
    b0: jax.Array,
    x_NxF: jax.Array,
    y_N: jax.Array,
    learning_rate: jax.Array,
    steps: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    def step(carry, _):
        w, b = carry
        loss = log_loss(w, b, x_NxF, y_N)
        dw, db = hand_gradients(w, b, x_NxF, y_N)
        return (w - learning_rate * dw, b - learning_rate * db), loss

    (w, b), losses = jax.lax.scan(step, (w0, b0), None, length=steps)
    return w, b, losses


def fit_logistic_regression(
    x_NxF: jax.typing.ArrayLike,
    y_N: jax.typing.ArrayLike,
    learning_rate: float,
    steps: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Full-batch gradient descent from w = 0, b = 0 with ``hand_gradients``.

    Returns the final ``(w, b)`` and ``loss_history`` of shape (steps,), where
    entry t is the mean log-loss of the parameters before update t. The loop is
    one compiled ``lax.scan``; a new ``learning_rate`` does not recompile.
    """
    x_NxF, y_N = _as_float(x_NxF), _as_float(y_N)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    dtype = x_NxF.dtype
    w0 = jnp.zeros(x_NxF.shape[1:], dtype)
    _check(w0, x_NxF, y_N)
    b0 = jnp.zeros((), dtype)
    return _gradient_descent(w0, b0, x_NxF, y_N.astype(dtype), jnp.asarray(learning_rate, dtype), steps)
