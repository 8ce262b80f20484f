"""Tests for dlchapter.concepts.backprop: hand-written gradients and gradient descent."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dlchapter.concepts import backprop


def _noisy_data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two standardized features; labels drawn from a logistic model, so the
    classes are mostly separable but overlap (the MLE is finite)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) @ np.array([[1.0, 0.4], [0.0, 0.8]]) + np.array([1.0, -2.0])
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    z = 2.0 * x[:, 0] - 1.5 * x[:, 1] + 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return x, y


def _np_loss(w, b, x, y):
    a = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    return np.mean(-(y * np.log(a) + (1 - y) * np.log(1 - a)))


def test_forward_and_loss_match_the_chapter_formulas():
    x, y = _noisy_data(n=50, seed=1)
    w, b = np.array([0.7, -1.2]), 0.3
    with jax.enable_x64(True):
        a = backprop.forward(w, b, x)
        chex.assert_shape(a, (50,))
        np.testing.assert_allclose(a, 1.0 / (1.0 + np.exp(-(x @ w + b))), rtol=1e-12)
        loss = backprop.log_loss(w, b, x, y)
        assert loss.dtype == jnp.float64
        np.testing.assert_allclose(loss, _np_loss(w, b, x, y), rtol=1e-12)


def test_log_loss_stays_finite_when_a_saturates():
    x = jnp.array([[100.0, 0.0], [-100.0, 0.0]])
    y = jnp.array([0.0, 1.0])  # confidently wrong: a rounds to 1 and 0 in float32
    loss = backprop.log_loss(jnp.array([1.0, 0.0]), 0.0, x, y)
    chex.assert_tree_all_finite(loss)
    np.testing.assert_allclose(loss, 100.0, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_gradients_equal_autodiff_float64(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 2)) * 2.0
    y = rng.integers(0, 2, size=64).astype(np.float64)
    w, b = rng.normal(size=2), float(rng.normal())
    with jax.enable_x64(True):
        dw, db = backprop.hand_gradients(w, b, x, y)
        grad_fn = jax.grad(backprop.log_loss, argnums=(0, 1))
        auto_dw, auto_db = grad_fn(jnp.asarray(w), jnp.asarray(b), x, y)
        assert dw.dtype == jnp.float64
        chex.assert_shape(dw, (2,))
        chex.assert_shape(db, ())
        np.testing.assert_allclose(dw, auto_dw, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(db, auto_db, rtol=1e-6, atol=1e-12)
        # The gradient is not trivially zero, and forgetting the batch mean would be caught.
        assert np.abs(np.asarray(dw)).min() > 1e-3
        assert not np.allclose(np.asarray(auto_dw) * 64, dw, rtol=1e-6)


def test_hand_gradients_match_finite_differences_numpy():
    """Independent of jax.grad: central differences of the numpy loss."""
    x, y = _noisy_data(n=30, seed=3)
    w, b, eps = np.array([0.2, -0.4]), -0.1, 1e-6
    with jax.enable_x64(True):
        dw, db = backprop.hand_gradients(w, b, x, y)
    fd_w = [(_np_loss(w + eps * e, b, x, y) - _np_loss(w - eps * e, b, x, y)) / (2 * eps) for e in np.eye(2)]
    fd_b = (_np_loss(w, b + eps, x, y) - _np_loss(w, b - eps, x, y)) / (2 * eps)
    np.testing.assert_allclose(dw, fd_w, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, fd_b, rtol=1e-6, atol=1e-8)


def test_shape_errors_are_loud():
    with pytest.raises(ValueError, match="x shaped"):
        backprop.hand_gradients(jnp.zeros(3), 0.0, jnp.zeros((4, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match="y shaped"):
        backprop.log_loss(jnp.zeros(2), 0.0, jnp.zeros((4, 2)), jnp.zeros(5))
    with pytest.raises(ValueError, match="steps"):
        backprop.fit_logistic_regression(jnp.zeros((4, 2)), jnp.zeros(4), 0.1, 0)


@pytest.mark.parametrize("x64", [True, False], ids=["float64", "float32"])
def test_gradient_descent_matches_sklearn(x64):
    x, y = _noisy_data()
    # C=inf is the unpenalized model: since scikit-learn 1.8 `penalty` is
    # deprecated (removed in 1.10) and `penalty=None` is spelled C=np.inf.
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    ref_w, ref_b = ref.coef_[0], ref.intercept_[0]
    assert np.abs(ref_w).min() > 0.5  # a real, non-trivial fit

    with jax.enable_x64(x64):
        w, b, history = backprop.fit_logistic_regression(x, y, learning_rate=2.0, steps=2000)
        assert w.dtype == (jnp.float64 if x64 else jnp.float32)
        chex.assert_shape(history, (2000,))
        chex.assert_tree_all_finite((w, b, history))

        np.testing.assert_allclose(w, ref_w, atol=1e-3)
        np.testing.assert_allclose(b, ref_b, atol=1e-3)

        history = np.asarray(history)
        np.testing.assert_allclose(history[0], np.log(2.0), rtol=1e-6)  # w = 0, b = 0: a = 1/2
        assert np.all(np.diff(history) <= 1e-6)  # gradient descent on a convex loss never goes up
        final_loss = float(backprop.log_loss(w, b, x, y))
        assert final_loss == pytest.approx(_np_loss(ref_w, ref_b, x, y), abs=1e-6)
        assert final_loss < history[0] - 0.2


def test_too_few_steps_do_not_reach_sklearn():
    """The sklearn comparison can fail: a short run is measurably off."""
    x, y = _noisy_data()
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    w, b, _ = backprop.fit_logistic_regression(x, y, learning_rate=0.1, steps=10)
    assert np.abs(np.asarray(w) - ref.coef_[0]).max() > 1e-2


def test_learning_rate_is_not_static():
    x, y = _noisy_data(n=40)
    w1, _, h1 = backprop.fit_logistic_regression(x, y, learning_rate=0.5, steps=5)
    compiled = backprop._gradient_descent._cache_size()
    w2, _, h2 = backprop.fit_logistic_regression(x, y, learning_rate=1.0, steps=5)
    assert backprop._gradient_descent._cache_size() == compiled  # no recompilation
    assert not np.allclose(w1, w2)
    assert h2[-1] < h1[-1]
