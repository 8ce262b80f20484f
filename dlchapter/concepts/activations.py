"""The chapter's activation functions, a name registry and their derivatives.

Elementwise: ``linear``, ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``,
``gelu`` (exact, erf-based) and ``gelu_tanh`` (the tanh approximation).
Over an axis: ``softmax`` and ``hardmax`` (one-hot of the arg-max).

Defaults worth knowing when comparing with other libraries:

* ``leaky_relu`` uses slope ``alpha=0.01`` for negative inputs, as
  ``jax.nn.leaky_relu`` and PyTorch's ``LeakyReLU`` do. Keras differs, and
  differs with itself: the layer ``keras.layers.LeakyReLU`` defaults to
  ``negative_slope=0.3`` (``alpha=0.3`` in tf.keras 2.x) while the function
  ``keras.activations.leaky_relu`` defaults to ``negative_slope=0.2``
  (Keras 3). Pass ``alpha`` explicitly to reproduce a Keras model.
* ``gelu`` here is the exact GELU; ``jax.nn.gelu`` defaults to the tanh
  approximation (``approximate=True``), which is ``gelu_tanh`` here. The two
  differ by at most about 4.7e-4.
* At 0 the kinks take the convention of PyTorch and ``jax.nn.relu``:
  ``relu'(0) = 0`` and ``leaky_relu'(0) = alpha`` (the left slope).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

Activation = Callable[[jax.Array], jax.Array]

LEAKY_RELU_ALPHA: float = 0.01
"""Default negative slope of ``leaky_relu`` (Keras's LeakyReLU layer uses 0.3)."""


def _float(x: jax.typing.ArrayLike) -> jax.Array:
    """Returns ``x`` as a floating-point array (integers become float32)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def linear(x: jax.typing.ArrayLike) -> jax.Array:
    """Identity, Keras's ``activation="linear"`` (or ``None``)."""
    return jnp.asarray(x)


def relu(x: jax.typing.ArrayLike) -> jax.Array:
    """max(x, 0); its derivative at 0 is taken as 0; NaN stays NaN (so a NaN guard sees it)."""
    return jax.nn.relu(_float(x))


def leaky_relu(x: jax.typing.ArrayLike, alpha: float = LEAKY_RELU_ALPHA) -> jax.Array:
    """x for x > 0, alpha * x otherwise (default alpha 0.01; Keras's layer uses 0.3)."""
    x = _float(x)
    return jnp.where(x > 0, x, alpha * x)


def sigmoid(x: jax.typing.ArrayLike) -> jax.Array:
    """1 / (1 + exp(-x)), computed stably."""
    return jax.nn.sigmoid(_float(x))


def tanh(x: jax.typing.ArrayLike) -> jax.Array:
    """Hyperbolic tangent, (e^x - e^-x) / (e^x + e^-x)."""
    return jnp.tanh(_float(x))


def gelu(x: jax.typing.ArrayLike) -> jax.Array:
    """Exact GELU: x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))."""
    x = _float(x)
    return 0.5 * x * (1.0 + lax.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: jax.typing.ArrayLike) -> jax.Array:
    """Tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x = _float(x)
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + jnp.tanh(inner))


def softmax(x: jax.typing.ArrayLike, axis: int = -1) -> jax.Array:
    """exp(x_i) / sum_j exp(x_j) along ``axis`` (max-subtracted for stability)."""
    return jax.nn.softmax(_float(x), axis=axis)


def hardmax(x: jax.typing.ArrayLike, axis: int = -1) -> jax.Array:
    """One-hot of the arg-max along ``axis``; ties go to the first maximum.

    The output has the (floating) dtype of ``x`` and a zero gradient everywhere.
    """
    x = _float(x)
    axis = axis % x.ndim
    winner = jnp.argmax(x, axis=axis, keepdims=True)
    position = lax.broadcasted_iota(winner.dtype, x.shape, axis)
    return (position == winner).astype(x.dtype)


ACTIVATIONS: dict[str, Activation] = {
    "linear": linear,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "softmax": softmax,
    "hardmax": hardmax,
}
"""Activations by the names a config may use (Keras's strings where they exist)."""

ELEMENTWISE: frozenset[str] = frozenset({"linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh"})
"""Names in ``ACTIVATIONS`` whose output element i depends only on input element i."""


def get(name: str) -> Activation:
    """Looks up an activation by name, with an error that lists the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def elementwise_derivative(fn: Activation) -> Activation:
    """Derivative of an elementwise function, for inputs of any shape.

    One forward-mode pass with a tangent of ones: for elementwise ``fn`` the
    Jacobian is diagonal, so this gives ``fn'(x)`` at every element.
    """

    def d_fn(x: jax.typing.ArrayLike) -> jax.Array:
        x = _float(x)
        _, slope = jax.jvp(fn, (x,), (jnp.ones_like(x),))
        return slope

    return d_fn


def derivative(name: str) -> Activation:
    """Derivative of the elementwise activation ``name`` (``softmax``/``hardmax`` excluded).

    ``softmax`` has a full Jacobian, diag(p) - p p^T, rather than an elementwise
    derivative; use ``jax.jacobian(softmax)`` for it.
    """
    fn = get(name)
    if name not in ELEMENTWISE:
        raise ValueError(f"{name!r} is not elementwise; derivatives exist for {sorted(ELEMENTWISE)}")
    return elementwise_derivative(fn)
