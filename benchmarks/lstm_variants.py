"""LSTM variants that `benchmarks.paired` and `benchmarks.lstm_speed` time against the library's LSTM.

* `previous_recurrent()`: the recurrent code paths as they were before Nov 30's third session, while a program
  is traced and compiled: the op's gates through `jax.nn.sigmoid` (1 / (1 + exp(-z)), one pass per gate) and
  XLA's default CPU options (256-bit vectors) instead of `RECURRENT_CPU_COMPILER_OPTIONS`.
  `paired --contenders ours-prev` uses it for the recurrent models.
* `FusedLSTMCell`: a prototype that stores the four gates fused, Keras's way (``kernel`` (F, 4H),
  ``recurrent_kernel`` (H, 4H), ``bias`` (4H,), gates in the order c~, u, f, o), instead of the chapter-named
  per-gate tree (``W_ca, W_cx, b_c, ...``) that `LSTMCell` concatenates once per call. Same function and init
  distributions; measured, not adopted (benchmarks/NOTES.md, "Nov 30, third session"). `paired --contenders
  ours-fused` runs it.
* `previous_op`: `recurrent_ops.lstm_sequence` traced with the previous gates (for `lstm_speed --variants prev`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.specs import ModelSpec
from dlchapter.models import recurrent, recurrent_ops

Array = jax.Array


def previous_gates(z: Array) -> tuple[Array, Array, Array, Array]:
    """The op's gates before the third session: tanh and three separate `jax.nn.sigmoid` passes."""
    z_c, z_u, z_f, z_o = jnp.split(z, 4, axis=-1)
    return jnp.tanh(z_c), jax.nn.sigmoid(z_u), jax.nn.sigmoid(z_f), jax.nn.sigmoid(z_o)


@contextlib.contextmanager
def previous_recurrent() -> Iterator[None]:
    """Within the block, the op traces the previous gates and `RecurrentNet` asks for XLA's default options."""
    saved = recurrent_ops._gates, recurrent.RecurrentNet.cpu_compiler_options
    recurrent_ops._gates = previous_gates
    recurrent.RecurrentNet.cpu_compiler_options = lambda self: {}
    try:
        yield
    finally:
        recurrent_ops._gates, recurrent.RecurrentNet.cpu_compiler_options = saved


def previous_op(w_a, w_x, b, x, c0, a0, mask=None, unroll=1):
    """`lstm_sequence` with the previous gates (patched while it is traced; the backward pass is unchanged)."""
    with previous_recurrent():
        return recurrent_ops.lstm_sequence(w_a, w_x, b, x, c0, a0, mask, unroll)


class FusedLSTMCell(recurrent.LSTMCell):
    """`LSTMCell` with the gates stored fused (Keras names); the sequence form only, as `RNN` calls it."""

    @nn.compact
    def __call__(self, carry, x_BxF, mask_TxB=None, unroll=1):
        c_prev, a_prev = carry
        h, f = self.features, x_BxF.shape[-1]

        def per_gate(init, shape):  # drawn per gate, as LSTMCell draws them
            return lambda key, _, dtype: jnp.concatenate([init(k, shape, dtype) for k in jax.random.split(key, 4)], -1)

        def bias(_, shape, dtype):  # unit forget bias: b_f (the third block) starts at 1
            return jnp.zeros(shape, dtype).at[2 * h : 3 * h].set(1.0 if self.unit_forget_bias else 0.0)

        w_x = self.param("kernel", per_gate(self.kernel_init, (f, h)), (f, 4 * h), self.param_dtype)
        w_a = self.param("recurrent_kernel", per_gate(self.recurrent_kernel_init, (h, h)), (h, 4 * h), self.param_dtype)
        b = self.param("bias", bias, (4 * h,), self.param_dtype)
        return self.sequence_fn(w_a, w_x, b, x_BxF, c_prev, a_prev, mask_TxB, unroll)


def fused_spec(spec: ModelSpec) -> ModelSpec:
    """`spec` with its LSTM built from `FusedLSTMCell` (registered in `recurrent.CELLS` as "lstm-fused")."""
    if spec.kind != "lstm":
        raise SystemExit(f"error: ours-fused is an LSTM variant; model {spec.name!r} is a {spec.kind}")
    recurrent.CELLS["lstm-fused"] = FusedLSTMCell
    return ModelSpec(**{**vars(spec), "kind": "lstm-fused"})
