"""What each data set's target is, known without loading it (for config checks and `dlchapter list`).

Kept beside the presets so that a config can be checked against its data set
(`--task binary` on iris's three classes) before any file is read; a test checks
that the names agree with `dlchapter.data.known_datasets()`.
"""

from __future__ import annotations

TARGET_KINDS: dict[str, str] = {
    "diamonds": "regression",
    "california_housing": "regression",
    "diabetes": "binary",
    "iris": "multiclass",
    "mnist": "images",  # 10 classes of 28 x 28 images
    "fashion_mnist": "images",
    "daily_min_temperatures": "series",
    "airline_passengers": "series",
    "monthly_sunspots": "series",
}
"""Data set name -> "regression", "binary", "multiclass" (tables), "images" or "series"."""

CLASSES: dict[str, int] = {"diabetes": 2, "iris": 3, "mnist": 10, "fashion_mnist": 10}
"""Number of classes of each classification data set."""


def datasets_of_kind(*kinds: str) -> tuple[str, ...]:
    """The data set names whose target is one of `kinds`, in registry order."""
    return tuple(name for name, kind in TARGET_KINDS.items() if kind in kinds)
