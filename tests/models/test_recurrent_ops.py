"""The fused LSTM sequence op: values and hand-written gradients against the per-step cell's autodiff.

The per-step `LSTMCell` is itself checked against the chapter's equations in numpy (test_recurrent.py);
here the op must agree with a Python loop over that cell, in float64, with and without length masks.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlchapter.models.recurrent import RNN, LSTMCell, RecurrentNet
from dlchapter.models.recurrent_ops import lstm_sequence

T, B, F, H = 6, 3, 4, 5


def _loop_reference(params: dict, x_TxBxF, c0, a0, mask_TxB):
    """The per-step cell (numpy-checked) in a Python loop; masked steps keep the carry and output 0."""
    cell = LSTMCell(H, param_dtype=jnp.float64)
    carry, ys = (c0, a0), []
    for t in range(x_TxBxF.shape[0]):
        new, y = cell.apply({"params": params}, carry, x_TxBxF[t])
        if mask_TxB is None:
            carry = new
        else:
            m = mask_TxB[t][:, None]
            carry = jax.tree.map(lambda n, o, m=m: jnp.where(m, n, o), new, carry)
            y = jnp.where(m, y, 0)
        ys.append(y)
    return carry, jnp.stack(ys)


def _fused(params: dict):
    def cat(keys):
        return jnp.concatenate([params[k] for k in keys], axis=-1)

    return (
        cat(["W_ca", "W_ua", "W_fa", "W_oa"]),
        cat(["W_cx", "W_ux", "W_fx", "W_ox"]),
        cat(["b_c", "b_u", "b_f", "b_o"]),
    )


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("unroll", [1, 2])
def test_values_and_gradients_match_the_cell_loop(masked: bool, unroll: int) -> None:
    rng = np.random.default_rng(0)
    cell = LSTMCell(H, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(0), (jnp.zeros((B, H)), jnp.zeros((B, H))), jnp.zeros((B, F)))["params"]
    params = jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape), params)  # biases away from zero too
    x = jnp.asarray(rng.normal(size=(T, B, F)))
    c0, a0 = jnp.asarray(rng.normal(size=(B, H))), jnp.asarray(rng.normal(size=(B, H)))
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([T, 2, 0])[None, :]) if masked else None
    w_y, w_c, w_a = (jnp.asarray(rng.normal(size=s)) for s in ((T, B, H), (B, H), (B, H)))

    def loss(out):
        (c, a), ys = out
        return jnp.sum(ys * w_y) + jnp.sum(c * w_c) + jnp.sum(a * w_a)

    def ours(p, x, c0, a0):
        return loss(lstm_sequence(*_fused(p), x, c0, a0, mask, unroll))

    def reference(p, x, c0, a0):
        return loss(_loop_reference(p, x, c0, a0, mask))

    np.testing.assert_allclose(ours(params, x, c0, a0), reference(params, x, c0, a0), rtol=1e-12)
    got = jax.grad(ours, argnums=(0, 1, 2, 3))(params, x, c0, a0)
    expected = jax.grad(reference, argnums=(0, 1, 2, 3))(params, x, c0, a0)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    if masked:  # row 2 has length 0: its inputs get no gradient, its carry's gradient is the loss's own
        np.testing.assert_array_equal(got[1][:, 2], 0.0)
        np.testing.assert_allclose(got[3][2], w_a[2], rtol=1e-12)


def test_rnn_fast_path_equals_generic_path_and_keeps_the_tree() -> None:
    """`RNN` over an LSTMCell (fused op) vs the same cell with the op off (per-step nn.scan): values, grads, tree."""
    generic_cell = type("GenericLSTMCell", (LSTMCell,), {"sequence_op": False})
    x = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, F)))
    lengths = jnp.asarray([T, 3, 1])
    for reverse in (False, True):
        fast = RNN(LSTMCell(H, param_dtype=jnp.float64), return_sequences=True, reverse=reverse)
        slow = RNN(generic_cell(H, param_dtype=jnp.float64), return_sequences=True, reverse=reverse)
        params = fast.init(jax.random.key(2), x, None, lengths)
        assert jax.tree.map(jnp.shape, params) == jax.tree.map(
            jnp.shape, slow.init(jax.random.key(2), x, None, lengths)
        )
        assert sorted(params["params"]["cell"]) == sorted(
            f"{k}_{g}{s}" for g in "cufo" for k, s in (("W", "a"), ("W", "x"), ("b", ""))
        )
        np.testing.assert_allclose(
            fast.apply(params, x, None, lengths), slow.apply(params, x, None, lengths), atol=1e-12
        )

        def grad(m, params=params):
            return jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x, None, lengths))))(params)

        for g, e in zip(jax.tree.leaves(grad(fast)), jax.tree.leaves(grad(slow))):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_float32_inputs_with_float64_params_take_the_generic_path() -> None:
    """Mixed dtypes are left to the per-step scan (the op needs one dtype), which still runs."""
    layer = RNN(LSTMCell(H, param_dtype=jnp.float64))
    x = jnp.ones((B, T, F), jnp.float32)
    params = layer.init(jax.random.key(0), x)
    out = layer.apply(params, x)
    assert out.shape == (B, H)


def test_cpu_compiler_options_by_cell() -> None:
    assert RecurrentNet("lstm", hidden=H, out_features=2).cpu_compiler_options() == {}
    assert RecurrentNet("gru", hidden=H, out_features=2).cpu_compiler_options() == {}
    assert isinstance(RecurrentNet("lstm", hidden=H, out_features=2), nn.Module)
