"""The data layer: ``load(name)`` returns a `Dataset` of numpy arrays with its feature and target names.

>>> from dlchapter.data import load, known_datasets
>>> ds = load("diamonds")                         # doctest: +SKIP
>>> ds.x.shape, ds.feature_names[:2], ds.task      # doctest: +SKIP
((53940, 26), ('carat', 'depth'), 'regression')

A researcher's own CSV: ``load_csv(path, target=..., categorical=(...), task=...)``
returns the same `Dataset` (see `dlchapter.data.user_csv`).

Files are found by the lookup order described in `dlchapter.data.sources`
(explicit path or data_dir, ``$DLCHAPTER_DATA_DIR``, the user cache, a
checksummed download). Every bad input raises `DataError`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

from dlchapter.data import images, preprocessing, sources, tabular
from dlchapter.data.sources import DataError, Dataset
from dlchapter.data.user_csv import load_csv

__all__ = ["DataError", "Dataset", "known_datasets", "load", "load_csv"]

_TABLES: dict[str, Callable[[Path, str], Dataset]] = {
    "diamonds": tabular.load_diamonds,
    "california_housing": tabular.load_california_housing,
    "diabetes": tabular.load_diabetes,
    "iris": tabular.load_iris,
}
_SERIES = tuple(tabular.SERIES_COLUMNS)
_IMAGES = images.IMAGE_SETS


def known_datasets() -> tuple[str, ...]:
    """The names `load` accepts, sorted."""
    return tuple(sorted((*_TABLES, *_SERIES, *_IMAGES)))


def _unknown(name: str) -> DataError:
    close = difflib.get_close_matches(name, known_datasets(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return DataError(f"unknown data set {name!r}; known data sets: {', '.join(known_datasets())}.{hint}")


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    path: str | os.PathLike | None = None,
    split: str | None = None,
    max_value: float | None = None,
    missing: str = "error",
    download: bool | None = None,
    via: str = "files",
    base_url: str | None = None,
) -> Dataset:
    """Load a data set by name.

    Args:
      name: one of `known_datasets()`.
      data_dir: a directory searched first (before ``$DLCHAPTER_DATA_DIR`` and the cache).
      path: an explicit file (for image sets: the directory holding the IDX files).
      split: "train" (default) or "test" for mnist and fashion_mnist; tables have no split.
      max_value: keep only rows whose regression target is below this (California: 5.0).
      missing: empty or NaN cells: "error" (default), "drop" the rows, or "impute".
      download: allow a download when no local file is found (default: unless
        ``$DLCHAPTER_OFFLINE`` is set).
      via: "files" (IDX/CSV files) or "tfds" (``tfds.data_source``; image sets only,
        `data_dir` is then tensorflow-datasets' data directory, and tfds downloads
        only when ``download=True``).
      base_url: a mirror replacing every public home (also ``$DLCHAPTER_DATA_URL``).
    """
    if name not in known_datasets():
        raise _unknown(name)
    if missing not in tabular.MISSING_POLICIES:
        raise ValueError(f"missing must be one of {tabular.MISSING_POLICIES}, got {missing!r}")
    if via not in ("files", "tfds"):
        raise ValueError(f"via must be 'files' or 'tfds', got {via!r}")
    if name in _IMAGES:
        if max_value is not None:
            raise ValueError(f"max_value applies to regression data sets, not to {name}")
        if via == "tfds":
            return images.load_tfds(name, split or "train", data_dir=data_dir, download=bool(download))
        return images.load_idx(
            name, split or "train", path=path, data_dir=data_dir, download=download, base_url=base_url
        )
    if via == "tfds":
        raise ValueError(f"via='tfds' is only for {', '.join(_IMAGES)}, not {name}")
    if split is not None:
        raise ValueError(f"{name} has no predefined splits; split it with dlchapter.data.splits")
    spec = sources.REGISTRY[name]
    if name == "iris" and path is None:
        found = sources.find_local(spec, data_dir)  # scikit-learn's copy needs no file
        ds = tabular.load_iris(found, missing)
    else:
        file = sources.locate(spec, path=path, data_dir=data_dir, download=download, base_url=base_url)
        ds = tabular.load_series(name, file, missing) if name in _SERIES else _TABLES[name](file, missing)
    if max_value is not None:
        ds = preprocessing.filter_max_target(ds, max_value)
    return ds
