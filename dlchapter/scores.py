"""Host-side scores on a whole test set: regression errors and R2, confusion
matrix, classification report, ROC curve and AUC.

Written in numpy from their definitions (the tests compare them with
scikit-learn), run once after training on the gathered predictions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R2 as 1 - SSE/SST, and the chapter's R2 as corr(y, ŷ)²."""
    y_true = np.asarray(y_true, np.float64).ravel()
    y_pred = np.asarray(y_pred, np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} targets but {y_pred.size} predictions")
    error = y_pred - y_true
    mse = float(np.mean(error**2))
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    corr = np.corrcoef(y_true, y_pred)[0, 1] if y_true.std() > 0 and y_pred.std() > 0 else np.nan
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(error))),
        "r2": float(1.0 - np.sum(error**2) / sst) if sst > 0 else float("nan"),
        "r2_corr": float(corr**2),
    }


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


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class, plus accuracy, macro and weighted averages.

    Same layout as scikit-learn's `classification_report(output_dict=True)`;
    an undefined ratio (0/0) is 0, as scikit-learn's default reports it.
    """
    matrix = confusion_matrix(y_true, y_pred, len(class_names)).astype(np.float64)
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    report: dict[str, dict[str, float]] = {}
    for i, name in enumerate(class_names):
        report[str(name)] = {"precision": precision[i], "recall": recall[i], "f1-score": f1[i], "support": support[i]}
    total = support.sum()
    report["accuracy"] = {"precision": tp.sum() / total, "recall": tp.sum() / total, "f1-score": tp.sum() / total, "support": total}
    weights = support / total
    report["macro avg"] = {"precision": precision.mean(), "recall": recall.mean(), "f1-score": f1.mean(), "support": total}
    report["weighted avg"] = {"precision": precision @ weights, "recall": recall @ weights, "f1-score": f1 @ weights, "support": total}
    return {k: {m: float(v) for m, v in row.items()} for k, row in report.items()}


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
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1-score']:.3f} | {int(row['support'])} |")
    return "\n".join(lines)
