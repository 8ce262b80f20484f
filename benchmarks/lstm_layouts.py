"""Layouts and loop structures tried for `recurrent_ops.lstm_sequence` in Nov 30's fourth session.

None was adopted (numbers in benchmarks/NOTES.md, "Nov 30, fourth session"). Each variant is a function with the
op's signature (``unroll`` ignored), for ``python -m benchmarks.lstm_speed --variants op,fm,...``; all but the
probe give the op's values and gradients (tests/test_benchmarks_smoke.py checks them in float64).

* ``fm``: feature-major inside the op: carry (H, B), z^T = W_a^T a^T + W_x^T x<t>^T + b (4H, B), so each gate is a
  contiguous row block; residuals saved as per-gate (T, H, B) arrays; transposed once at the boundary.
* ``fm_slab``: the same with each step's residuals saved as one (T, 5H, B) slab (row slices of a dynamic slice).
* ``gate_dz``: the library op with the backward loop writing dz as four per-gate (T, B, H) slabs, dW per gate.
* ``hoist_split``: the input projection hoisted out of the loop as two GEMMs, one per gate group (x W_x[:, :H] and
  x W_x[:, H:], biases added in the loop), so the loop reads whole dynamic slices, never a column slice of one.
* ``hoist_chunk14``: ``hoist_split`` with the steps in two loops, [0, 14) and [14, T), each with its own GEMM, so
  the second GEMM could run beside the first loop on the other core.
* ``readback``: the library op with the backward loop writing dz into its carried slab straight from the element-
  wise producers and reading the step back for the dz W_a^T dot.
* ``unrolled``: both time loops unrolled in Python (static indices: no dynamic slices, no zero-filled scan buffers).
* ``probe_nosave``: a timing probe with WRONG gradients: the forward saves no residuals (the backward reads the
  outputs in their place): what saving the five (T, B, H) residuals costs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from dlchapter.models import recurrent_ops as ro


def _op(forward: Callable, bwd: Callable, ys_out: Callable = lambda ys: ys) -> Callable:
    """A custom_vjp op from ``forward(w_a, w_x, b, x, c0, a0, mask) -> (carry, ys, saved)`` and ``bwd``."""

    @jax.custom_vjp
    def op(w_a, w_x, b, x, c0, a0, mask=None):
        carry, ys, _ = forward(w_a, w_x, b, x, c0, a0, mask)
        return carry, ys_out(ys)

    def fwd(w_a, w_x, b, x, c0, a0, mask=None):
        carry, ys, saved = forward(w_a, w_x, b, x, c0, a0, mask)
        return (carry, ys_out(ys)), (w_a, w_x, x, a0, mask, ys, saved)

    op.defvjp(fwd, bwd)
    return lambda w_a, w_x, b, x, c0, a0, mask=None, unroll=1: op(w_a, w_x, b, x, c0, a0, mask)


def _lib_forward(w_a, w_x, b, x, c0, a0, mask):
    return ro._forward(w_a, w_x, b, x, c0, a0, mask, 1)


def _lib_bwd(residuals, cotangents):
    return ro._bwd(1, residuals, cotangents)


def _step_bwd(dc, da, dy, c_tilde, g_u, g_f, g_o, c_prev, m):
    """One backward step as `recurrent_ops._bwd` does it: the four dz blocks, a function finishing the carry from
    the dot's result, for any layout (``m`` the step's mask, broadcastable, or None)."""
    tanh_c = jnp.tanh(g_u * c_tilde + g_f * c_prev)
    if m is not None:
        dy = jnp.where(m, dy, 0)
    da_step = da + dy
    dc_step = dc + da_step * g_o * (1 - tanh_c * tanh_c)
    parts = (
        dc_step * g_u * (1 - c_tilde * c_tilde),
        dc_step * c_tilde * g_u * (1 - g_u),
        dc_step * c_prev * g_f * (1 - g_f),
        da_step * tanh_c * g_o * (1 - g_o),
    )

    def finish(da_prev):
        dc_prev = dc_step * g_f
        if m is None:
            return dc_prev, da_prev
        return jnp.where(m, dc_prev, dc), jnp.where(m, da_prev, da)

    if m is not None:
        parts = tuple(jnp.where(m, p, 0) for p in parts)
    return parts, finish


def _weight_grads(dz_Nx4H, a_prev_TxBxH, x_TxBxF, w_x):
    """dW_a, dW_x, db, dx from dz over the T*B rows, as `recurrent_ops._bwd` computes them."""
    t, batch, f = x_TxBxF.shape
    n = t * batch
    a_HxN, x_FxN = jax.lax.optimization_barrier((a_prev_TxBxH.reshape(n, -1).T, x_TxBxF.reshape(n, f).T))
    return a_HxN @ dz_Nx4H, x_FxN @ dz_Nx4H, dz_Nx4H.sum(axis=0), (dz_Nx4H @ w_x.T).reshape(t, batch, f)


def _a_prev(saved, mask, a0, ys):
    return saved[-1] if mask is not None else jnp.concatenate([a0[None], ys[:-1]])


# ---- feature-major (transposed) layout ----


def _fm(slab: bool) -> Callable:
    def forward(w_a, w_x, b, x_TxBxF, c0, a0, mask):
        h = w_a.shape[0]
        w_at, w_xt, b_col = w_a.T, w_x.T, b[:, None]

        def step(carry, inputs):
            c_prev, a_prev = carry
            x, m = inputs
            z = w_at @ a_prev + w_xt @ x + b_col
            c_tilde, g = jnp.tanh(z[:h]), ro.sigmoid(z[h:])
            g_u, g_f, g_o = g[:h], g[h : 2 * h], g[2 * h :]
            c = g_u * c_tilde + g_f * c_prev
            a = g_o * jnp.tanh(c)
            out, saved = a, (c_tilde, g_u, g_f, g_o, c_prev)
            if m is not None:
                m = m[None, :]
                c, a, out = jnp.where(m, c, c_prev), jnp.where(m, a, a_prev), jnp.where(m, a, 0)
                saved = (*saved, a_prev)
            return (c, a), (out, jnp.concatenate(saved) if slab else saved)

        (c_t, a_t), (ys_TxHxB, saved) = jax.lax.scan(step, (c0.T, a0.T), (jnp.swapaxes(x_TxBxF, 1, 2), mask))
        return (c_t.T, a_t.T), ys_TxHxB, saved

    def bwd(res, cot):
        w_a, w_x, x_TxBxF, a0, mask, ys_TxHxB, saved = res
        (dc_t, da_t), dys = cot
        h = w_a.shape[0]

        def step(carry, inputs):
            dy, s, m = inputs
            gates = tuple(s[k * h : (k + 1) * h] for k in range(5)) if slab else s[:5]
            parts, finish = _step_bwd(*carry, dy, *gates, None if m is None else m[None, :])
            dz = jnp.concatenate(parts)
            return finish(w_a @ dz), dz

        inputs = (jnp.swapaxes(dys, 1, 2), saved, mask)
        (dc0, da0), dz_Tx4HxB = jax.lax.scan(step, (dc_t.T, da_t.T), inputs, reverse=True)
        if mask is not None:
            a_prev_TxHxB = saved[:, 5 * h :] if slab else saved[-1]
        else:
            a_prev_TxHxB = jnp.concatenate([a0.T[None], ys_TxHxB[:-1]])
        dz_Nx4H = jnp.swapaxes(dz_Tx4HxB, 1, 2).reshape(-1, 4 * h)
        grads = _weight_grads(dz_Nx4H, jnp.swapaxes(a_prev_TxHxB, 1, 2), x_TxBxF, w_x)
        return (*grads, dc0.T, da0.T, None)

    return _op(forward, bwd, ys_out=lambda ys: jnp.swapaxes(ys, 1, 2))


# ---- the library op with another backward loop ----


def _gate_dz_bwd(res, cot):
    w_a, w_x, x, a0, mask, ys, saved = res
    (dc_t, da_t), dys = cot
    w_a_t = w_a.T

    def step(carry, inputs):
        dy, s, m = inputs
        parts, finish = _step_bwd(*carry, dy, *s[:5], None if m is None else m[:, None])
        return finish(jnp.concatenate(parts, axis=-1) @ w_a_t), parts

    (dc0, da0), dzs = jax.lax.scan(step, (dc_t, da_t), (dys, saved, mask), reverse=True)
    t, batch, f = x.shape
    dzs = [d.reshape(t * batch, -1) for d in dzs]
    a_HxN, x_FxN = jax.lax.optimization_barrier(
        (_a_prev(saved, mask, a0, ys).reshape(t * batch, -1).T, x.reshape(t * batch, f).T)
    )
    h = w_a.shape[0]
    dw_a = jnp.concatenate([a_HxN @ d for d in dzs], axis=-1)
    dw_x = jnp.concatenate([x_FxN @ d for d in dzs], axis=-1)
    db = jnp.concatenate([d.sum(axis=0) for d in dzs])
    dx = sum(d @ w_x[:, k * h : (k + 1) * h].T for k, d in enumerate(dzs)).reshape(t, batch, f)
    return dw_a, dw_x, db, dx, dc0, da0, None


def _readback_bwd(res, cot):
    w_a, w_x, x, a0, mask, ys, saved = res
    (dc_t, da_t), dys = cot
    w_a_t = w_a.T
    t_len, batch, _ = x.shape

    def body(i, state):
        dc, da, slab = state
        t = t_len - 1 - i
        m = None if mask is None else mask[t][:, None]
        parts, finish = _step_bwd(dc, da, dys[t], *(s[t] for s in saved[:5]), m)
        slab = jax.lax.optimization_barrier(slab.at[t].set(jnp.concatenate(parts, axis=-1)))
        return (*finish(slab[t] @ w_a_t), slab)

    slab0 = jnp.zeros((t_len, batch, 4 * w_a.shape[0]), dys.dtype)
    dc0, da0, dz = jax.lax.fori_loop(0, t_len, body, (dc_t, da_t, slab0))
    grads = _weight_grads(dz.reshape(t_len * batch, -1), _a_prev(saved, mask, a0, ys), x, w_x)
    return (*grads, dc0, da0, None)


# ---- the input projection hoisted out of the forward loop ----


def _hoisted_step(w_a, b, h, c_prev, a_prev, xc, xg, m):
    z = a_prev @ w_a
    c_tilde = jnp.tanh(z[:, :h] + xc + b[:h])
    g = ro.sigmoid(z[:, h:] + xg + b[h:])
    return ro.cell_update(c_tilde, g[:, :h], g[:, h : 2 * h], g[:, 2 * h :], c_prev, a_prev, m)


def _hoist_split_forward(w_a, w_x, b, x, c0, a0, mask):
    h = w_a.shape[0]

    def step(carry, inputs):
        c, a, out, saved = _hoisted_step(w_a, b, h, *carry, *inputs)
        return (c, a), (out, saved)

    (c_t, a_t), (ys, saved) = jax.lax.scan(step, (c0, a0), (x @ w_x[:, :h], x @ w_x[:, h:], mask))
    return (c_t, a_t), ys, saved


def _hoist_chunk_forward(first, w_a, w_x, b, x, c0, a0, mask):
    h, t_len = w_a.shape[0], x.shape[0]
    n_bufs = 6 if mask is None else 7  # outputs, the five residuals, a<t-1> with a mask

    def body(t, state, xc, xg, lo):
        c, a, out, saved = _hoisted_step(
            w_a, b, h, state[0], state[1], xc[t - lo], xg[t - lo], None if mask is None else mask[t]
        )
        return c, a, tuple(buf.at[t].set(v) for buf, v in zip(state[2], (out, *saved)))

    state = (c0, a0, tuple(jnp.zeros((t_len, *c0.shape), c0.dtype) for _ in range(n_bufs)))
    for lo, hi in ((0, min(first, t_len)), (min(first, t_len), t_len)):
        if hi > lo:
            fn = partial(body, xc=x[lo:hi] @ w_x[:, :h], xg=x[lo:hi] @ w_x[:, h:], lo=lo)
            state = jax.lax.fori_loop(lo, hi, fn, state)
    c_t, a_t, (ys, *saved) = state
    return (c_t, a_t), ys, tuple(saved)


# ---- both loops unrolled in Python ----


def _unrolled_forward(w_a, w_x, b, x, c0, a0, mask):
    c, a, outs, saved = c0, a0, [], []
    for t in range(x.shape[0]):
        c_prev, a_prev = c, a
        c_tilde, g_u, g_f, g_o = ro._gates(x[t] @ w_x + a_prev @ w_a + b)
        c = g_u * c_tilde + g_f * c_prev
        a = out = g_o * jnp.tanh(c)
        if mask is not None:
            m = mask[t][:, None]
            c, a, out = jnp.where(m, c, c_prev), jnp.where(m, a, a_prev), jnp.where(m, a, 0)
        # without the barrier XLA fuses the chain c<0..t> into every later step's consumers
        c, a, out, c_tilde, g_u, g_f, g_o = jax.lax.optimization_barrier((c, a, out, c_tilde, g_u, g_f, g_o))
        outs.append(out)
        saved.append((c_tilde, g_u, g_f, g_o, c_prev, a_prev))
    return (c, a), jnp.stack(outs), saved


def _unrolled_bwd(res, cot):
    w_a, w_x, x, a0, mask, ys, saved = res
    (dc, da), dys = cot
    w_a_t, dzs = w_a.T, []
    for t in reversed(range(x.shape[0])):
        m = None if mask is None else mask[t][:, None]
        parts, finish = _step_bwd(dc, da, dys[t], *saved[t][:5], m)
        dz = jnp.concatenate(parts, axis=-1)
        dc, da = finish(dz @ w_a_t)
        dz, dc, da = jax.lax.optimization_barrier((dz, dc, da))
        dzs.append(dz)
    a_prev = jnp.stack([s[5] for s in saved])
    grads = _weight_grads(jnp.concatenate(dzs[::-1]), a_prev, x, w_x)
    return (*grads, dc, da, None)


# ---- timing probe (wrong gradients) ----


def _nosave_forward(w_a, w_x, b, x, c0, a0, mask):
    def step(carry, x_t):
        c_prev, a_prev = carry
        c_tilde, g_u, g_f, g_o = ro._gates(x_t @ w_x + a_prev @ w_a + b)
        c = g_u * c_tilde + g_f * c_prev
        a = g_o * jnp.tanh(c)
        return (c, a), a

    carry, ys = jax.lax.scan(step, (c0, a0), x)
    return carry, ys, (ys, ys * 0.5, ys * 0.25, ys * 0.125, ys * 2.0)


VARIANTS: dict[str, Callable] = {
    "fm": _fm(slab=False),
    "fm_slab": _fm(slab=True),
    "gate_dz": _op(_lib_forward, _gate_dz_bwd),
    "readback": _op(_lib_forward, _readback_bwd),
    "hoist_split": _op(_hoist_split_forward, _lib_bwd),
    "hoist_chunk14": _op(partial(_hoist_chunk_forward, 14), _lib_bwd),
    "unrolled": _op(_unrolled_forward, _unrolled_bwd),
    "probe_nosave": _op(_nosave_forward, _lib_bwd),
}
