"""The chapter's MLP with a traced dropout rate, for sweeps that vary dropout without recompiling.

`SweepMLP` has the same layers, parameter names and initialisers as
`dlchapter.models.dense.MLP`, so the same key gives the same weights; the
keep-prob (1 - rate) is a call argument, so a vmapped sweep can give each
model its own. `TracedDropout` reproduces Flax's `nn.Dropout` draw for draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlchapter.concepts.activations import ACTIVATIONS
from dlchapter.models.dense import HEADS, KERNEL_INIT


class TracedDropout(nn.Module):
    """Flax's `nn.Dropout` with the keep-prob as a (traced) call argument.

    Same rng stream (`make_rng("dropout")` in a module of the same name), the
    same Bernoulli draw and the same 1/keep scaling, so for keep = 1 - rate it
    gives Flax's numbers exactly; keep = 1 is the identity.
    """

    @nn.compact
    def __call__(self, x: jax.Array, keep_prob: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic:
            return x
        mask = jax.random.bernoulli(self.make_rng("dropout"), p=keep_prob, shape=x.shape)
        # in x's dtype, as Flax divides by its (weakly typed) Python keep-prob: bf16 stays bf16
        return jax.lax.select(mask, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))


class SweepMLP(nn.Module):
    """`dlchapter.models.dense.MLP` with the dropout rate traced: same layers, names and initialisers.

    Hidden layers listed in `dropout_layers` are followed by a `TracedDropout`
    whose keep-prob is the call's `keep_prob` (one per model in a sweep).
    """

    widths: Sequence[int]
    out_features: int = 1
    activation: str = "relu"
    dropout_layers: Sequence[int] = ()
    head: str = "linear"

    @nn.compact
    def __call__(self, x_BxF: jax.Array, keep_prob: jax.Array | float = 1.0, *, train: bool = False) -> jax.Array:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; known: {HEADS}")
        h = x_BxF.reshape(x_BxF.shape[0], -1)
        for i, width in enumerate(self.widths):
            h = ACTIVATIONS[self.activation](nn.Dense(width, kernel_init=KERNEL_INIT, name=f"dense_{i}")(h))
            if i in self.dropout_layers:
                h = TracedDropout(name=f"dropout_{i}")(h, keep_prob, deterministic=not train)
        return nn.Dense(self.out_features, kernel_init=KERNEL_INIT, name="output")(h).astype(jnp.float32)
