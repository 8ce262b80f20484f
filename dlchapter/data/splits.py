"""Index splits: train/test, validation, k-fold; seeded, optionally stratified.

Every function returns integer index arrays into the rows of a data set, so
the caller decides what to gather (features, targets, weights) and nothing is
copied twice.
"""

from __future__ import annotations

import numpy as np

from dlchapter.data.sources import DataError


def check_class_counts(labels: np.ndarray, minimum: int, purpose: str) -> None:
    """Raise `DataError` unless every class in `labels` has at least `minimum` rows.

    The message names the first short class, its count and every class's count,
    e.g. "a stratified 4-fold split needs at least 4 rows of every class; class 1
    has 2 (counts: 0: 58, 1: 2)".
    """
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    short = np.flatnonzero(counts < minimum)
    if short.size:
        listed = ", ".join(f"{c}: {n}" for c, n in zip(classes.tolist(), counts.tolist()))
        first = short[0]
        raise DataError(
            f"{purpose} needs at least {minimum} rows of every class; class {classes[first].item()!r} has "
            f"{counts[first]} (counts per class: {listed}); use fewer folds or a larger validation or test "
            f"fraction, turn stratification off, or add rows of that class"
        )


def _check_fraction(fraction: float, name: str) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {fraction}")


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Pick about `fraction` of each class (at least one row of each class on each side)."""
    check_class_counts(y, 2, f"a stratified split holding out {fraction:g} of the rows")
    held = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        count = int(round(fraction * rows.size))
        if rows.size >= 2:
            count = min(max(count, 1), rows.size - 1)
        held.append(rows[:count])
    return np.sort(np.concatenate(held))


def holdout_split(
    n_rows: int,
    fraction: float,
    *,
    seed: int = 0,
    stratify: np.ndarray | None = None,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (kept, held_out) index arrays, `fraction` of them held out.

    `shuffle=False` holds out the last rows in order, as Keras's
    `validation_split` does; otherwise rows are drawn with `seed`, per class
    when `stratify` (the labels) is given.

    Raises:
      DataError: fewer than 2 rows; or stratified, and a class has fewer than 2 rows (it cannot be on both sides).
    """
    _check_fraction(fraction, "fraction")
    if n_rows < 2:
        raise DataError(
            f"cannot split {n_rows} row(s) into two non-empty parts (rows to train on and rows held out for "
            "testing or validation): the data set needs more rows"
        )
    if not shuffle:
        if stratify is not None:
            raise ValueError("an ordered split (shuffle=False) cannot be stratified")
        n_held = max(1, int(np.floor(fraction * n_rows)))
        return np.arange(n_rows - n_held), np.arange(n_rows - n_held, n_rows)
    rng = np.random.default_rng(seed)
    if stratify is not None:
        stratify = np.asarray(stratify)
        if stratify.shape[0] != n_rows:
            raise ValueError(f"stratify has {stratify.shape[0]} labels for {n_rows} rows")
        held = _stratified_holdout(
            stratify.reshape(n_rows, -1).argmax(-1) if stratify.ndim > 1 else stratify, fraction, rng
        )
    else:
        n_held = min(max(1, int(round(fraction * n_rows))), n_rows - 1)
        held = np.sort(rng.permutation(n_rows)[:n_held])
    kept = np.setdiff1d(np.arange(n_rows), held, assume_unique=True)
    return kept, held


def train_test_split(
    n_rows: int, test_size: float, *, seed: int = 0, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, test) index arrays; stratified by the labels in `stratify` if given."""
    return holdout_split(n_rows, test_size, seed=seed, stratify=stratify, shuffle=True)


def kfold_indices(
    n_rows: int, k: int, *, seed: int = 0, stratify: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, validation) index pairs; every row is validated exactly once.

    Raises:
      ValueError: k outside 2..n_rows.
      DataError: stratified, and a class has fewer than k rows (some fold would lack it).
    """
    if not 2 <= k <= n_rows:
        raise ValueError(f"k must be between 2 and the number of rows ({n_rows}), got {k}")
    if stratify is not None:
        check_class_counts(stratify, k, f"a stratified {k}-fold split")
    rng = np.random.default_rng(seed)
    fold_of_row = np.empty(n_rows, dtype=np.int64)
    if stratify is None:
        order = rng.permutation(n_rows)
        fold_of_row[order] = np.arange(n_rows) % k
    else:
        labels = np.asarray(stratify)
        offset = 0
        for label in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == label))
            fold_of_row[rows] = (np.arange(rows.size) + offset) % k
            offset += rows.size
    rows = np.arange(n_rows)
    return [(rows[fold_of_row != f], rows[fold_of_row == f]) for f in range(k)]
