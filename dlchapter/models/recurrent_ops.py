"""The LSTM over a whole sequence as one op with a hand-written backward pass (what cuDNN and oneDNN do).

`lstm_sequence` computes exactly the chapter's LSTM (`LSTMCell`'s equations, gates in the order
c~, u, f, o) over all time steps, with the kernels given fused: ``w_a`` (H, 4H) = [W_ca | W_ua | W_fa | W_oa]
and ``w_x`` (F, 4H) = [W_cx | W_ux | W_fx | W_ox] (`LSTMCell` concatenates its per-gate parameters once
per call, outside the time loop). What makes it faster than autodiff of a per-step cell on a CPU:

* the gradients of the input projection, dx and dW_x, are one (T*B)-row matmul each after the backward
  loop (the forward projection stays in the loop: hoisting it measured slower on XLA:CPU, see `_forward`);
* the forward loop does one (B, H) x (H, 4H) matmul per step, the backward loop one (B, 4H) x (4H, H)
  matmul per step: the weight gradient dW_a is a single (H, T*B) x (T*B, 4H) matmul after the loop,
  instead of an accumulation inside it (what JAX's transpose of `lax.scan` does with a broadcast kernel).

Row masks (``mask_TxB``, right-padded sequences) keep a row's carry and give it zero output where the
mask is off, as `dlchapter.models.recurrent.RNN` does. The backward pass is the chain rule of the forward
equations; tests/models/test_recurrent.py checks values and gradients against autodiff of the per-step
cell in float64, and the cell itself against numpy.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

Array = jax.Array


def sigmoid(z: Array) -> Array:
    """The logistic function 1 / (1 + exp(-z)), computed as 0.5 * tanh(z / 2) + 0.5 (an identity; same dtype/shape).

    XLA:CPU lowers `jax.nn.sigmoid` to an exponential and a division; its tanh is cheaper. The LSTM training step
    ran 5-7% faster with this form (benchmarks/NOTES.md, "Nov 30, third session"); the numpy-equation tests check
    the op against 1 / (1 + exp(-z)) in float64.
    """
    return 0.5 * jnp.tanh(0.5 * z) + 0.5


def _gates(z: Array) -> tuple[Array, Array, Array, Array]:
    h = z.shape[-1] // 4
    g = sigmoid(z[..., h:])  # u, f and o are contiguous columns: one pass over (B, 3H)
    return jnp.tanh(z[..., :h]), g[..., :h], g[..., h : 2 * h], g[..., 2 * h :]


def cell_update(c_tilde, g_u, g_f, g_o, c_prev, a_prev, m):
    """One step's memory cell and output from its gates: ``(c<t>, a<t>, output, residuals)``.

    c<t> = u * c~ + f * c<t-1>, a<t> = o * tanh(c<t>); where the row mask `m` (B,) is off, the carry is kept and
    the output is 0. The residuals are what `_bwd` reads: the four gates and c<t-1> (and a<t-1> with a mask).
    """
    c = g_u * c_tilde + g_f * c_prev
    a = g_o * jnp.tanh(c)
    out, saved = a, (c_tilde, g_u, g_f, g_o, c_prev)
    if m is not None:
        m = m[:, None]
        c, a, out = jnp.where(m, c, c_prev), jnp.where(m, a, a_prev), jnp.where(m, a, 0)
        saved = (*saved, a_prev)
    return c, a, out, saved


def _forward(w_a, w_x, b, x_TxBxF, c0, a0, mask_TxB, unroll):
    # x<t> @ W_x stays inside the loop: hoisted, the loop reads column slices of a dynamic slice of the
    # (T, B, 4H) projection, which XLA:CPU fuses into the gate arithmetic as slow scalar code (2.7 vs 1.3 ms
    # for the forward pass at batch 128; benchmarks/NOTES.md). Its gradients are hoisted in `_bwd`.
    # Saved per step: the four gates and c<t-1> as separate (B, H) arrays (one (B, 4H) array would be read
    # back through column slices, the slow case above); tanh(c<t>) is recomputed in `_bwd`, and a<t-1> is
    # the previous output, saved only when a mask can make them differ.
    def step(carry, inputs):
        c_prev, a_prev = carry
        x, m = inputs
        c, a, out, saved = cell_update(*_gates(x @ w_x + a_prev @ w_a + b), c_prev, a_prev, m)
        return (c, a), (out, saved)

    (c_t, a_t), (ys, saved) = jax.lax.scan(step, (c0, a0), (x_TxBxF, mask_TxB), unroll=unroll)
    return (c_t, a_t), ys, saved


@partial(jax.custom_vjp, nondiff_argnums=(7,))
def lstm_sequence(
    w_a: Array,
    w_x: Array,
    b: Array,
    x_TxBxF: Array,
    c0: Array,
    a0: Array,
    mask_TxB: Array | None = None,
    unroll: int = 1,
) -> tuple[tuple[Array, Array], Array]:
    """The chapter's LSTM over T steps: ``((c<T>, a<T>), a_TxBxH)``.

    Args:
      w_a: (H, 4H) recurrent kernels of gates c~, u, f, o, side by side.
      w_x: (F, 4H) input kernels, same order.
      b: (4H,) biases, same order.
      x_TxBxF: inputs, time-major, same float dtype as the kernels.
      c0, a0: (B, H) initial memory cell and activation.
      mask_TxB: bool, or None for all steps real; where off, the row's carry is kept and its output is 0.
      unroll: time steps per iteration of both loops (`jax.lax.scan`'s unroll).

    Returns:
      The final carry and the outputs a<t> of every step, (T, B, H).
    """
    carry, ys, _ = _forward(w_a, w_x, b, x_TxBxF, c0, a0, mask_TxB, unroll)
    return carry, ys


def _fwd(w_a, w_x, b, x_TxBxF, c0, a0, mask_TxB, unroll):
    carry, ys, saved = _forward(w_a, w_x, b, x_TxBxF, c0, a0, mask_TxB, unroll)
    return (carry, ys), (w_a, w_x, x_TxBxF, a0, mask_TxB, ys, saved)


def _bwd(unroll, residuals, cotangents):
    w_a, w_x, x_TxBxF, a0, mask_TxB, ys, saved = residuals
    (dc_t, da_t), dys = cotangents
    w_a_t = w_a.T

    def step(carry, inputs):
        dc, da = carry
        dy, (c_tilde, g_u, g_f, g_o, c_prev, *_), m = inputs
        tanh_c = jnp.tanh(g_u * c_tilde + g_f * c_prev)
        if m is not None:
            m = m[:, None]
            dy = jnp.where(m, dy, 0)
        da_step = da + dy
        dc_step = dc + da_step * g_o * (1 - tanh_c * tanh_c)
        dz = jnp.concatenate(
            [
                dc_step * g_u * (1 - c_tilde * c_tilde),
                dc_step * c_tilde * g_u * (1 - g_u),
                dc_step * c_prev * g_f * (1 - g_f),
                da_step * tanh_c * g_o * (1 - g_o),
            ],
            axis=-1,
        )
        da_prev, dc_prev = dz @ w_a_t, dc_step * g_f
        if m is not None:
            dz = jnp.where(m, dz, 0)
            da_prev, dc_prev = jnp.where(m, da_prev, da), jnp.where(m, dc_prev, dc)
        return (dc_prev, da_prev), dz

    (dc0, da0), dz_TxBx4H = jax.lax.scan(step, (dc_t, da_t), (dys, saved, mask_TxB), reverse=True, unroll=unroll)
    # Plain 2-D matmuls over the T*B rows (XLA keeps these on its fast path inside an outer loop too). The
    # transposed a<t-1> and x are materialised first (the barrier keeps XLA from folding the transposes back
    # into the dots): (H, N) x (N, 4H) runs ~20% faster than a dot contracting both operands' major axis.
    t, batch, f = x_TxBxF.shape
    dz_Nx4H = dz_TxBx4H.reshape(t * batch, -1)
    a_prev_TxBxH = saved[-1] if mask_TxB is not None else jnp.concatenate([a0[None], ys[:-1]])
    a_prev_HxN, x_FxN = jax.lax.optimization_barrier(
        (a_prev_TxBxH.reshape(t * batch, -1).T, x_TxBxF.reshape(t * batch, f).T)
    )
    dw_a = a_prev_HxN @ dz_Nx4H
    dw_x = x_FxN @ dz_Nx4H
    db = dz_Nx4H.sum(axis=0)
    dx = (dz_Nx4H @ w_x.T).reshape(t, batch, f)
    return dw_a, dw_x, db, dx, dc0, da0, None


lstm_sequence.defvjp(_fwd, _bwd)


def lstm_sequence_autodiff(
    w_a: Array,
    w_x: Array,
    b: Array,
    x_TxBxF: Array,
    c0: Array,
    a0: Array,
    mask_TxB: Array | None = None,
    unroll: int = 1,
) -> tuple[tuple[Array, Array], Array]:
    """`lstm_sequence` with JAX's own reverse mode through `lax.scan` (same values, same signature)."""
    carry, ys, _ = _forward(w_a, w_x, b, x_TxBxF, c0, a0, mask_TxB, unroll)
    return carry, ys
