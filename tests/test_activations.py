"""Tests for dlchapter.concepts.activations against closed forms written in numpy/scipy."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from dlchapter.concepts import activations as act

X = np.linspace(-6.0, 6.0, 1201)
X = X[np.abs(X) > 1e-6]  # kinks at 0 are tested separately


# ---------------------------------------------------------------------------
# closed forms in numpy (float64)
# ---------------------------------------------------------------------------
def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_gelu(x):
    return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


NP_FORMS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "sigmoid": _np_sigmoid,
    "tanh": np.tanh,
    "gelu": _np_gelu,
    "gelu_tanh": _np_gelu_tanh,
}


def _np_gelu_prime(x):
    pdf = np.exp(-0.5 * x**2) / np.sqrt(2.0 * np.pi)
    return 0.5 * (1.0 + special.erf(x / np.sqrt(2.0))) + x * pdf


def _np_gelu_tanh_prime(x):
    c = np.sqrt(2.0 / np.pi)
    u = c * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * c * (1.0 + 3 * 0.044715 * x**2)


NP_DERIVATIVES = {
    "linear": lambda x: np.ones_like(x),
    "relu": lambda x: (x > 0).astype(np.float64),
    "leaky_relu": lambda x: np.where(x > 0, 1.0, 0.01),
    "sigmoid": lambda x: _np_sigmoid(x) * (1.0 - _np_sigmoid(x)),
    "tanh": lambda x: 1.0 - np.tanh(x) ** 2,
    "gelu": _np_gelu_prime,
    "gelu_tanh": _np_gelu_tanh_prime,
}


def test_registry_is_explicit_and_complete():
    assert set(act.ACTIVATIONS) == {
        "linear",
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "gelu",
        "gelu_tanh",
        "softmax",
        "hardmax",
    }
    assert act.ELEMENTWISE == set(NP_FORMS)
    assert act.get("relu") is act.relu
    with pytest.raises(KeyError, match="expected one of"):
        act.get("swishh")


@pytest.mark.parametrize("name", sorted(NP_FORMS))
def test_elementwise_values_match_closed_forms(name):
    out = act.ACTIVATIONS[name](jnp.asarray(X, jnp.float32))
    chex.assert_shape(out, X.shape)
    np.testing.assert_allclose(out, NP_FORMS[name](X), rtol=1e-5, atol=1e-6)


def test_elementwise_functions_are_distinct():
    """Each closed-form comparison above could fail: no two activations agree."""
    outs = {n: np.asarray(act.ACTIVATIONS[n](jnp.asarray(X, jnp.float32))) for n in NP_FORMS}
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(outs[a], outs[b], atol=1e-5), (a, b)


def test_relu_and_leaky_relu_examples():
    x = jnp.array([-10.0, -5.0, 0.0, 5.0, 10.0])
    np.testing.assert_array_equal(act.relu(x), [0.0, 0.0, 0.0, 5.0, 10.0])
    np.testing.assert_allclose(act.leaky_relu(x), [-0.1, -0.05, 0.0, 5.0, 10.0], rtol=1e-6)
    # Keras's LeakyReLU layer default (negative_slope=0.3) on the same input.
    keras_layer_default = act.leaky_relu(x, alpha=0.3)
    np.testing.assert_allclose(keras_layer_default, [-3.0, -1.5, 0.0, 5.0, 10.0], rtol=1e-6)
    assert act.LEAKY_RELU_ALPHA == 0.01


def test_integer_inputs_become_float():
    out = act.sigmoid(jnp.array([0, 1]))
    assert jnp.issubdtype(out.dtype, jnp.floating)
    np.testing.assert_allclose(out, [0.5, _np_sigmoid(1.0)], rtol=1e-6)


def test_sigmoid_is_stable_for_large_inputs():
    out = act.sigmoid(jnp.array([-1000.0, 1000.0]))
    chex.assert_tree_all_finite(out)
    np.testing.assert_array_equal(out, [0.0, 1.0])


# ---------------------------------------------------------------------------
# softmax and hardmax
# ---------------------------------------------------------------------------
def test_softmax_chapter_example():
    z = np.array([1.0, -1.0, 0.0, 3.0])
    p = act.softmax(jnp.asarray(z))
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    np.testing.assert_allclose(p, [0.1125, 0.0152, 0.0414, 0.8310], atol=1e-4)
    np.testing.assert_allclose(float(p.sum()), 1.0, rtol=1e-6)
    assert int(jnp.argmax(p)) == 3


def test_softmax_axis_and_stability():
    z = jax.random.normal(jax.random.key(0), (4, 5)) * 3
    p0 = act.softmax(z, axis=0)
    np.testing.assert_allclose(p0.sum(axis=0), np.ones(5), rtol=1e-6)
    assert not np.allclose(p0, act.softmax(z, axis=-1))
    big = act.softmax(jnp.array([1000.0, 1001.0]))
    chex.assert_tree_all_finite(big)
    np.testing.assert_allclose(big, act.softmax(jnp.array([0.0, 1.0])), rtol=1e-6)


def test_hardmax_one_hot_of_argmax_with_ties_to_first():
    np.testing.assert_array_equal(act.hardmax(jnp.array([1.0, -1.0, 0.0, 3.0])), [0, 0, 0, 1])
    np.testing.assert_array_equal(act.hardmax(jnp.array([2.0, 5.0, 5.0, 1.0])), [0, 1, 0, 0])
    np.testing.assert_array_equal(act.hardmax(jnp.array([7.0, 7.0, 7.0])), [1, 0, 0])
    batch = jnp.array([[0.1, 0.9, 0.0], [3.0, 3.0, -1.0]])
    np.testing.assert_array_equal(act.hardmax(batch), [[0, 1, 0], [1, 0, 0]])
    # Along axis 0: column-wise arg-max.
    np.testing.assert_array_equal(act.hardmax(batch, axis=0), [[0, 0, 1], [1, 1, 0]])
    assert act.hardmax(batch).dtype == batch.dtype


def test_hardmax_equals_limit_of_sharp_softmax():
    z = jax.random.normal(jax.random.key(1), (6, 4))
    np.testing.assert_allclose(act.softmax(z * 1e4), act.hardmax(z), atol=1e-6)


# ---------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------
def test_gelu_exact_vs_scipy_and_tanh_approximation_error():
    xs = np.linspace(-8.0, 8.0, 4001)
    exact = np.asarray(act.gelu(jnp.asarray(xs, jnp.float32)))
    approx = np.asarray(act.gelu_tanh(jnp.asarray(xs, jnp.float32)))
    np.testing.assert_allclose(exact, _np_gelu(xs), rtol=1e-6, atol=2e-6)
    gap = np.abs(approx - exact).max()
    assert gap < 1e-3  # the approximation's known error is about 4.7e-4 (near |x| = 2.7)
    assert gap > 1e-4  # ... and they really are different functions
    np.testing.assert_allclose(approx, np.asarray(jax.nn.gelu(xs, approximate=True)), atol=1e-6)
    np.testing.assert_allclose(exact, np.asarray(jax.nn.gelu(xs, approximate=False)), atol=1e-6)


# ---------------------------------------------------------------------------
# derivatives
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NP_DERIVATIVES))
def test_derivatives_match_closed_forms(name):
    d = act.derivative(name)(jnp.asarray(X, jnp.float32))
    chex.assert_shape(d, X.shape)
    np.testing.assert_allclose(d, NP_DERIVATIVES[name](X), rtol=1e-4, atol=1e-5)


def test_derivatives_are_distinct_and_shape_preserving():
    x = jnp.asarray(X, jnp.float32)
    outs = {n: np.asarray(act.derivative(n)(x)) for n in NP_DERIVATIVES}
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(outs[a], outs[b], atol=1e-4), (a, b)
    grid = jnp.asarray(X[:1200].reshape(4, 30, 10), jnp.float32)
    d = act.derivative("tanh")(grid)
    chex.assert_shape(d, (4, 30, 10))
    expected = NP_DERIVATIVES["tanh"](X[:1200])
    np.testing.assert_allclose(d.reshape(-1), expected, rtol=1e-4, atol=1e-6)


def test_derivative_conventions_at_zero():
    zero = jnp.zeros(1)
    assert float(act.derivative("relu")(zero)[0]) == 0.0
    assert float(act.derivative("leaky_relu")(zero)[0]) == pytest.approx(0.01)
    assert float(act.derivative("sigmoid")(zero)[0]) == pytest.approx(0.25)
    assert float(act.derivative("tanh")(zero)[0]) == pytest.approx(1.0)
    assert float(act.derivative("gelu")(zero)[0]) == pytest.approx(0.5)


def test_derivative_refuses_non_elementwise():
    for name in ("softmax", "hardmax"):
        with pytest.raises(ValueError, match="not elementwise"):
            act.derivative(name)
    with pytest.raises(KeyError):
        act.derivative("nope")


def test_softmax_jacobian_closed_form():
    z = jnp.array([1.0, -1.0, 0.0, 3.0])
    p = np.exp(np.asarray(z)) / np.exp(np.asarray(z)).sum()
    np.testing.assert_allclose(jax.jacobian(act.softmax)(z), np.diag(p) - np.outer(p, p), atol=1e-6)


# ---------------------------------------------------------------------------
# the chapter's loss example
# ---------------------------------------------------------------------------
def test_chapter_cross_entropy_example():
    """A probability of 0.2 on the true class costs -log 0.2 = 1.609..."""
    y_true = np.array([0.0, 1.0, 0.0])
    probs = np.array([0.5, 0.2, 0.3])
    cce = -np.sum(y_true * np.log(probs))
    assert cce == pytest.approx(1.6094379, abs=1e-6)
    # The same number from logits through our softmax.
    logits = jnp.log(jnp.asarray(probs)) + 4.2  # softmax ignores a shift
    p = act.softmax(logits)
    np.testing.assert_allclose(p, probs, rtol=1e-5)
    cce_jax = -jnp.sum(jnp.asarray(y_true) * jax.nn.log_softmax(logits))
    assert float(cce_jax) == pytest.approx(1.6094379, abs=1e-5)
    # A confident right answer costs far less.
    assert -np.log(0.9) < 0.2 < cce
