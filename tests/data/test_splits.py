"""Index splits: seeded train/test, stratification, k-fold coverage, the ordered validation split."""

from __future__ import annotations

import numpy as np
import pytest

from dlchapter.data.splits import holdout_split, kfold_indices, train_test_split

IRIS_LIKE = np.repeat([0, 1, 2], 50)  # sorted by class, as iris is


def _is_partition(parts: list[np.ndarray], n: int) -> bool:
    joined = np.concatenate(parts)
    return joined.size == n and np.array_equal(np.sort(joined), np.arange(n))


def test_train_test_split_is_a_seeded_partition() -> None:
    train, test = train_test_split(150, 0.2, seed=3)
    assert _is_partition([train, test], 150) and test.size == 30
    again = train_test_split(150, 0.2, seed=3)
    np.testing.assert_array_equal(test, again[1])
    assert not np.array_equal(test, train_test_split(150, 0.2, seed=4)[1])


def test_stratified_split_keeps_class_proportions() -> None:
    labels = np.repeat([0, 1, 2], [100, 40, 10])
    for seed in range(5):
        _, test = train_test_split(150, 0.2, seed=seed, stratify=labels)
        assert np.bincount(labels[test], minlength=3).tolist() == [20, 8, 2]
    # without stratification the proportions drift for some seed: the check above can fail
    drift = [np.bincount(labels[train_test_split(150, 0.2, seed=s)[1]], minlength=3).tolist() for s in range(5)]
    assert any(d != [20, 8, 2] for d in drift)


def test_stratify_accepts_one_hot_labels() -> None:
    one_hot = np.eye(3)[IRIS_LIKE]
    _, held = holdout_split(150, 0.2, seed=0, stratify=one_hot)
    assert np.bincount(IRIS_LIKE[held]).tolist() == [10, 10, 10]


def test_ordered_validation_split_is_kerass_last_rows() -> None:
    _, held = holdout_split(150, 0.2, shuffle=False)
    np.testing.assert_array_equal(held, np.arange(120, 150))
    assert set(IRIS_LIKE[held]) == {2}  # why the engine shuffles by default: iris is sorted by class
    _, shuffled = holdout_split(150, 0.2, seed=0, stratify=IRIS_LIKE)
    assert set(IRIS_LIKE[shuffled]) == {0, 1, 2}
    with pytest.raises(ValueError, match="cannot be stratified"):
        holdout_split(150, 0.2, shuffle=False, stratify=IRIS_LIKE)


@pytest.mark.parametrize("stratify", [None, IRIS_LIKE])
def test_kfold_validates_every_row_exactly_once(stratify: np.ndarray | None) -> None:
    folds = kfold_indices(150, 5, seed=0, stratify=stratify)
    assert len(folds) == 5
    assert _is_partition([val for _, val in folds], 150)
    for train, val in folds:
        assert _is_partition([train, val], 150) and val.size == 30
        if stratify is not None:
            assert np.bincount(IRIS_LIKE[val]).tolist() == [10, 10, 10]


def test_split_argument_errors() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        train_test_split(10, 1.0)
    with pytest.raises(ValueError, match="k must be between 2"):
        kfold_indices(3, 4)
    with pytest.raises(ValueError, match="labels for 10 rows"):
        holdout_split(10, 0.5, stratify=np.zeros(9))
