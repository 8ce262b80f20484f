"""Checks of what `Trainer.fit`/`evaluate` and `ManyModels.fit`/`evaluate` are given, before any step runs.

`as_numpy` turns pandas DataFrames and Series into numpy arrays (`to_numpy()`, as Keras accepts them; pandas
is never imported here). `check_inputs` is the one gate both engines call with the model's output shape
(`jax.eval_shape` of the model on one batch, `output_struct`): x and y finite (ValueError naming x or y and
the first bad row), a loss that returns a scalar (for any loss, `jax.eval_shape`), and for the built-in losses
(`losses.LOSSES`, named by string) y's dtype, values and shape against the loss and the model's outputs.
A user's own loss or metric callable is not second-guessed beyond the scalar.

Decisions (Keras's where it has one):
- sparse_categorical_crossentropy: labels are class indices in [0, n_classes), n_classes the model's output
  width (>= 2); float arrays holding whole numbers are accepted; y of shape (N, 1) is accepted and squeezed
  to (N,), as Keras does; one-hot y is refused with a pointer to categorical_crossentropy.
- categorical_crossentropy: y is (N, n_classes) with rows >= 0 summing to 1 (one-hot or soft targets).
- binary_crossentropy: labels are 0 or 1 (soft targets: pass the loss as a callable, e.g.
  `losses.binary_cross_entropy`); y has as many values per row as the model has outputs.
- mse / mae: the model's outputs per row equal y's values per row (y (N,) needs outputs (N, 1) or (N,)).
`check_monitor` validates a monitored name (EarlyStopping, any callback with a `monitor`) at fit start.
Cost: one pass over y on the host per check and one `np.isfinite` over x per fit.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any
SOFT_BINARY_HINT = (
    "for soft targets in [0, 1] pass the loss as a callable (dlchapter.engine.losses.binary_cross_entropy)"
)


def _is_pandas(obj: Any) -> bool:
    module = type(obj).__module__
    return (module == "pandas" or module.startswith("pandas.")) and hasattr(obj, "to_numpy")


def as_numpy(tree: PyTree, name: str) -> PyTree:
    """`tree` with every pandas DataFrame or Series leaf replaced by its `to_numpy()` (the index is dropped;
    nullable or mixed numeric and bool columns as float64 with NaN for missing values, which `check_finite`
    then names), and a nested list or tuple of plain numbers as one numpy array.

    Raises ValueError naming `name` and the columns when a DataFrame has non-numeric columns.
    """
    leaves = jax.tree.leaves(tree)
    if isinstance(tree, list | tuple) and leaves and all(isinstance(a, int | float | np.number) for a in leaves):
        return np.asarray(tree)

    def convert(leaf: Any) -> Any:
        if not _is_pandas(leaf):
            return leaf
        if hasattr(leaf, "columns"):
            bad = [str(c) for c, dtype in leaf.dtypes.items() if getattr(dtype, "kind", "O") not in "biuf"]
            if bad:
                raise ValueError(
                    f"{name}: the DataFrame's columns {bad} are not numeric; encode them first "
                    "(pandas.get_dummies or sklearn's OneHotEncoder) or drop them"
                )
        elif getattr(leaf.dtype, "kind", "O") not in "biuf":
            return leaf.to_numpy()  # e.g. text labels: check_targets names the dtype
        array = leaf.to_numpy()
        return leaf.to_numpy(dtype=np.float64, na_value=np.nan) if array.dtype == object else array

    return jax.tree.map(convert, tree)


def _label(name: str, path: tuple) -> str:
    return f"{name}{jax.tree_util.keystr(path)}"


def _host(leaf: Any) -> np.ndarray | None:
    """The leaf as a numpy array, or None for an array that is not all in this process (cannot be read here)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return None
    return np.asarray(leaf)


def check_finite(tree: PyTree, name: str, rows_per_fold: int | None = None) -> None:
    """Raises ValueError naming `name` (x or y), the first row holding NaN or inf, and the count of such rows.

    `rows_per_fold`: the leaves are (folds, rows, ...) (ManyModels' data); the row is then named within its fold.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not jax.numpy.issubdtype(_dtype(leaf), jax.numpy.inexact):  # float, bfloat16, complex
            continue
        a = _host(leaf)
        if a is None or a.size == 0:
            continue
        finite = np.isfinite(a)
        if finite.all():
            continue
        rows = finite.reshape(-1, *a.shape[2:]) if rows_per_fold is not None else finite
        bad_rows = np.flatnonzero(~rows.reshape(rows.shape[0], -1).all(axis=1)) if rows.ndim else np.array([0])
        first = int(bad_rows[0])
        where = f"row {first}"
        if rows_per_fold is not None:
            where = f"row {first % rows_per_fold}" + (f" of fold {first // rows_per_fold}" if a.shape[0] > 1 else "")
        value = a.reshape(rows.shape)[first] if rows.ndim else a
        found = "NaN" if np.isnan(value).any() else "inf"
        raise ValueError(
            f"{_label(name, path)} holds {found} at {where} ({bad_rows.size} such row"
            f"{'s' * (bad_rows.size > 1)} in all); "
            "drop or impute those rows before training (e.g. sklearn's SimpleImputer)"
        )


def rows_struct(tree: PyTree, batch: int) -> PyTree:
    """ShapeDtypeStructs of `batch` rows of every leaf of `tree` (arrays with a leading row axis): what
    `jax.eval_shape` of the model on one batch takes."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((batch, *np.shape(a)[1:]), _dtype(a)), tree)


def _dtype(a: Any) -> np.dtype:
    dtype = getattr(a, "dtype", None)
    dtype = np.dtype(dtype if dtype is not None else np.asarray(a).dtype)
    return jax.dtypes.canonicalize_dtype(dtype)


def check_loss_scalar(loss_fn: Callable, loss: Any, out: Any, y: PyTree, batch: int) -> None:
    """Raises ValueError naming the loss when it does not return a scalar for a batch of `batch` rows;
    TypeError naming it when it cannot be called as `loss(outputs, targets, weights)`."""
    name = loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))
    w = jax.ShapeDtypeStruct((batch,), np.float32)
    try:
        result = jax.eval_shape(loss_fn, out, rows_struct(y, batch), w)
    except TypeError as error:
        if "positional argument" not in str(error) and "keyword argument" not in str(error):
            raise
        raise TypeError(
            f"the loss {name} cannot be called as loss(outputs, targets, weights_B) -> scalar: {error}"
        ) from error
    shape = getattr(result, "shape", None)
    if shape != ():
        raise ValueError(
            f"the loss {name} returns {'shape ' + str(shape) if shape is not None else type(result).__name__} "
            f"for a batch of {batch} rows; a loss must return one number: average the per-example values, "
            "e.g. dlchapter.engine.losses.weighted_mean(values_B, weights_B)"
        )


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def _values(count: int) -> str:
    return f"{count} value{'s' * (count != 1)}"


def _width(shape: Sequence[int]) -> int:
    return math.prod(shape[1:])


def _check_sparse(y: np.ndarray, out: Any, where: str) -> np.ndarray:
    if len(out.shape) != 2:
        raise ValueError(
            f"{where}: sparse_categorical_crossentropy needs outputs (batch, classes); the model gives "
            f"{tuple(out.shape)} per batch"
        )
    n_classes = out.shape[1]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)  # Keras accepts (N, 1) class indices
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"{where}: y has shape {y.shape}: one-hot rows, but sparse_categorical_crossentropy takes class "
            "indices (N,); use y.argmax(axis=1), or the one-hot loss (TASKS['multiclass'], categorical_crossentropy)"
        )
    if y.ndim != 1:
        raise ValueError(f"{where}: y has shape {y.shape}; sparse_categorical_crossentropy takes class indices (N,)")
    if n_classes < 2:
        raise ValueError(
            f"{where}: the model outputs {_values(n_classes)} per row, but sparse_categorical_crossentropy needs one "
            "output per class: end the model in Dense(n_classes) (two classes: Dense(2), or TASKS['binary'])"
        )
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        row = _first(y != np.round(y))
        raise ValueError(
            f"{where}: y holds {y[row]} at row {row}; sparse class labels must be whole numbers 0..{n_classes - 1} "
            "(encode the classes with sklearn's LabelEncoder)"
        )
    low, high = (y.min(), y.max()) if y.size else (0, 0)
    if low < 0 or high >= n_classes:
        row = _first((y < 0) | (y >= n_classes))
        fix = (
            f"end the model in Dense({int(high) + 1}) if there are {int(high) + 1} classes"
            if low >= 0
            else "encode the classes as 0..C-1 (sklearn's LabelEncoder)"
        )
        raise ValueError(
            f"{where}: y holds label {y[row]} at row {row}, outside the classes 0..{n_classes - 1} of a model with "
            f"{n_classes} outputs (labels range {low}..{high}); {fix}"
        )
    return y


def _check_categorical(y: np.ndarray, out: Any, where: str) -> np.ndarray:
    n_classes = out.shape[-1]
    if len(out.shape) != 2:
        raise ValueError(
            f"{where}: categorical_crossentropy needs outputs (batch, classes); the model gives "
            f"{tuple(out.shape)} per batch"
        )
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        raise ValueError(
            f"{where}: y has shape {y.shape}: class indices, but categorical_crossentropy takes one-hot rows "
            f"(N, {n_classes}); use the sparse loss (TASKS['sparse_multiclass'], sparse_categorical_crossentropy) "
            f"or one-hot encode y (np.eye({n_classes})[y])"
        )
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise ValueError(
            f"{where}: y has shape {y.shape} but the model outputs {n_classes} values per row; categorical_"
            f"crossentropy needs one-hot y of shape (N, {n_classes}): match the model's last Dense to the classes"
        )
    bad = (y < 0).any(axis=1) | ~np.isclose(y.sum(axis=1), 1.0, atol=1e-3)
    if bad.any():
        row = _first(bad)
        raise ValueError(
            f"{where}: y's row {row} is {y[row].tolist()}; categorical_crossentropy needs rows >= 0 summing to 1 "
            "(one-hot: np.eye(n_classes)[labels])"
        )
    return y


def _check_binary(y: np.ndarray, out: Any, where: str) -> np.ndarray:
    if _width(out.shape) != max(_width(y.shape), 1):
        raise ValueError(
            f"{where}: the model outputs {_values(_width(out.shape))} per row but y has {_width(y.shape) or 1} "
            f"(shape {y.shape}); binary_crossentropy needs one output per 0/1 label: end the model in Dense(1) "
            "(for several classes use TASKS['sparse_multiclass'] with Dense(n_classes))"
        )
    bad = (y != 0) & (y != 1)
    if bad.any():
        row = _first(bad.reshape(bad.shape[0], -1))
        value = y.reshape(y.shape[0], -1)[row].tolist()
        raise ValueError(
            f"{where}: y holds {value if len(value) > 1 else value[0]} at row {row}; binary labels must be 0 or 1 "
            f"(for more classes use TASKS['sparse_multiclass'] with Dense(n_classes); {SOFT_BINARY_HINT})"
        )
    return y


def _check_regression(y: np.ndarray, out: Any, where: str, loss: str) -> np.ndarray:
    if _width(out.shape) != max(_width(y.shape), 1):
        raise ValueError(
            f"{where}: the model outputs {_values(_width(out.shape))} per row (outputs {tuple(out.shape)}) but y "
            f"has {_values(_width(y.shape) or 1)} per row (shape {y.shape}); {loss} compares them column by column: "
            f"end the model in Dense({_width(y.shape) or 1}) or give y {_width(out.shape)} columns"
        )
    return y


TARGET_CHECKS: dict[str, Callable[..., np.ndarray]] = {
    "sparse_categorical_crossentropy": _check_sparse,
    "categorical_crossentropy": _check_categorical,
    "binary_crossentropy": _check_binary,
    "mse": lambda y, out, where: _check_regression(y, out, where, "mse"),
    "mae": lambda y, out, where: _check_regression(y, out, where, "mae"),
}


def check_targets(loss: Any, y: PyTree, out: Any, where: str) -> PyTree:
    """y checked against a built-in loss (`loss` a registered name) and the model's output struct `out`;
    returns y, (N, 1) sparse labels squeezed to (N,). A callable loss: y as given.

    Raises ValueError naming `where`'s y, what was found and what to do (module docstring: the rules).
    """
    if not isinstance(loss, str) or loss not in TARGET_CHECKS:
        return y
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(
            f"{where}: the model returns {type(out).__name__} of {len(jax.tree.leaves(out))} arrays; the built-in "
            f"loss {loss!r} takes one output array: return one, or pass the loss as a callable"
        )
    if not hasattr(y, "shape"):
        raise ValueError(f"{where}: y is a {type(y).__name__}; the built-in loss {loss!r} takes one array y (N, ...)")
    a = _host(y)
    if a is None:  # spread over processes: each checks its own part where it is loaded
        return y
    if a.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: y has dtype {a.dtype}; {loss} needs numbers (encode text labels as 0..C-1 with sklearn's "
            "LabelEncoder)"
        )
    checked = TARGET_CHECKS[loss](a, out, where)
    return checked if checked.shape != a.shape else y


def check_inputs(
    loss: Any, loss_fn: Callable, x: PyTree, y: PyTree, out: Any, batch: int, where: str, rows_per_fold=None
) -> PyTree:
    """The gate before any step: x and y finite, y against a built-in loss and the model's outputs `out`
    (a batch of `batch` rows), the loss a scalar. Returns y (maybe squeezed, `check_targets`)."""
    check_finite(x, f"{where}: x", rows_per_fold)
    check_finite(y, f"{where}: y", rows_per_fold)
    y = check_targets(loss, y, out, where)
    check_loss_scalar(loss_fn, loss, out, y, batch)
    return y


def check_monitor(owner: str, monitor: str, names: Sequence[str], has_validation: bool) -> None:
    """Raises ValueError unless `monitor` is one of `names` (what fit logs) or, with validation, val_ of one.

    The message says what is logged, suggests the closest name and, for a val_ name without validation data,
    how to get validation.
    """
    logged = [*names, *(f"val_{n}" for n in names if has_validation and n not in ("lr", "epoch_seconds"))]
    if monitor in logged:
        return
    base = monitor.removeprefix("val_")
    if monitor.startswith("val_") and base in names and not has_validation:
        raise ValueError(
            f"{owner} monitors {monitor!r}, but fit has no validation data: pass validation_data=(x_val, y_val) or "
            f"FitConfig(validation_split=0.2), or monitor {base!r}"
        )
    close = difflib.get_close_matches(monitor, logged, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"{owner} monitors {monitor!r}, which fit does not log; {hint}fit logs {', '.join(logged)}")


__all__ = ["as_numpy", "check_finite", "check_inputs", "check_loss_scalar", "check_monitor", "check_targets"]
