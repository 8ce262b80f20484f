"""Hold-out and k-fold evaluation, with preprocessing fitted on each split's training rows only.

A split is a pair (train_idx, val_idx) of row indices. `cross_validate` walks
the splits; for each it fits a `StandardScaler` on the training rows alone,
applies it to both sides, and calls a user `fit_and_score(x_train, y_train,
x_val, y_val, index) -> {score: value}`. `summarize` gives each score's mean
and spread over the splits.

>>> splits = kfold_splits(len(y), 4, seed=0, stratify=y)        # doctest: +SKIP
>>> rows = cross_validate(x, y, splits, fit_and_score)          # doctest: +SKIP
>>> summarize(rows)["accuracy"]["mean"]                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dlchapter.data.preprocessing import StandardScaler
from dlchapter.data.splits import holdout_split, kfold_indices
from dlchapter.reporting.scores import Undefined, is_undefined

Split = tuple[np.ndarray, np.ndarray]
FitAndScore = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], Mapping[str, float]]


def holdout_splits(
    n_rows: int, fraction: float, *, repeats: int = 1, seed: int = 0, stratify: np.ndarray | None = None
) -> list[Split]:
    """`repeats` independent hold-out splits (seeds seed, seed + 1, ...), `fraction` of the rows held out."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    return [holdout_split(n_rows, fraction, seed=seed + r, stratify=stratify) for r in range(repeats)]


def kfold_splits(n_rows: int, k: int, *, seed: int = 0, stratify: np.ndarray | None = None) -> list[Split]:
    """k (train, validation) splits; every row is validated exactly once (per class when stratified)."""
    return kfold_indices(n_rows, k, seed=seed, stratify=stratify)


def cross_validate(
    x: np.ndarray, y: np.ndarray, splits: Sequence[Split], fit_and_score: FitAndScore, *, scale: bool = True
) -> list[dict[str, float]]:
    """One row of scores per split, with "split", "n_train" and "n_val" added.

    With `scale`, inputs are standardized by statistics of that split's
    training rows only: validation rows never inform their own preprocessing.
    """
    rows = []
    for index, (train_idx, val_idx) in enumerate(splits):
        train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
        if np.intersect1d(train_idx, val_idx).size:
            raise ValueError(
                f"split {index + 1}: {np.intersect1d(train_idx, val_idx).size} row(s) are both training and "
                "validation rows"
            )
        x_train, x_val = x[train_idx], x[val_idx]
        if scale:
            scaler = StandardScaler.fit(x, rows=train_idx)
            x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
        returned = fit_and_score(x_train, y[train_idx], x_val, y[val_idx], index)
        scores = {k: v if is_undefined(v) else float(v) for k, v in returned.items()}  # Undefined keeps its reason
        rows.append({"split": index + 1, "n_train": int(train_idx.size), "n_val": int(val_idx.size), **scores})
    return rows


def summarize(rows: Sequence[Mapping[str, float]], names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per score: mean, sample standard deviation (ddof=1; 0 for one split), min and max.

    A score `Undefined` on any split makes its mean and std `Undefined` (naming the splits).
    """
    if not rows:
        raise ValueError("no splits to summarize")
    names = list(names or [k for k in rows[0] if k not in ("split", "n_train", "n_val")])
    out = {}
    for name in names:
        values = np.asarray([row[name] for row in rows], np.float64)
        missing = [str(row.get("split", i + 1)) for i, row in enumerate(rows) if is_undefined(row[name])]
        if missing:  # a summary over splits with an undefined score is itself undefined
            reason = Undefined(f"{name} is undefined on split(s) {', '.join(missing)} of {len(rows)}")
            some = len(missing) < len(rows)
            out[name] = {
                "mean": reason,
                "std": reason,
                "min": float(np.nanmin(values)) if some else reason,
                "max": float(np.nanmax(values)) if some else reason,
            }
            continue
        out[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out
