"""The chapter's dense networks: an MLP from a list of widths.

The module always returns raw outputs (values for regression, logits for
classification) so losses can be computed stably from logits; the head's
activation (identity, sigmoid or softmax) is applied by `probabilities`, the
way Keras's last `Dense(..., activation=...)` layer would.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlchapter.concepts.activations import ACTIVATIONS

HEADS = ("linear", "sigmoid", "softmax")
KERNEL_INIT = nn.initializers.glorot_uniform()  # Keras's Dense default (Flax's is lecun_normal)


class MLP(nn.Module):
    """Dense layers of `widths`, each with its activation and optional dropout after it.

    `dropout[i]` is the rate after hidden layer i (Keras's `Dropout(rate)`, the
    chapter's keep-prob = 1 - rate); the output layer has `out_features` units
    and the `head` activation named for `probabilities`.
    """

    widths: Sequence[int]
    out_features: int = 1
    activation: str | Sequence[str] = "relu"
    dropout: float | Sequence[float] = 0.0
    head: str = "linear"
    dtype: jnp.dtype | None = None

    def _per_layer(self, value: object, name: str) -> list:
        if isinstance(value, (str, int, float)):
            return [value] * len(self.widths)
        values = list(value)  # type: ignore[arg-type]
        if len(values) != len(self.widths):
            raise ValueError(f"MLP {name} has {len(values)} entries for {len(self.widths)} hidden layers")
        return values

    @nn.compact
    def __call__(self, x_BxF: jax.Array, *, train: bool = False) -> jax.Array:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; known: {HEADS}")
        activations = self._per_layer(self.activation, "activation")
        rates = self._per_layer(self.dropout, "dropout")
        h = x_BxF.reshape(x_BxF.shape[0], -1)
        for i, (width, act, rate) in enumerate(zip(self.widths, activations, rates)):
            h = nn.Dense(width, dtype=self.dtype, kernel_init=KERNEL_INIT, name=f"dense_{i}")(h)
            h = ACTIVATIONS[act](h)
            if rate:
                h = nn.Dropout(rate, deterministic=not train, name=f"dropout_{i}")(h)
        out = nn.Dense(self.out_features, dtype=self.dtype, kernel_init=KERNEL_INIT, name="output")(h)
        return out.astype(jnp.float32)


def probabilities(outputs: jax.Array, head: str) -> jax.Array:
    """The head's activation on raw outputs: identity, sigmoid or softmax."""
    if head == "sigmoid":
        return jax.nn.sigmoid(outputs)
    if head == "softmax":
        return jax.nn.softmax(outputs, axis=-1)
    return outputs
