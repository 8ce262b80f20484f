"""A researcher's own CSV as a `Dataset`: the same checks and the same type as the built-in loaders.

>>> from dlchapter.data import load_csv
>>> ds = load_csv("houses.csv", target="price", categorical=("region",), task="regression")  # doctest: +SKIP
>>> ds.x.shape, ds.feature_names, ds.categorical_names                                     # doctest: +SKIP
((500, 5), ('rooms', 'area', 'age', 'lat', 'lon'), ('region',))

Numeric feature columns become ``x`` (float32); categorical columns stay as
strings in ``ds.categorical`` and are one-hot encoded after the train/test
split with categories from the training rows only
(`dlchapter.data.preprocessing.CategoricalEncoder`, scikit-learn's
OneHotEncoder), as `dlchapter.runs.tabular_runs.run_tabular` does. ``ds.index``
holds each row's line number in the file, so later errors name the line.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from dlchapter.data import csvfile
from dlchapter.data.sources import DataError, Dataset, shown_values

USER_TASKS = ("regression", "binary", "multiclass")


def _header(path: Path, sep: str) -> tuple[list[str], str]:
    text, where = csvfile._read_text(path, None)
    if not text.strip():
        raise DataError(f"{where}: line 1: the file is empty; expected a header row naming the columns")
    hint = csvfile._delimiter_hint(text) if sep == "," else None
    first = text.lstrip("\n").split("\n", 1)[0]
    names = [n.strip().strip('"') for n in next(csv.reader(io.StringIO(first), delimiter=sep), [])]
    if len(names) < 2:
        raise DataError(
            f"{where}: {hint}"
            if hint
            else f"{where}: line 1: one column {first[:60]!r}; "
            f"expected a header with the feature columns and the target"
        )
    return names, where


def _unknown_column(where: str, name: str, role: str, names: Sequence[str]) -> DataError:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return DataError(
        f"{where}: line 1: no column {name!r} (the {role}) in the header; "
        f"its columns are {shown_values(names, 20)}.{hint}"
    )


def _task_hint(numbers: pd.Series, n_classes: int) -> str:
    """What to pass instead of task='binary': regression for a numeric target with many values."""
    if numbers.notna().all() and n_classes > 20:
        return "; a numeric target with many values is a regression: task='regression' (--task regression)"
    return "; use task='multiclass' (--task multiclass)"


def _classes(frame: pd.DataFrame, target: str, task: str, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """int64 codes and class names of the target; numeric labels sort by value, others as strings."""
    import pandas as pd  # imported on first use (cold start)

    labels = frame[target].astype(str)
    numbers = pd.to_numeric(labels, errors="coerce")
    if numbers.notna().all():
        fractional = numbers != np.round(numbers)
        if fractional.any() and len(set(numbers.tolist())) > 20:
            line = int(frame.index[fractional.to_numpy()][0])
            raise DataError(
                f"{where}: column {target!r}, line {line}: {labels[line]!r} is not a class label: a {task} target "
                f"holds classes, and this column has {numbers.nunique()} distinct fractional values; "
                "a measured quantity is a regression: task='regression' (--task regression)"
            )
        order = sorted(set(numbers.tolist()))
        names = tuple(f"{v:g}" for v in order)
        codes = np.searchsorted(np.asarray(order), numbers.to_numpy())
    else:
        names = tuple(sorted(set(labels.tolist())))
        codes = np.searchsorted(np.asarray(names, dtype=object), labels.to_numpy(dtype=object))
    wanted = "exactly 2" if task == "binary" else "at least 2"
    if (task == "binary" and len(names) != 2) or len(names) < 2:
        first_lines = {n: int(frame.index[codes == i][0]) for i, n in enumerate(names[:6])}
        shown = ", ".join(f"{n!r} (first at line {line})" for n, line in first_lines.items())
        raise DataError(
            f"{where}: column {target!r}: a {task} target needs {wanted} classes, found {len(names)}: {shown}"
            + (_task_hint(numbers, len(names)) if task == "binary" and len(names) > 2 else "")
        )
    return codes.astype(np.int64), names


def load_csv(
    path: str | os.PathLike,
    *,
    target: str,
    categorical: Sequence[str] = (),
    task: str = "regression",
    missing: str = "error",
    features: Sequence[str] | None = None,
    sep: str = ",",
    name: str | None = None,
) -> Dataset:
    """Load a headed CSV (or a .gz/.zip holding one) as a `Dataset`.

    Args:
      path: the file; its first line names the columns.
      target: the column to predict.
      categorical: feature columns holding categories (strings); they are kept
        unencoded in ``ds.categorical`` for a one-hot encoding fitted on training rows.
      task: "regression" (float32 target), "binary" (exactly 2 classes) or
        "multiclass" (2 or more); class labels that are all numbers sort by value,
        others alphabetically; ``class_names`` are their spellings.
      missing: empty or NA cells: "error", "drop" the rows, or "impute" (median of
        the column, or its most frequent category, over the whole file; a row
        without a target is dropped); the counts are in ``ds.missing``.
      features: the feature columns in order (default: every column but the target).
      sep: the field separator.
      name: the data set's name (default: the file name without suffixes).

    Returns:
      A `Dataset`: ``x`` float32 (rows, numeric features), ``y`` float32
      (regression) or int64 classes, ``categorical`` object (rows, K) strings,
      ``index`` int64 line numbers.

    Raises:
      DataError: naming the file, the column and the line, for everything the
        built-in loaders refuse (`dlchapter.data.csvfile.read_checked`), an
        unknown target or categorical column, a non-numeric feature not listed
        as categorical, and a classification target with the wrong number of classes.
      ValueError: a bad `task` or `missing` argument.
    """
    if task not in USER_TASKS:
        raise ValueError(f"task must be one of {USER_TASKS}, got {task!r}")
    if missing not in csvfile.MISSING_POLICIES:
        raise ValueError(f"missing must be one of {csvfile.MISSING_POLICIES}, got {missing!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    names, where = _header(path, sep)
    if target not in names:
        raise _unknown_column(where, target, "target", names)
    for column in categorical:
        if column not in names:
            raise _unknown_column(where, column, "categorical column", names)
    if target in categorical:
        raise DataError(f"{where}: column {target!r} is the target and cannot also be categorical")
    chosen = [n for n in names if n != target] if features is None else list(features)
    for column in chosen:
        if column not in names:
            raise _unknown_column(where, column, "feature", names)
    if target in chosen or not chosen:
        raise DataError(f"{where}: the features must be one or more columns other than the target {target!r}")
    numeric = [c for c in chosen if c not in categorical]
    categorical = [c for c in chosen if c in categorical] + [c for c in categorical if c not in chosen]
    numeric_columns = (*numeric, target) if task == "regression" else tuple(numeric)
    try:
        frame, where = csvfile.read_checked(
            path,
            (*numeric, *categorical, target),
            numeric_columns,
            target=target,
            missing=missing,
            header=True,
            sep=sep,
        )
    except DataError as err:
        if f"column {target!r} must be numeric" in str(err):
            raise DataError(
                f"{err}; a regression target must be numeric: for class labels pass task='binary' or "
                f"'multiclass' (--task binary|multiclass)"
            ) from err
        bad = next((c for c in numeric if f"column {c!r} must be numeric" in str(err)), None)
        if bad is not None:
            raise DataError(
                f"{err}; if it holds categories, pass categorical=(..., {bad!r}) (--categorical {bad})"
            ) from err
        raise
    if task == "regression":
        y, class_names = frame[target].to_numpy(dtype=np.float64).astype(np.float32), None
    else:
        y, class_names = _classes(frame, target, task, where)
    return Dataset(
        name=name or path.name.split(".")[0],
        x=frame[numeric].to_numpy(dtype=np.float64).astype(np.float32),
        y=y,
        feature_names=tuple(numeric),
        target_name=target,
        task=task,
        class_names=class_names,
        source=where,
        index=frame.index.to_numpy(dtype=np.int64),
        categorical=frame[categorical].astype(str).to_numpy(dtype=object) if categorical else None,
        categorical_names=tuple(categorical),
        missing=frame.attrs.get("missing"),
    )
