"""The test-set half of a tabular run's report: predictions.csv, scores and figures (`dlchapter.runs.tabular_runs`
fits the model and writes the rest).

Regression: errors and both R2s in the target's units, XGBoost beside the network when asked. Classification:
accuracy, the classification report, the confusion matrix (and AUC/ROC for binary), with predictions.csv in the
labels as the data spells them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlchapter.data import Dataset
from dlchapter.presets.run_configs import TabularConfig
from dlchapter.reporting import figures, plots, report, scores
from dlchapter.runs.tabular_prep import TabularArrays


def regression_report(
    config: TabularConfig, data: TabularArrays, outputs: np.ndarray, metrics: dict, workdir: Path
) -> dict[str, str]:
    """Test errors and both R2s in the target's own units (and XGBoost's beside them); figures."""
    y_true = data.raw_y_test.astype(np.float64)
    y_pred = data.from_model(outputs.ravel().astype(np.float64))
    metrics.update({f"test_{k}": v for k, v in scores.regression_scores(y_true, y_pred).items()})
    target = data.ds.target_name
    predictions = {"actual": y_true, "predicted": y_pred}
    files = {
        "actual vs predicted": plots.actual_vs_predicted(
            y_true,
            y_pred,
            workdir / "actual_vs_predicted.png",
            r2=metrics["test_r2"],
            r2_corr=metrics["test_r2_corr"],
            target=target,
            title=f"{data.ds.name}: actual vs predicted (test)",
        ).name
    }
    if config.xgboost:
        from dlchapter.concepts.baselines import xgboost_regression  # optional dependency

        # XGBoost needs no validation rows: it trains on every training row (validation ones included)
        xgb_pred = xgboost_regression(data.x_train, data.raw_y_train, data.x_test, seed=config.seed)
        metrics.update({f"xgb_test_{k}": v for k, v in scores.regression_scores(y_true, xgb_pred).items()})
        files["XGBoost vs the network"] = plots.model_comparison(
            {"neural network": y_pred, "XGBoost": xgb_pred}, y_true, workdir / "nn_vs_xgboost.png", target=target
        ).name
        predictions["xgboost"] = xgb_pred
    report.write_columns(workdir / "predictions.csv", predictions)
    return files


def _class_labels(ds: Dataset) -> list[str]:
    """The classes as the data spells them (the CSV's labels), in the order of the model's outputs 0..n-1."""
    if ds.class_names is not None:
        return [str(name) for name in ds.class_names]
    return [str(c) for c in range(ds.n_classes or 2)]


def classification_report(
    config: TabularConfig,
    ds: Dataset,
    y_true: np.ndarray,
    probs: np.ndarray,
    metrics: dict,
    sections: list,
    workdir: Path,
) -> dict[str, str]:
    """Accuracy, report, confusion matrix (and AUC/ROC for binary); figures' file names.

    predictions.csv names the classes as the data does: `label` and `predicted` hold the user's labels, and
    each probability column is `probability_<label>` (binary: the positive class's, the model's output index 1).
    metrics.json records the order as "classes" (and binary runs their "positive_class").
    """
    files = {}
    class_names = figures.class_names(ds.name, ds.class_names, ds.n_classes or 2)  # diabetes: "no diabetes", "diabetes"
    labels = _class_labels(ds)
    spelled = np.asarray(labels, dtype=object)
    y_true = np.asarray(y_true).astype(np.int64)  # codes 0..n-1 (diabetes's Outcome is a float column)
    if config.task == "binary":
        p = probs.ravel()
        y_pred = (p > config.threshold).astype(np.int64)
        columns = {"label": spelled[y_true], f"probability_{labels[1]}": p, "predicted": spelled[y_pred]}
        metrics["test_auc"] = scores.binary_auc(y_true, p, "the test labels")
        if not scores.is_undefined(metrics["test_auc"]):  # no ROC curve to draw with one class
            fpr, tpr, thresholds = scores.roc_curve(y_true, p)
            files["ROC curve"] = plots.roc(fpr, tpr, thresholds, metrics["test_auc"], workdir / "roc_curve.png").name
    else:
        y_pred = probs.argmax(axis=-1)
        columns = {
            "label": spelled[y_true],
            "predicted": spelled[y_pred],
            **{f"probability_{label}": probs[:, c] for c, label in enumerate(labels)},
        }
    report.write_columns(workdir / "predictions.csv", columns)
    metrics["classes"] = labels
    if config.task == "binary":
        metrics["positive_class"] = labels[1]
    sections.append(("Classes", _classes_markdown(config, labels, class_names)))
    metrics["test_accuracy"] = float(np.mean(y_pred == y_true))
    matrix = scores.confusion_matrix(y_true, y_pred, len(class_names))
    table = scores.classification_report(y_true, y_pred, class_names)
    report.write_json(workdir / "classification_report.json", table)
    sections.append(
        (
            "Classification report" + (f" (threshold {config.threshold})" if config.task == "binary" else ""),
            scores.report_markdown(table),
        )
    )
    files["confusion matrix"] = plots.confusion_matrix(
        matrix, class_names, workdir / "confusion_matrix.png", title=f"{ds.name}: confusion matrix (test)"
    ).name
    return files


def _classes_markdown(config: TabularConfig, labels: list[str], class_names: list[str]) -> str:
    """The summary's section on the class order: what predictions.csv's columns hold."""
    shown = ", ".join(
        f"`{label}`" + (f" ({name})" if name != label else "") for label, name in zip(labels, class_names)
    )
    text = f"Class order (the model's outputs 0..{len(labels) - 1}): {shown}. "
    if config.task == "binary":
        return text + (
            f"The positive class is `{labels[1]}`: predictions.csv's `probability_{labels[1]}` is the model's "
            f"probability of it, and `predicted` is `{labels[1]}` where that exceeds {config.threshold}."
        )
    return text + "predictions.csv's `label` and `predicted` use these labels; `probability_<label>` each class's."
