"""Choices that make the run figures readable: log scale for curves that span decades, class names.

Used by `dlchapter.reporting.plots` (training curves, confusion matrix) and `dlchapter.reporting.compare`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Names of classes a loader knows only as numbers. Pima diabetes: Outcome 0/1 is "tested negative/positive for
# diabetes" (the data set's description, National Institute of Diabetes and Digestive and Kidney Diseases).
CLASS_NAMES: dict[str, tuple[str, ...]] = {"diabetes": ("no diabetes", "diabetes")}


def needs_log_scale(*curves: Iterable[float], decades: float = 2.0) -> bool:
    """True when the curves' finite positive values span more than `decades` powers of ten (max / min > 10**decades).

    Curves with a zero or negative value stay linear (a log axis would hide them).
    """
    values = np.concatenate([np.asarray(list(c), dtype=np.float64).ravel() for c in curves]) if curves else np.array([])
    values = values[np.isfinite(values)]
    if values.size < 2 or np.any(values <= 0):
        return False
    return bool(np.log10(values.max() / values.min()) > decades)


def class_names(dataset_name: str, names: Sequence[str] | None, n_classes: int) -> list[str]:
    """The names to print for classes 0..n-1: the loader's when they are words, else CLASS_NAMES, else the numbers."""
    numeric = names is None or all(str(n).strip().lstrip("-").isdigit() for n in names)
    if numeric and dataset_name in CLASS_NAMES and len(CLASS_NAMES[dataset_name]) == n_classes:
        return list(CLASS_NAMES[dataset_name])
    return list(names) if names is not None else [str(c) for c in range(n_classes)]
