"""Preprocessing fitted on training rows only: label and one-hot encoding, standard scaling, target filters.

Nothing here looks at rows it is not given: `StandardScaler.fit` takes the
training rows (or the full array plus the training row indices) and the
fitted statistics are then applied unchanged to validation and test rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.preprocessing import OneHotEncoder

from dlchapter.data.sources import DataError, Dataset, shown_values


def one_hot(labels: np.ndarray | Sequence[int], n_classes: int) -> np.ndarray:
    """float32 (N, n_classes) one-hot rows of integer class indices 0..n_classes-1."""
    labels_N = np.asarray(labels)
    if labels_N.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {labels_N.shape}")
    if labels_N.size and not np.issubdtype(labels_N.dtype, np.integer):
        raise DataError(f"one_hot needs integer class indices, got dtype {labels_N.dtype}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be positive, got {n_classes}")
    bad = (labels_N < 0) | (labels_N >= n_classes)
    if bad.any():
        raise DataError(
            f"label {labels_N[bad][0]} at row {int(np.flatnonzero(bad)[0])} is outside the known "
            f"classes 0..{n_classes - 1}"
        )
    out_NxC = np.zeros((labels_N.size, n_classes), dtype=np.float32)
    out_NxC[np.arange(labels_N.size), labels_N] = 1.0
    return out_NxC


def label_encode(
    values: np.ndarray | Sequence, classes: Sequence | None = None, *, where: str = ""
) -> tuple[np.ndarray, tuple]:
    """Map labels to int64 codes; returns (codes, classes).

    Without `classes` they are the sorted distinct values (as scikit-learn's
    LabelEncoder does); with `classes`, a label not among them raises a
    `DataError` naming it (and `where`, e.g. the file and column).
    """
    values_N = np.asarray(values)
    if classes is None:
        known, codes_N = np.unique(values_N, return_inverse=True)
        return codes_N.astype(np.int64).reshape(values_N.shape), tuple(known.tolist())
    known = tuple(classes)
    lookup = {c: i for i, c in enumerate(known)}
    codes_N = np.empty(values_N.shape, dtype=np.int64)
    unknown: dict = {}
    for i, value in enumerate(values_N.tolist()):
        code = lookup.get(value)
        if code is None:
            unknown.setdefault(value, i)
            code = -1
        codes_N[i] = code
    if unknown:
        shown = ", ".join(f"{v!r} (row {r + 1})" for v, r in list(unknown.items())[:5])
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}label(s) outside the known classes {list(known)}: {shown}")
    return codes_N, known


@dataclasses.dataclass(frozen=True)
class StandardScaler:
    """Per-feature standardisation z = (x - mean) / scale, as scikit-learn's StandardScaler.

    `scale` is the population standard deviation (ddof=0), with 1.0 for
    constant columns so they map to 0 instead of dividing by zero.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, rows: np.ndarray | None = None) -> StandardScaler:
        """Fit on `x` (N, F), or only on `x[rows]` when training row indices are given."""
        x_NxF = np.asarray(x, dtype=np.float64)
        if rows is not None:
            x_NxF = x_NxF[np.asarray(rows)]
        if x_NxF.ndim != 2 or x_NxF.shape[0] == 0:
            raise ValueError(f"fit needs a non-empty (rows, features) array, got shape {x_NxF.shape}")
        if not np.isfinite(x_NxF).all():
            raise DataError("StandardScaler.fit: the training rows contain NaN or infinite values")
        mean_F = x_NxF.mean(axis=0)
        std_F = x_NxF.std(axis=0)
        tiny = 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean_F), 1.0)
        scale_F = np.where(std_F <= tiny, 1.0, std_F)
        return cls(mean=mean_F, scale=scale_F)

    @staticmethod
    def _dtype(x: np.ndarray) -> np.dtype:
        return x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise with the fitted statistics (float32 unless `x` is float64)."""
        x = np.asarray(x)
        self._check(x)
        return ((x - self.mean) / self.scale).astype(self._dtype(x))

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Undo `transform`."""
        x = np.asarray(x)
        self._check(x)
        return (x * self.scale + self.mean).astype(self._dtype(x))

    def _check(self, x: np.ndarray) -> None:
        if x.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"scaler was fitted on {self.mean.shape[0]} features, got {x.shape[-1]}")


def filter_max_target(ds: Dataset, max_value: float) -> Dataset:
    """Keep the rows of a regression data set whose target is strictly below `max_value`.

    With ``max_value=5.0`` on California housing this is the chapter's
    ``Value < 5`` filter, which drops the censored 500,001-dollar blocks.
    """
    if ds.task != "regression":
        raise ValueError(f"{ds.name} is a {ds.task} data set; a target filter needs regression")
    return ds.select(ds.y < max_value)


@dataclasses.dataclass(frozen=True)
class ZeroImputer:
    """Replace zeros that mean "not measured" by the median of the measured training values.

    Pima's Glucose, BloodPressure, SkinThickness, Insulin and BMI record a
    missing measurement as 0 (a living patient has none of them at zero).
    `fit` takes each listed column's median over its non-zero training rows;
    `transform` writes it into every zero of those columns.
    """

    columns: tuple[int, ...]
    medians: tuple[float, ...]

    @classmethod
    def fit(cls, x: np.ndarray, columns: Sequence[int]) -> ZeroImputer:
        """Medians of the non-zero values of each column of `columns` in the training rows `x`."""
        medians = []
        for c in columns:
            measured = x[:, c][x[:, c] != 0]
            if measured.size == 0:
                raise DataError(f"column {c} is zero in every training row: nothing to impute it from")
            medians.append(float(np.median(measured)))
        return cls(tuple(int(c) for c in columns), tuple(medians))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """A copy of `x` with the zeros of the fitted columns replaced by their medians."""
        out = np.array(x, copy=True)
        for c, median in zip(self.columns, self.medians):
            out[out[:, c] == 0, c] = median
        return out


def filter_feature_range(ds: Dataset, bounds: dict[str, tuple[float, float]]) -> tuple[Dataset, int]:
    """Keep the rows whose named features lie in (low, high]; returns the data set and how many rows were dropped.

    The rule reads only features, never the target, so it may run before the
    train/test split: diamonds with a zero or a 58.9 mm dimension are
    recording errors, not diamonds.
    """
    missing = [name for name in bounds if name not in ds.feature_names]
    if missing:
        raise DataError(f"{ds.name} has no feature(s) {missing}; its features are {list(ds.feature_names)}")
    keep = np.ones(len(ds.y), bool)
    for name, (low, high) in bounds.items():
        column = ds.x[:, ds.feature_names.index(name)]
        keep &= (column > low) & (column <= high)
    return ds.select(keep), int((~keep).sum())


@dataclasses.dataclass(frozen=True)
class CategoricalEncoder:
    """One-hot encoding of categorical columns with categories taken from the training rows only.

    A thin wrapper of scikit-learn's ``OneHotEncoder`` (sorted categories,
    float32 output) that names what it refuses: with
    ``handle_unknown="error"`` a category absent from the training rows raises
    a `DataError` naming it, its column and its line; with ``"ignore"`` such a
    row gets all zeros in that column's block.
    """

    encoder: OneHotEncoder
    names: tuple[str, ...]
    handle_unknown: str

    @classmethod
    def fit(cls, values: np.ndarray, names: Sequence[str], handle_unknown: str = "error") -> CategoricalEncoder:
        """Fit on the training rows' strings `values` (N, K), K = len(names)."""
        from sklearn.preprocessing import OneHotEncoder  # scikit-learn: imported on first use (cold start)

        if handle_unknown not in ("error", "ignore"):
            raise ValueError(f"handle_unknown must be 'error' or 'ignore', got {handle_unknown!r}")
        values_NxK = np.asarray(values, dtype=object)
        if values_NxK.ndim != 2 or values_NxK.shape[1] != len(names):
            raise ValueError(f"values must be (rows, {len(names)}), got shape {values_NxK.shape}")
        encoder = OneHotEncoder(handle_unknown=handle_unknown, sparse_output=False, dtype=np.float32)
        encoder.fit(values_NxK)
        return cls(encoder, tuple(names), handle_unknown)

    @property
    def categories(self) -> dict[str, list[str]]:
        """Each column's categories, in the order of the one-hot columns."""
        return {name: [str(c) for c in cats] for name, cats in zip(self.names, self.encoder.categories_)}

    @property
    def feature_names(self) -> tuple[str, ...]:
        """``column_category`` for every one-hot column, as ``pd.get_dummies`` names them."""
        return tuple(f"{name}_{c}" for name, cats in self.categories.items() for c in cats)

    def transform(self, values: np.ndarray, lines: np.ndarray | None = None, where: str = "") -> np.ndarray:
        """float32 (N, total categories) one-hot rows; `lines` (N,) and `where` name an unknown category's row."""
        values_NxK = np.asarray(values, dtype=object)
        if self.handle_unknown == "error":
            for k, (name, cats) in enumerate(zip(self.names, self.encoder.categories_)):
                unknown = ~np.isin(values_NxK[:, k], cats)
                if unknown.any():
                    row = int(np.flatnonzero(unknown)[0])
                    line = f", line {int(lines[row])}" if lines is not None else f", row {row + 1}"
                    prefix = f"{where}: " if where else ""
                    raise DataError(
                        f"{prefix}column {name!r}{line}: category {values_NxK[row, k]!r} does not occur in the "
                        f"training rows ({len(cats)} known: {shown_values(cats)}); {int(unknown.sum())} such row(s); "
                        f"encode unseen categories as all zeros with handle_unknown='ignore'"
                    )
        return self.encoder.transform(values_NxK)
