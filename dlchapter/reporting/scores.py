"""Host-side scores on a whole test set: regression errors and R2, confusion
matrix, classification report, ROC curve and AUC.

Written in numpy from their definitions (the tests compare them with
scikit-learn), run once after training on the gathered predictions.

A score that its data leave undefined (an AUC with one class among the true
labels, the precision of a class never predicted, the recall of a class with
no rows, an R2 of a constant target) is an `Undefined` value: a float NaN that
carries its reason. The report writes it as ``null`` in metrics.json and as
"undefined: <reason>" in summary.md, and warns once (`UndefinedScoreWarning`);
it is never a crash and never a made-up number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class UndefinedScoreWarning(UserWarning):
    """A run reported at least one `Undefined` score (one warning per report)."""


class Undefined(float):
    """A score its data leave undefined: NaN as a float, with `reason` saying why.

    Arithmetic on it gives NaN (a mean over it stays visibly undefined);
    ``json`` output through `dlchapter.reporting.report` turns it into ``null``.
    """

    reason: str

    def __new__(cls, reason: str) -> Undefined:
        value = super().__new__(cls, float("nan"))
        value.reason = str(reason)
        return value

    def __repr__(self) -> str:
        return f"Undefined({self.reason!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return f"undefined: {self.reason}"

    def __reduce__(self):
        return (Undefined, (self.reason,))


def is_undefined(value: Any) -> bool:
    """Whether `value` is an `Undefined` score."""
    return isinstance(value, Undefined)


def undefined_scores(values: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, reason) of every `Undefined` inside nested dicts and lists, in order."""
    if isinstance(values, Undefined):
        yield prefix, values.reason
    elif isinstance(values, dict):
        for key, value in values.items():
            yield from undefined_scores(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            yield from undefined_scores(value, f"{prefix}[{i}]")


def one_class_reason(y_true: np.ndarray, what: str = "the true labels") -> str | None:
    """Why an ROC curve and AUC are undefined for binary labels `y_true`, or None when both classes occur."""
    y_true = np.asarray(y_true).ravel().astype(bool)
    if y_true.size == 0:
        return f"{what} are empty"
    if y_true.all() or not y_true.any():
        present = 1 if y_true.any() else 0
        return f"only class {present} occurs among {what} ({y_true.size} row(s)); an ROC curve needs both classes"
    return None


def binary_auc(y_true: np.ndarray, scores: np.ndarray, what: str = "the true labels") -> float:
    """ROC AUC of `scores` for 0/1 labels `y_true`; `Undefined` when only one class occurs."""
    reason = one_class_reason(y_true, what)
    if reason is not None:
        return Undefined(reason)
    fpr, tpr, _ = roc_curve(y_true, scores)
    return auc(fpr, tpr)


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R2 as 1 - SSE/SST, and the chapter's R2 as corr(y, ŷ)².

    R2 is `Undefined` for a constant target (SST = 0; scikit-learn with
    ``force_finite=False`` gives -inf or NaN); the squared correlation also when
    the predictions are constant. All are `Undefined` for zero rows.
    """
    y_true = np.asarray(y_true, np.float64).ravel()
    y_pred = np.asarray(y_pred, np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} targets but {y_pred.size} predictions")
    if y_true.size == 0:
        return {k: Undefined("no test rows") for k in ("mse", "rmse", "mae", "r2", "r2_corr")}
    error = y_pred - y_true
    mse = float(np.mean(error**2))
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    constant = f"the target is constant ({y_true[0]:g} in all {y_true.size} row(s))"
    if sst == 0:
        r2, r2_corr = Undefined(f"{constant}: 1 - SSE/SST divides by SST = 0"), Undefined(f"{constant}: no correlation")
    else:
        r2 = float(1.0 - np.sum(error**2) / sst)
        if y_pred.std() > 0:
            r2_corr = float(np.corrcoef(y_true, y_pred)[0, 1] ** 2)
        else:
            r2_corr = Undefined(f"the predictions are constant ({y_pred[0]:g}): no correlation")
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(error))), "r2": r2, "r2_corr": r2_corr}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with true classes in rows and predicted classes in columns."""
    y_true = np.asarray(y_true, np.int64).ravel()
    y_pred = np.asarray(y_pred, np.int64).ravel()
    for name, labels in (("true", y_true), ("predicted", y_pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class, plus accuracy, macro and weighted averages.

    Same layout and values as scikit-learn's ``classification_report(output_dict=True,
    zero_division=np.nan)``: the precision of a class never predicted and the
    recall of a class with no rows are `Undefined` (F1 = 2TP / (2TP + FP + FN)
    only when the class is neither present nor predicted), and the averages
    are taken over the classes where the score is defined (a weighted average
    whose defined classes have no rows is `Undefined`; scikit-learn reports 0).
    """
    matrix = confusion_matrix(y_true, y_pred, len(class_names)).astype(np.float64)
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    total = support.sum()
    if total == 0:
        raise ValueError("a classification report needs at least one row")
    f1_denominator = support + predicted
    rows: dict[str, dict[str, float]] = {}
    for i, name in enumerate(class_names):
        rows[str(name)] = {
            "precision": float(tp[i] / predicted[i])
            if predicted[i]
            else Undefined(f"class {name!r} is never predicted"),
            "recall": float(tp[i] / support[i]) if support[i] else Undefined(f"class {name!r} has no rows"),
            "f1-score": float(2 * tp[i] / f1_denominator[i])
            if f1_denominator[i]
            else Undefined(f"class {name!r} has no rows and is never predicted"),
            "support": float(support[i]),
        }
    accuracy = float(tp.sum() / total)
    report: dict[str, dict[str, float]] = dict(rows)
    report["accuracy"] = {"precision": accuracy, "recall": accuracy, "f1-score": accuracy, "support": float(total)}
    for average in ("macro avg", "weighted avg"):
        report[average] = {"support": float(total)}
        for score in ("precision", "recall", "f1-score"):
            values = np.array([row[score] for row in rows.values()], np.float64)
            defined = ~np.isnan(values)
            weights = np.where(defined, support if average == "weighted avg" else 1.0, 0.0)
            report[average][score] = (
                float(values[defined] @ weights[defined] / weights.sum())
                if weights.sum() > 0
                else Undefined(f"no row belongs to a class whose {score} is defined")
            )
        report[average] = {k: report[average][k] for k in ("precision", "recall", "f1-score", "support")}
    return report


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), one point per distinct score.

    The first point is (0, 0) at threshold +inf; a row counts as positive when
    its score >= the threshold.
    """
    y_true = np.asarray(y_true).ravel().astype(bool)
    scores = np.asarray(scores, np.float64).ravel()
    if y_true.all() or not y_true.any():
        raise ValueError("an ROC curve needs both classes among the true labels")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_true = scores[order], y_true[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_true.size - 1]
    tps = np.cumsum(sorted_true)[last_of_each]
    fps = (last_of_each + 1) - tps
    fpr = np.r_[0.0, fps / (~y_true).sum()]
    tpr = np.r_[0.0, tps / y_true.sum()]
    return fpr, tpr, np.r_[np.inf, sorted_scores[last_of_each]]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a curve by the trapezoid rule."""
    return float(np.trapezoid(tpr, fpr))


def report_markdown(report: dict[str, dict[str, float]]) -> str:
    """A classification report as a Markdown table."""
    lines = ["| class | precision | recall | f1-score | support |", "|---|---:|---:|---:|---:|"]
    for name, row in report.items():
        cells = [f"{row[k]:.3f}" for k in ("precision", "recall", "f1-score")]  # Undefined: "undefined: <reason>"
        lines.append(f"| {name} | {' | '.join(cells)} | {int(row['support'])} |")
    return "\n".join(lines)
