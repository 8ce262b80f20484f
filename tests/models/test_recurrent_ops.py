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

from dlchapter.models.recurrent import RECURRENT_CPU_COMPILER_OPTIONS, RNN, LSTMCell, RecurrentNet
from dlchapter.models.recurrent_ops import lstm_sequence, sigmoid

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


def test_sigmoid_is_the_logistic_function() -> None:
    """The op's tanh form against numpy's 1 / (1 + exp(-z)): float64 to 1e-15 absolute, float32 to 2 ulp of 1."""
    z = np.concatenate([np.linspace(-40.0, 40.0, 2001), [0.0, 1e-8, -1e-8, 709.0, -709.0]])
    expected = 1.0 / (1.0 + np.exp(-z))
    np.testing.assert_allclose(np.asarray(sigmoid(jnp.asarray(z, jnp.float64))), expected, rtol=0, atol=1e-15)
    got32 = sigmoid(jnp.asarray(z, jnp.float32))
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got32, np.float64), expected, rtol=0, atol=2.4e-7)
    assert float(sigmoid(jnp.float32(0.0))) == 0.5
    assert float(jnp.min(got32)) >= 0.0 and float(jnp.max(got32)) <= 1.0


def test_cpu_compiler_options_by_cell() -> None:
    """XLA's default (YNNPACK) dots and 512-bit vectors for every cell; a fresh dict each call."""
    for cell in ("lstm", "gru", "simple_rnn"):
        options = RecurrentNet(cell, hidden=H, out_features=2).cpu_compiler_options()
        assert options == {"xla_cpu_prefer_vector_width": "512"}
        assert "xla_cpu_experimental_ynn_fusion_type" not in options
    options["xla_cpu_prefer_vector_width"] = "256"
    assert RECURRENT_CPU_COMPILER_OPTIONS["xla_cpu_prefer_vector_width"] == "512"
    assert isinstance(RecurrentNet("lstm", hidden=H, out_features=2), nn.Module)


def test_cpu_compiler_options_compile_and_keep_values() -> None:
    """XLA accepts the options (an unknown or malformed one raises) and they do not change the step's values."""
    net = RecurrentNet("lstm", hidden=H, out_features=2)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)
    params = net.init(jax.random.key(0), x)
    plain = jax.jit(net.apply).lower(params, x).compile()
    tuned = jax.jit(net.apply).lower(params, x).compile(compiler_options=net.cpu_compiler_options())
    np.testing.assert_allclose(np.asarray(tuned(params, x)), np.asarray(plain(params, x)), rtol=1e-6, atol=1e-6)
    with pytest.raises(Exception, match="prefer_vector_width"):
        jax.jit(net.apply).lower(params, x).compile(compiler_options={"xla_cpu_prefer_vector_width": "wide"})


@pytest.mark.parametrize("generic", [False, True])
def test_unmasked_outputs_equal_the_full_length_gather_path(generic: bool) -> None:
    """Without lengths `RNN` takes step T-1 by a static slice and reverses by a flip; with lengths all T it gathers.

    Both must give the same outputs and gradients, for the fused op and the per-step scan, forward and reversed.
    """
    cell_cls = type("GenericLSTMCell", (LSTMCell,), {"sequence_op": False}) if generic else LSTMCell
    x = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, F)))
    full = jnp.full((B,), T)
    for reverse in (False, True):
        for return_sequences in (False, True):
            layer = RNN(cell_cls(H, param_dtype=jnp.float64), return_sequences=return_sequences, reverse=reverse)
            params = layer.init(jax.random.key(4), x)
            got, expected = layer.apply(params, x), layer.apply(params, x, None, full)
            assert got.shape == ((B, T, H) if return_sequences else (B, H))
            np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)
            if not return_sequences:  # the last step processed: x<T-1> forward, x<0> reversed
                flipped = RNN(cell_cls(H, param_dtype=jnp.float64), return_sequences=True, reverse=reverse)
                seq = flipped.apply(params, x)
                np.testing.assert_allclose(got, seq[:, 0 if reverse else -1], rtol=1e-13, atol=1e-14)

            def loss(p, lengths=None, layer=layer):
                return jnp.sum(jnp.sin(layer.apply(p, x, None, lengths)))

            for g, e in zip(jax.tree.leaves(jax.grad(loss)(params)), jax.tree.leaves(jax.grad(loss)(params, full))):
                np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def _np_lstm_loss(p: dict, x_TxBxF: np.ndarray, w_TxBxH: np.ndarray) -> float:
    """The chapter's LSTM equations in float64 numpy (Ng's W_g [a, x] + b_g), summed against fixed weights."""

    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    def aff(g, a, x):
        return np.concatenate([a, x], -1) @ np.concatenate([p[f"W_{g}a"], p[f"W_{g}x"]]) + p[f"b_{g}"]

    c = a = np.zeros((x_TxBxF.shape[1], H))
    total = 0.0
    for t in range(x_TxBxF.shape[0]):
        x = x_TxBxF[t]
        c_tilde, g_u, g_f, g_o = np.tanh(aff("c", a, x)), sig(aff("u", a, x)), sig(aff("f", a, x)), sig(aff("o", a, x))
        c = g_u * c_tilde + g_f * c
        a = g_o * np.tanh(c)
        total += float(np.sum(a * w_TxBxH[t]))
    return total


def test_gradients_match_numpy_equations_by_finite_differences() -> None:
    """<grad, v> of the op (float64) equals the central difference of the numpy equations along random v."""
    rng = np.random.default_rng(5)
    cell = LSTMCell(H, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(0), (jnp.zeros((B, H)), jnp.zeros((B, H))), jnp.zeros((B, F)))["params"]
    params = {k: np.asarray(v) + 0.3 * rng.normal(size=v.shape) for k, v in params.items()}
    x, w_y = rng.normal(size=(T, B, F)), rng.normal(size=(T, B, H))
    zeros = jnp.zeros((B, H))
    grad = jax.grad(lambda p: jnp.sum(lstm_sequence(*_fused(p), jnp.asarray(x), zeros, zeros)[1] * w_y))(params)
    eps = 1e-6
    for _ in range(3):
        v = {k: rng.normal(size=p.shape) for k, p in params.items()}

        def shifted(s, v=v):
            return {k: params[k] + s * v[k] for k in params}

        numeric = (_np_lstm_loss(shifted(eps), x, w_y) - _np_lstm_loss(shifted(-eps), x, w_y)) / (2 * eps)
        analytic = sum(float(np.sum(np.asarray(grad[k]) * v[k])) for k in params)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7)
    assert abs(analytic) > 1e-3  # a real derivative, not a vanishing one


@pytest.mark.parametrize("masked", [False, True])
def test_float32_gradients_within_1e_5_of_the_float64_equations(masked: bool) -> None:
    """The op in float32 (the library's default dtype) against autodiff of the per-step cell loop in float64."""
    rng = np.random.default_rng(6)
    cell = LSTMCell(H, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(1), (jnp.zeros((B, H)), jnp.zeros((B, H))), jnp.zeros((B, F)))["params"]
    x, w_y = jnp.asarray(rng.normal(size=(T, B, F))), jnp.asarray(rng.normal(size=(T, B, H)))
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([T, 4, 1])[None, :]) if masked else None
    zeros = jnp.zeros((B, H))

    x32, z32, w32 = (a.astype(jnp.float32) for a in (x, zeros, w_y))

    def ours(p32):
        return jnp.sum(lstm_sequence(*_fused(p32), x32, z32, z32, mask)[1] * w32)

    def reference(p):
        return jnp.sum(_loop_reference(p, x, zeros, zeros, mask)[1] * w_y)

    got = jax.grad(ours)(jax.tree.map(lambda a: a.astype(jnp.float32), params))
    expected = jax.grad(reference)(params)
    for k in params:
        assert got[k].dtype == jnp.float32
        scale = float(jnp.max(jnp.abs(expected[k])))
        np.testing.assert_allclose(np.asarray(got[k], np.float64), expected[k], rtol=1e-5, atol=1e-5 * scale, err_msg=k)
