"""Tests for dlchapter.models.recurrent: cells vs numpy and Flax, the scan layer,
length masks, bidirectional, RecurrentNet, and gradients over 500 steps."""

from __future__ import annotations

from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from dlchapter.models.recurrent import (
    CELLS,
    RNN,
    Bidirectional,
    GRUCell,
    LSTMCell,
    RecurrentNet,
    SimpleRNNCell,
    reverse_index,
)

B, F, H = 3, 4, 5


# ---------------------------------------------------------------- numpy reference
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _affine(p: dict, g: str, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Ng's W_g [a, x] + b_g with W_g = [W_ga; W_gx] stacked over [a, x]."""
    w_g = np.concatenate([p[f"W_{g}a"], p[f"W_{g}x"]], axis=0)
    return np.concatenate([a, x], axis=-1) @ w_g + p[f"b_{g}"]


def np_simple_rnn(p, carry, x):
    a = np.tanh(_affine(p, "a", carry, x))
    return a, a


def np_gru(p, carry, x, reset_after=False):
    c_prev = carry
    gamma_r = _sigmoid(_affine(p, "r", c_prev, x))
    if reset_after:
        c_tilde = np.tanh(x @ p["W_cx"] + p["b_c"] + gamma_r * (c_prev @ p["W_ca"] + p["b_ca"]))
    else:
        c_tilde = np.tanh(_affine(p, "c", gamma_r * c_prev, x))
    gamma_u = _sigmoid(_affine(p, "u", c_prev, x))
    c = gamma_u * c_tilde + (1 - gamma_u) * c_prev
    return c, c


def np_lstm(p, carry, x):
    c_prev, a_prev = carry
    c_tilde = np.tanh(_affine(p, "c", a_prev, x))
    gamma_u = _sigmoid(_affine(p, "u", a_prev, x))
    gamma_f = _sigmoid(_affine(p, "f", a_prev, x))
    gamma_o = _sigmoid(_affine(p, "o", a_prev, x))
    c = gamma_u * c_tilde + gamma_f * c_prev
    a = gamma_o * np.tanh(c)
    return (c, a), a


REFERENCES = {
    "simple_rnn": (lambda: SimpleRNNCell(H, param_dtype=jnp.float64), np_simple_rnn),
    "gru": (lambda: GRUCell(H, param_dtype=jnp.float64), np_gru),
    "gru_reset_after": (
        lambda: GRUCell(H, reset_after=True, param_dtype=jnp.float64),
        lambda p, c, x: np_gru(p, c, x, reset_after=True),
    ),
    "lstm": (lambda: LSTMCell(H, param_dtype=jnp.float64), np_lstm),
}


def _np_tree(tree):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)


def _random_params(params, rng: np.random.Generator):
    """Replaces every leaf (also zero-init biases) by N(0, 0.5^2) draws."""
    return jax.tree.map(lambda v: jnp.asarray(rng.normal(0, 0.5, v.shape), v.dtype), params)


def _random_carry(cell: nn.Module, rng: np.random.Generator, dtype=jnp.float32):
    zeros = cell.initialize_carry(B, dtype)
    return jax.tree.map(lambda z: jnp.asarray(rng.normal(0, 0.8, z.shape), dtype), zeros)


class CellNumericsTest(chex.TestCase):
    """Each cell equals its numpy float64 implementation of the chapter's equations."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, name) for name in REFERENCES])
    def test_cell_matches_numpy_float64(self, name):
        make_cell, np_step = REFERENCES[name]
        rng = np.random.default_rng(0)
        with jax.enable_x64(True):
            cell = make_cell()
            x_TxBxF = jnp.asarray(rng.normal(size=(3, B, F)))
            carry0 = _random_carry(cell, rng, jnp.float64)
            params = _random_params(cell.init(jax.random.key(0), carry0, x_TxBxF[0]), rng)
            step = self.variant(lambda p, c, x: cell.apply(p, c, x))

            def run(p):
                carry, outs = carry0, []
                for x in x_TxBxF:
                    carry, out = step(p, carry, x)
                    outs.append(out)
                return carry, jnp.stack(outs)

            def run_np(p):
                p_np, carry, outs = _np_tree(p)["params"], _np_tree(carry0), []
                for x in np.asarray(x_TxBxF):
                    carry, out = np_step(p_np, carry, x)
                    outs.append(out)
                return carry, np.stack(outs)

            carry, outs = run(params)
            chex.assert_shape(outs, (3, B, H))
            chex.assert_trees_all_equal_shapes(carry, carry0)
            self.assertEqual(outs.dtype, jnp.float64)
            chex.assert_trees_all_close((carry, outs), run_np(params), rtol=1e-12, atol=1e-12)
            # Every weight matters, in JAX and in the reference alike.
            flat, treedef = jax.tree_util.tree_flatten_with_path(params)
            for i, (path, leaf) in enumerate(flat):
                leaves = [v for _, v in flat]
                leaves[i] = leaf.at[(0,) * leaf.ndim].add(0.3)
                bumped = jax.tree_util.tree_unflatten(treedef, leaves)
                _, outs_b = run(bumped)
                self.assertGreater(float(jnp.max(jnp.abs(outs_b - outs))), 1e-4, msg=str(path))
                np.testing.assert_allclose(outs_b, run_np(bumped)[1], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ vs Flax built-ins
def _step_all(apply, params, carry, xs_TxBxF):
    outs = []
    for x in xs_TxBxF:
        carry, out = apply(params, carry, x)
        outs.append(out)
    return carry, jnp.stack(outs)


def _setup(cell, rng):
    xs = jnp.asarray(rng.normal(size=(4, B, F)))
    carry = _random_carry(cell, rng, jnp.float64)
    params = _random_params(cell.init(jax.random.key(0), carry, xs[0]), rng)
    return xs, carry, params


@pytest.mark.parametrize("flax_cls", [nn.LSTMCell, nn.OptimizedLSTMCell])
def test_lstm_equals_flax_lstm(flax_cls):
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        ours = LSTMCell(H, param_dtype=jnp.float64)
        xs, carry, p = _setup(ours, rng)
        q = p["params"]
        names = {"i": "u", "f": "f", "g": "c", "o": "o"}  # Flax gate -> chapter gate
        mapped = {"params": {}}
        for fl, g in names.items():
            mapped["params"][f"i{fl}"] = {"kernel": q[f"W_{g}x"]}
            mapped["params"][f"h{fl}"] = {"kernel": q[f"W_{g}a"], "bias": q[f"b_{g}"]}
        theirs = flax_cls(H, param_dtype=jnp.float64)
        chex.assert_trees_all_equal_structs(mapped, theirs.init(jax.random.key(0), carry, xs[0]))
        expected = _step_all(ours.apply, p, carry, xs)
        chex.assert_trees_all_close(_step_all(theirs.apply, mapped, carry, xs), expected, atol=1e-12)
        # Swapping the update and forget gates must break the match.
        swapped = jax.tree.map(lambda v: v, mapped)
        swapped["params"]["ii"], swapped["params"]["if"] = mapped["params"]["if"], mapped["params"]["ii"]
        _, outs_swapped = _step_all(theirs.apply, swapped, carry, xs)
        assert float(jnp.max(jnp.abs(outs_swapped - expected[1]))) > 1e-3


def _gru_to_flax(q, b_hn):
    """Chapter GRU params -> flax.linen.GRUCell params (Flax z = 1 - G_u)."""
    return {
        "params": {
            "ir": {"kernel": q["W_rx"], "bias": q["b_r"]},
            "hr": {"kernel": q["W_ra"]},
            "iz": {"kernel": -q["W_ux"], "bias": -q["b_u"]},
            "hz": {"kernel": -q["W_ua"]},
            "in": {"kernel": q["W_cx"], "bias": q["b_c"]},
            "hn": {"kernel": q["W_ca"], "bias": b_hn},
        }
    }


def test_gru_reset_after_equals_flax_gru():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        ours = GRUCell(H, reset_after=True, param_dtype=jnp.float64)
        xs, carry, p = _setup(ours, rng)
        theirs = nn.GRUCell(H, param_dtype=jnp.float64)
        mapped = _gru_to_flax(p["params"], p["params"]["b_ca"])
        chex.assert_trees_all_equal_structs(mapped, theirs.init(jax.random.key(0), carry, xs[0]))
        expected = _step_all(ours.apply, p, carry, xs)
        chex.assert_trees_all_close(_step_all(theirs.apply, mapped, carry, xs), expected, atol=1e-12)
        # Without flipping the sign of the update gate (Flax's z = 1 - G_u) it differs.
        unflipped = {**p["params"], **{k: -p["params"][k] for k in ("W_ux", "W_ua", "b_u")}}
        wrong = _gru_to_flax(unflipped, p["params"]["b_ca"])
        _, outs_wrong = _step_all(theirs.apply, wrong, carry, xs)
        assert float(jnp.max(jnp.abs(outs_wrong - expected[1]))) > 1e-3


def test_chapter_gru_differs_from_flax_exactly_in_reset_placement():
    """W_ca (G_r * c) vs G_r * (W_ca c): equal iff W_ca acts elementwise (diagonal)."""
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        ours = GRUCell(H, param_dtype=jnp.float64)
        xs, carry, p = _setup(ours, rng)
        theirs = nn.GRUCell(H, param_dtype=jnp.float64)
        zero_bias = jnp.zeros((H,), jnp.float64)
        _, ours_full = _step_all(ours.apply, p, carry, xs)
        _, theirs_full = _step_all(theirs.apply, _gru_to_flax(p["params"], zero_bias), carry, xs)
        assert float(jnp.max(jnp.abs(ours_full - theirs_full))) > 1e-3
        diag = {**p["params"], "W_ca": jnp.diag(jnp.diagonal(p["params"]["W_ca"]))}
        expected = _step_all(ours.apply, {"params": diag}, carry, xs)
        got = _step_all(theirs.apply, _gru_to_flax(diag, zero_bias), carry, xs)
        chex.assert_trees_all_close(got, expected, atol=1e-12)


def test_simple_rnn_equals_flax_simple_cell():
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        ours = SimpleRNNCell(H, param_dtype=jnp.float64)
        xs, carry, p = _setup(ours, rng)
        q = p["params"]
        mapped = {"params": {"i": {"kernel": q["W_ax"], "bias": q["b_a"]}, "h": {"kernel": q["W_aa"]}}}
        theirs = nn.SimpleCell(H, param_dtype=jnp.float64)
        chex.assert_trees_all_close(
            _step_all(theirs.apply, mapped, carry, xs), _step_all(ours.apply, p, carry, xs), atol=1e-12
        )


# ------------------------------------------------------------------ the layer
T = 6
CELL_NAMES = sorted(CELLS)


@partial(jax.jit, static_argnums=0)
def _apply(module: nn.Module, params, *args):
    """Jitted ``module.apply``; equal modules share the compile cache across tests."""
    return module.apply(params, *args)


def _xs(seed: int = 0, batch: int = B, timesteps: int = T):
    return jax.random.normal(jax.random.key(seed), (batch, timesteps, F))


def _loop(cell: nn.Module, cell_params, x_BxLxF, carry=None):
    """Python loop of jitted cell steps: the unscanned reference."""
    carry = cell.initialize_carry(x_BxLxF.shape[0]) if carry is None else carry
    outs = []
    for t in range(x_BxLxF.shape[1]):
        carry, out = _apply(cell, {"params": cell_params}, carry, x_BxLxF[:, t])
        outs.append(out)
    return carry, (jnp.stack(outs, axis=1) if outs else jnp.zeros((x_BxLxF.shape[0], 0, H)))


def _maxdiff(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)))


@pytest.mark.parametrize("name", CELL_NAMES)
def test_scan_equals_python_loop(name):
    cell = CELLS[name](H)
    layer = RNN(cell, return_sequences=True, return_carry=True)
    x = _xs()
    init = _random_carry(cell, np.random.default_rng(5))
    params = layer.init(jax.random.key(1), x, init)
    carry, ys = _apply(layer, params, x, init)
    chex.assert_shape(ys, (B, T, H))
    chex.assert_trees_all_close((carry, ys), _loop(cell, params["params"]["cell"], x, init), atol=1e-6)
    # The initial carry is used, and return_sequences=False gives the last output.
    assert _maxdiff(_apply(layer, params, x)[1], ys) > 1e-3
    last = _apply(RNN(cell, return_carry=True), params, x, init)[1]
    chex.assert_shape(last, (B, H))
    chex.assert_trees_all_close(last, ys[:, -1], atol=1e-6)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_reverse_equals_flipped_forward(name):
    x = _xs(1)
    fw = RNN(CELLS[name](H), return_sequences=True, return_carry=True)
    bw = RNN(CELLS[name](H), return_sequences=True, return_carry=True, reverse=True)
    params = fw.init(jax.random.key(2), x)
    carry_f, ys_f = _apply(fw, params, jnp.flip(x, 1))
    carry_b, ys_b = _apply(bw, params, x)
    chex.assert_trees_all_close((carry_b, ys_b), (carry_f, jnp.flip(ys_f, 1)), atol=1e-6)
    assert _maxdiff(ys_b, _apply(fw, params, x)[1]) > 1e-3


def test_reverse_index_reverses_only_real_prefix():
    idx = reverse_index(jnp.array([4, 2, 0]), 4)
    np.testing.assert_array_equal(idx, [[3, 2, 1, 0], [1, 0, 2, 3], [0, 1, 2, 3]])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_length_mask_matches_unpadded_rows(name, reverse):
    cell = CELLS[name](H)
    lengths = jnp.array([T, 3, 1, 0])
    x = _xs(2, batch=4) * 3.0  # padding holds large garbage, not zeros
    layer = RNN(cell, return_sequences=True, return_carry=True, reverse=reverse)
    params = layer.init(jax.random.key(3), x)
    carry, ys = _apply(layer, params, x, None, lengths)
    last = _apply(RNN(cell, return_carry=True, reverse=reverse), params, x, None, lengths)[1]
    for b, n in enumerate(np.asarray(lengths)):
        # Row b alone, unpadded: its n real steps (reversed for reverse=True).
        x_alone = jnp.flip(x[b : b + 1, :n], 1) if reverse else x[b : b + 1, :n]
        alone_carry, alone_ys = _loop(cell, params["params"]["cell"], x_alone)
        alone_ys = jnp.flip(alone_ys, 1) if reverse else alone_ys
        chex.assert_trees_all_close(jax.tree.map(lambda c, b=b: c[b : b + 1], carry), alone_carry, atol=1e-6)
        chex.assert_trees_all_close(ys[b : b + 1, :n], alone_ys, atol=1e-6)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        expected_last = jnp.zeros(H) if n == 0 else (alone_ys[0, 0] if reverse else alone_ys[0, -1])
        chex.assert_trees_all_close(last[b], expected_last, atol=1e-6)
    # Without lengths the padding does change the short rows' state.
    unmasked, _ = _apply(layer, params, x)
    assert _maxdiff(jax.tree.leaves(carry)[-1][1], jax.tree.leaves(unmasked)[-1][1]) > 1e-3


@pytest.mark.parametrize("name", CELL_NAMES)
def test_bidirectional(name):
    x = _xs(3)
    bi = Bidirectional(CELLS[name](H), return_sequences=True, return_carry=True)
    params = bi.init(jax.random.key(4), x)
    (carry_f, carry_b), ys = _apply(bi, params, x)
    chex.assert_shape(ys, (B, T, 2 * H))
    chex.assert_shape(jax.eval_shape(Bidirectional(CELLS[name](H)).apply, params, x), (B, 2 * H))
    chex.assert_shape(jax.eval_shape(Bidirectional(CELLS[name](H), merge="sum").apply, params, x), (B, H))
    fw = RNN(CELLS[name](H), return_sequences=True, return_carry=True)
    p_f, p_b = params["params"]["forward"], params["params"]["backward"]
    chex.assert_trees_all_close((carry_f, ys[..., :H]), _apply(fw, {"params": p_f}, x), atol=1e-6)
    # Backward direction == forward RNN with the backward weights on the flipped sequence.
    carry_r, ys_r = _apply(fw, {"params": p_b}, jnp.flip(x, 1))
    chex.assert_trees_all_close((carry_b, ys[..., H:]), (carry_r, jnp.flip(ys_r, 1)), atol=1e-6)
    assert _maxdiff(ys[..., :H], ys[..., H:]) > 1e-3
    # With lengths, a padded row equals that row alone (backward starts at its last real step).
    (_, carry_bm), ys_m = _apply(bi, params, x, None, jnp.array([T, 4, 2]))
    (_, carry_b1), ys_1 = _apply(bi, params, x[1:2, :4])
    row1 = jax.tree.map(lambda c: c[1:2], carry_bm)
    chex.assert_trees_all_close((ys_m[1:2, :4], row1), (ys_1, carry_b1), atol=1e-6)
    np.testing.assert_array_equal(ys_m[1, 4:], 0.0)
    with pytest.raises(ValueError, match="merge"):
        Bidirectional(CELLS[name](H), merge="max").init(jax.random.key(0), x)


# --------------------------------------------------------------- RecurrentNet
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_recurrent_net_shapes(name, bidirectional):
    x = _xs(4)
    net = RecurrentNet(name, hidden=H, out_features=2, num_layers=2, bidirectional=bidirectional)
    params = jax.eval_shape(net.init, jax.random.key(5), x)
    chex.assert_shape(jax.eval_shape(net.apply, params, x, jnp.array([T, 3, 1])), (B, 2))
    seq_net = RecurrentNet(name, H, 2, num_layers=2, bidirectional=bidirectional, return_sequences=True)
    chex.assert_shape(jax.eval_shape(seq_net.apply, params, x), (B, T, 2))
    layer1 = params["params"]["rnn_1"]
    cell1 = layer1["backward"]["cell"] if bidirectional else layer1["cell"]
    kernel = "W_ax" if name == "simple_rnn" else "W_cx"
    chex.assert_shape(cell1[kernel], (2 * H if bidirectional else H, H))
    chex.assert_shape(params["params"]["head"]["kernel"], (2 * H if bidirectional else H, 2))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_unrolled_scan_computes_the_same_function(bidirectional):
    x, lengths = _xs(4), jnp.array([T, 3, 1])
    net = RecurrentNet("lstm", hidden=H, out_features=2, num_layers=2, bidirectional=bidirectional)
    params = net.init(jax.random.key(5), x)
    expected = net.apply(params, x, lengths)
    for unroll in (2, T):
        unrolled = RecurrentNet(
            "lstm", hidden=H, out_features=2, num_layers=2, bidirectional=bidirectional, unroll=unroll
        )
        chex.assert_trees_all_close(unrolled.apply(params, x, lengths), expected, rtol=1e-6, atol=1e-6)


def test_recurrent_net_rejects_unknown_cell():
    with pytest.raises(ValueError, match="simple_rnn"):
        RecurrentNet("transformer", H, 1).init(jax.random.key(0), _xs())


@pytest.mark.parametrize(
    "name,keras_count",
    [("simple_rnn", H * (H + F + 1)), ("gru", 3 * H * (H + F + 1)), ("lstm", 4 * H * (H + F + 1))],
)
def test_parameter_counts_match_keras(name, keras_count):
    """Keras SimpleRNN, GRU(reset_after=False) and LSTM counts; the Dense head adds H + 1."""
    params = jax.eval_shape(RecurrentNet(name, H, 1).init, jax.random.key(0), _xs())
    assert sum(v.size for v in jax.tree.leaves(params)) == keras_count + H + 1


def test_init_conventions():
    params = RNN(LSTMCell(H)).init(jax.random.key(0), _xs())["params"]["cell"]
    np.testing.assert_array_equal(params["b_f"], 1.0)
    np.testing.assert_array_equal(params["b_u"], 0.0)
    w = np.asarray(params["W_ua"])
    np.testing.assert_allclose(w.T @ w, np.eye(H), atol=1e-5)  # orthogonal recurrent kernel
    assert np.abs(params["W_ux"]).max() <= np.sqrt(6 / (F + H))  # glorot-uniform bound
    cell = LSTMCell(H, unit_forget_bias=False)
    b_f = cell.init(jax.random.key(0), cell.initialize_carry(1), jnp.ones((1, F)))["params"]["b_f"]
    np.testing.assert_array_equal(b_f, 0.0)


def test_compiles_once_for_any_lengths():
    net = RecurrentNet("gru", H, 1)
    x = _xs()
    params = net.init(jax.random.key(0), x)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fwd(p, x, lengths):
        return net.apply(p, x, lengths)

    outs = [fwd(params, x, jnp.array(n)) for n in ([T, T, T], [1, 2, 3], [4, 0, 6])]
    assert _maxdiff(outs[0], outs[1]) > 1e-4


@pytest.mark.parametrize("name", CELL_NAMES)
def test_gradients_finite_over_500_steps(name):
    x = jax.random.normal(jax.random.key(6), (2, 500, F)) * 3.0
    y = jnp.array([0.5, -0.5])
    net = RecurrentNet(name, hidden=8, out_features=1)
    params = net.init(jax.random.key(7), x[:, :2])

    def loss(p, x):
        return jnp.mean((net.apply(p, x)[:, 0] - y) ** 2)

    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    chex.assert_tree_all_finite((g_params, g_x))
    chex.assert_shape(g_x, x.shape)
    cell_grads = jax.tree.leaves(g_params["params"]["rnn_0"])
    assert max(float(jnp.max(jnp.abs(g))) for g in cell_grads) > 0.0
