"""Losses, streaming metrics and host-side scores against scikit-learn."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from dlchapter.engine import losses, metrics
from dlchapter.reporting import scores

RNG = np.random.default_rng(0)


def _weights(n: int) -> np.ndarray:
    w = np.ones(n, np.float32)
    w[-3:] = 0.0  # padded rows
    return w


class TestLosses(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_regression_losses_match_sklearn_on_real_rows(self):
        pred = RNG.normal(size=(20, 1)).astype(np.float32)
        y = RNG.normal(size=20).astype(np.float32)
        w = _weights(20)
        mse = self.variant(losses.mse)(pred, y, w)
        mae = self.variant(losses.mae)(pred, y, w)
        np.testing.assert_allclose(mse, skm.mean_squared_error(y[:-3], pred[:-3, 0]), rtol=1e-5)
        np.testing.assert_allclose(mae, skm.mean_absolute_error(y[:-3], pred[:-3, 0]), rtol=1e-5)
        # the padded rows really are excluded: counting them changes the value
        assert abs(float(losses.mse(pred, y, np.ones(20))) - float(mse)) > 1e-4

    @chex.variants(with_jit=True, without_jit=True)
    def test_binary_cross_entropy_from_logits_matches_sklearn_log_loss(self):
        logits = RNG.normal(scale=3, size=(30, 1)).astype(np.float32)
        y = RNG.integers(0, 2, size=30).astype(np.float32)
        w = _weights(30)
        probs = 1 / (1 + np.exp(-logits[:-3, 0].astype(np.float64)))
        got = self.variant(losses.binary_cross_entropy)(logits, y, w)
        np.testing.assert_allclose(got, skm.log_loss(y[:-3], probs, labels=[0, 1]), rtol=1e-5)

    def test_binary_cross_entropy_is_finite_for_huge_logits(self):
        logits = jnp.array([[1e4], [-1e4]])
        value = losses.binary_cross_entropy(logits, jnp.array([0.0, 1.0]), jnp.ones(2))
        chex.assert_tree_all_finite(value)
        np.testing.assert_allclose(value, 1e4, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_categorical_and_sparse_cross_entropy_match_sklearn(self):
        logits = RNG.normal(size=(25, 4)).astype(np.float32)
        labels = RNG.integers(0, 4, size=25)
        w = _weights(25)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        expected = skm.log_loss(labels[:-3], probs[:-3], labels=range(4))
        one_hot = np.eye(4, dtype=np.float32)[labels]
        np.testing.assert_allclose(
            self.variant(losses.categorical_cross_entropy)(logits, one_hot, w), expected, rtol=1e-5
        )
        np.testing.assert_allclose(
            self.variant(losses.sparse_categorical_cross_entropy)(logits, labels, w), expected, rtol=1e-5
        )

    def test_chapter_loss_example(self):
        # a predicted 0.2 on the true class costs -log 0.2
        logits = jnp.log(jnp.array([[0.2, 0.5, 0.3]]))
        value = losses.categorical_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]), jnp.ones(1))
        np.testing.assert_allclose(value, -np.log(0.2), rtol=1e-6)

    def test_l2_penalty_counts_kernels_only(self):
        params = {
            "dense_0": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 100.0)},
            "output": {"kernel": jnp.ones((3, 1)), "bias": jnp.ones(1)},
        }
        np.testing.assert_allclose(losses.l2_penalty(params, 0.01), 0.01 * (6 * 4.0 + 3 * 1.0))

    def test_unknown_loss_names_the_known_ones(self):
        with pytest.raises(ValueError, match="binary_crossentropy"):
            losses.get_loss("hinge")


def _stream(metric_names, outputs, y, batch_size):
    """Accumulate sums over padded batches the way the train loop does."""
    ms = metrics.get_metrics(metric_names)
    n = len(y)
    total = None
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        w = (idx < n).astype(np.float32)
        idx = np.minimum(idx, n - 1)
        sums = metrics.batch_stats(ms, jnp.asarray(outputs[idx]), jnp.asarray(y[idx]), jnp.asarray(w))
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    return metrics.finish(ms, total)


def test_streamed_regression_metrics_over_padded_batches_match_sklearn():
    pred = RNG.normal(size=(103, 1)).astype(np.float32)
    y = (pred[:, 0] + RNG.normal(scale=0.5, size=103)).astype(np.float32)
    got = _stream(("mse", "mae", "rmse", "r2"), pred, y, batch_size=16)
    np.testing.assert_allclose(got["mse"], skm.mean_squared_error(y, pred[:, 0]), rtol=1e-4)
    np.testing.assert_allclose(got["mae"], skm.mean_absolute_error(y, pred[:, 0]), rtol=1e-4)
    np.testing.assert_allclose(got["rmse"], np.sqrt(skm.mean_squared_error(y, pred[:, 0])), rtol=1e-4)
    np.testing.assert_allclose(got["r2"], skm.r2_score(y, pred[:, 0]), rtol=1e-4)


def test_streamed_accuracy_binary_and_multiclass_match_sklearn():
    logits = RNG.normal(size=(57, 1)).astype(np.float32)
    y = RNG.integers(0, 2, size=57).astype(np.float32)
    got = _stream(("accuracy",), logits, y, batch_size=10)["accuracy"]
    assert got == pytest.approx(skm.accuracy_score(y, logits[:, 0] > 0))
    logits3 = RNG.normal(size=(57, 3)).astype(np.float32)
    labels = RNG.integers(0, 3, size=57)
    assert _stream(("accuracy",), logits3, labels, 8)["accuracy"] == pytest.approx(
        skm.accuracy_score(labels, logits3.argmax(1))
    )
    one_hot = np.eye(3, dtype=np.float32)[labels]
    assert _stream(("accuracy",), logits3, one_hot, 8)["accuracy"] == pytest.approx(
        skm.accuracy_score(labels, logits3.argmax(1))
    )


def test_regression_scores_match_sklearn_and_corr_squared():
    y = RNG.normal(size=200)
    pred = 0.5 * y + RNG.normal(scale=0.3, size=200) + 1.0
    got = scores.regression_scores(y, pred)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert got["r2_corr"] == pytest.approx(np.corrcoef(y, pred)[0, 1] ** 2)
    assert abs(got["r2"] - got["r2_corr"]) > 0.05  # the two R2s differ for a biased predictor


def test_confusion_matrix_and_report_match_sklearn():
    y = RNG.integers(0, 3, size=300)
    pred = np.where(RNG.random(300) < 0.7, y, RNG.integers(0, 3, size=300))
    pred[pred == 2] = 1  # class 2 never predicted: precision 0/0 is undefined (NaN, as zero_division=np.nan)
    np.testing.assert_array_equal(scores.confusion_matrix(y, pred, 3), skm.confusion_matrix(y, pred, labels=[0, 1, 2]))
    got = scores.classification_report(y, pred, ["a", "b", "c"])
    expected = skm.classification_report(
        y, pred, labels=[0, 1, 2], target_names=["a", "b", "c"], output_dict=True, zero_division=np.nan
    )
    assert np.isnan(got["c"]["precision"]) and "never predicted" in str(got["c"]["precision"])
    for name in ("a", "b", "c", "macro avg", "weighted avg"):
        for key in ("precision", "recall", "f1-score", "support"):
            assert got[name][key] == pytest.approx(expected[name][key], nan_ok=True), (name, key)
    assert got["accuracy"]["f1-score"] == pytest.approx(expected["accuracy"])


def test_roc_curve_and_auc_match_sklearn_with_ties():
    y = RNG.integers(0, 2, size=400)
    s = np.round(y * 0.3 + RNG.random(400), 2)  # rounding makes ties
    fpr, tpr, thr = scores.roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert scores.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(y, s))


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        scores.roc_curve(np.ones(5), np.linspace(0, 1, 5))
