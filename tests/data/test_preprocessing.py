"""Encoders and the scaler against scikit-learn; the scaler sees only training rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import LabelEncoder, OneHotEncoder
from sklearn.preprocessing import StandardScaler as SkStandardScaler

from dlchapter.data import DataError, Dataset
from dlchapter.data.preprocessing import StandardScaler, filter_max_target, label_encode, one_hot
from dlchapter.data.splits import train_test_split


def test_one_hot_matches_sklearn() -> None:
    labels = np.array([2, 0, 1, 2, 2])
    got = one_hot(labels, 3)
    ref = OneHotEncoder(categories=[[0, 1, 2]]).fit_transform(labels[:, None]).toarray()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    assert one_hot(np.array([], dtype=np.int64), 4).shape == (0, 4)


def test_one_hot_rejects_labels_outside_the_classes() -> None:
    with pytest.raises(DataError, match=r"label 3 at row 1 is outside the known classes 0\.\.2"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(DataError, match="integer class indices"):
        one_hot(np.array([0.5]), 3)


def test_label_encode_matches_sklearn_and_checks_known_classes() -> None:
    values = np.array(["virginica", "setosa", "versicolor", "setosa"])
    codes, classes = label_encode(values)
    encoder = LabelEncoder().fit(values)
    np.testing.assert_array_equal(codes, encoder.transform(values))
    assert classes == tuple(encoder.classes_) and codes.dtype == np.int64
    codes, classes = label_encode(["b", "a"], classes=("b", "a"))
    assert codes.tolist() == [0, 1] and classes == ("b", "a")
    with pytest.raises(
        DataError,
        match=r"iris.csv, column 'species': label\(s\) outside the known classes "
        r"\['setosa', 'versicolor'\]: 'unicorn' \(row 2\)",
    ):
        label_encode(["setosa", "unicorn", "unicorn"], ("setosa", "versicolor"), where="iris.csv, column 'species'")


def test_standard_scaler_matches_sklearn() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    ours = StandardScaler.fit(x)
    ref = SkStandardScaler().fit(x.astype(np.float64))
    np.testing.assert_allclose(ours.mean, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.scale, ref.scale_, rtol=1e-12)
    z = ours.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, ref.transform(x.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(ours.inverse_transform(z), x, atol=1e-5)


def test_constant_columns_do_not_divide_by_zero() -> None:
    x = np.column_stack([np.full(6, 7.0), np.arange(6.0)])
    scaler = StandardScaler.fit(x)
    z = scaler.transform(x)
    assert np.isfinite(z).all() and scaler.scale[0] == 1.0
    np.testing.assert_array_equal(z[:, 0], np.zeros(6))
    np.testing.assert_allclose(SkStandardScaler().fit_transform(x), z)


def test_scaler_sees_no_statistic_of_the_test_rows() -> None:
    x = np.random.default_rng(1).normal(size=(100, 3))
    train, test = train_test_split(100, 0.25, seed=0)
    scaler = StandardScaler.fit(x, rows=train)
    poisoned = x.copy()
    poisoned[test] = 1e6 * np.random.default_rng(2).normal(size=(test.size, 3))  # anything at all
    again = StandardScaler.fit(poisoned, rows=train)
    np.testing.assert_array_equal(scaler.mean, again.mean)
    np.testing.assert_array_equal(scaler.scale, again.scale)
    np.testing.assert_array_equal(scaler.mean, StandardScaler.fit(x[train]).mean)
    np.testing.assert_array_equal(scaler.transform(x[train]), again.transform(poisoned[train]))
    # the same comparison does see the test rows when they are fitted on: the check can fail
    assert not np.allclose(StandardScaler.fit(poisoned).mean, scaler.mean)
    assert not np.allclose(StandardScaler.fit(x).mean, scaler.mean)


def test_scaler_rejects_nan_and_wrong_width() -> None:
    with pytest.raises(DataError, match="NaN or infinite"):
        StandardScaler.fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="fitted on 2 features, got 3"):
        StandardScaler.fit(np.ones((3, 2))).transform(np.ones((1, 3)))


def test_filter_max_target() -> None:
    ds = Dataset(
        "t",
        x=np.arange(8, dtype=np.float32).reshape(4, 2),
        y=np.array([1.0, 5.0, 4.99, 5.00001], np.float32),
        feature_names=("a", "b"),
        target_name="v",
        task="regression",
    )
    kept = filter_max_target(ds, 5.0)
    assert kept.y.tolist() == pytest.approx([1.0, 4.99]) and kept.x.tolist() == [[0, 1], [4, 5]]
    with pytest.raises(ValueError, match="needs regression"):
        filter_max_target(Dataset("c", ds.x, np.zeros(4, np.int64), ("a", "b"), "k", "binary", ("0", "1")), 1.0)
