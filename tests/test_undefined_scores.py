"""Undefined scores are values, not crashes (issue 17, item 1): null in metrics.json, "undefined: <reason>" in
summary.md, one warning, the rest of the report written, exit 0; stratified splits refuse too few rows per class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from dlchapter.data import DataError, load_csv
from dlchapter.data.splits import holdout_split, kfold_indices
from dlchapter.data.tabular import PIMA_COLUMNS
from dlchapter.reporting import report, scores
from dlchapter.runs.tabular_runs import TabularConfig, run_tabular
from dlchapter.runs.validation import ValidationConfig, run_validation

REPO = Path(__file__).resolve().parents[1]


def _pima_few_positives(directory: Path, n: int = 60, positives: tuple[int, ...] = (3, 40)) -> Path:
    """The issue's file: n Pima-like rows, only `positives` with Outcome 1."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(1, 100, (n, 8)), columns=PIMA_COLUMNS[:-1])
    frame["Outcome"] = [1 if i in positives else 0 for i in range(n)]
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_csv(directory / "diabetes.csv", index=False)
    return directory / "diabetes.csv"


def _cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLCHAPTER_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("DLCHAPTER_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "dlchapter.cli", *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )


# --- the scores themselves, against scikit-learn ------------------------------------------------------


def test_undefined_is_nan_with_a_reason_and_null_in_json(tmp_path: Path) -> None:
    value = scores.Undefined("only class 0")
    assert np.isnan(value) and scores.is_undefined(value) and not scores.is_undefined(float("nan"))
    assert f"{value:.3f}" == "undefined: only class 0"
    with pytest.warns(scores.UndefinedScoreWarning, match="test_auc: only class 0"):
        report.write_run(
            tmp_path,
            TabularConfig(),
            {"test_auc": value, "test_accuracy": 0.5},
            "t",
            [("Test", report.markdown_table([{"m": "auc", "v": value}]))],
        )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_auc"] is None and written["test_accuracy"] == 0.5
    assert written["undefined_scores"] == {"test_auc": "only class 0"}
    assert "| auc | undefined: only class 0 |" in (tmp_path / "summary.md").read_text()


def test_binary_auc_undefined_with_one_class_else_sklearn() -> None:
    p = np.array([0.1, 0.7, 0.4, 0.9])
    assert scores.is_undefined(scores.binary_auc(np.zeros(4), p))
    assert "only class 1" in scores.binary_auc(np.ones(4), p).reason
    y = np.array([0, 1, 0, 1])
    assert scores.binary_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))


@pytest.mark.parametrize(
    "y_true, y_pred",
    [
        ([0, 0, 1, 1, 2], [0, 0, 0, 0, 0]),  # classes 1, 2 never predicted
        ([0, 0, 0, 0], [0, 1, 0, 1]),  # class 1 has no rows
        ([0, 1, 1, 0], [0, 1, 1, 0]),  # class 2 neither present nor predicted
    ],
)
def test_classification_report_matches_sklearn_zero_division_nan(y_true: list[int], y_pred: list[int]) -> None:
    ours = scores.classification_report(np.array(y_true), np.array(y_pred), ["a", "b", "c"])
    ref = skm.classification_report(
        y_true, y_pred, labels=[0, 1, 2], target_names=["a", "b", "c"], zero_division=np.nan, output_dict=True
    )
    ref["accuracy"] = {k: ref["accuracy"] for k in ("precision", "recall", "f1-score")}
    undefined = 0
    for name, row in ours.items():
        for score in ("precision", "recall", "f1-score"):
            if np.isnan(ref[name][score]):
                assert scores.is_undefined(row[score]), (name, score)
                undefined += 1
            else:
                assert row[score] == pytest.approx(ref[name][score]), (name, score)
    assert undefined > 0  # every case has something undefined: the comparison is not vacuous


def test_regression_scores_with_a_constant_target() -> None:
    y = np.full(5, 3.0)
    pred = np.array([2.0, 3.0, 4.0, 3.5, 2.5])
    got = scores.regression_scores(y, pred)
    assert scores.is_undefined(got["r2"]) and "constant" in got["r2"].reason and scores.is_undefined(got["r2_corr"])
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred)) and got["mae"] == pytest.approx(
        skm.mean_absolute_error(y, pred)
    )
    with np.errstate(divide="ignore"):
        assert not np.isfinite(skm.r2_score(y, pred, force_finite=False))  # scikit-learn: -inf, not a number to report


# --- whole runs ------------------------------------------------------------------------------------------


def test_issue_17_item_1_diabetes_without_positives_in_the_test_split(tmp_path: Path) -> None:
    _pima_few_positives(tmp_path / "data")
    workdir = tmp_path / "W"
    done = _cli(
        tmp_path,
        "run",
        "diabetes",
        "--workdir",
        str(workdir),
        "--data-dir",
        str(tmp_path / "data"),
        "--epochs",
        "2",
        "--seed",
        "2",
    )
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "undefined" in warned[0] and "Traceback" not in done.stderr, done.stderr
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["test_auc"] is None and "only class 0" in metrics["undefined_scores"]["test_auc"]
    assert metrics["test_accuracy"] is not None and metrics["epochs_run"] == 2
    predictions = pd.read_csv(workdir / "predictions.csv")
    assert len(predictions) == metrics["n_test"] and (predictions["label"] == 0).all()
    for name in (
        "history.csv",
        "config.json",
        "training_curves.png",
        "confusion_matrix.png",
        "classification_report.json",
    ):
        assert (workdir / name).stat().st_size > 0, name
    assert not (workdir / "roc_curve.png").exists()  # the one figure that cannot be drawn
    summary = (workdir / "summary.md").read_text()
    assert "| test_auc | undefined: only class 0 occurs among the test labels" in summary
    assert "undefined: class 'diabetes' has no rows" in summary  # recall of the absent class, by its name
    table = json.loads((workdir / "classification_report.json").read_text())
    assert table["diabetes"]["recall"] is None and table["no diabetes"]["recall"] is not None


def test_regression_with_a_constant_test_target(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    pd.DataFrame({"a": np.arange(30.0), "b": np.arange(30.0) % 7, "y": np.full(30, 2.5)}).to_csv(path, index=False)
    config = TabularConfig(task="regression", hidden=(4,), epochs=2, batch_size=8, monitor=None)
    with pytest.warns(scores.UndefinedScoreWarning):
        result = run_tabular(config, tmp_path / "run", dataset=load_csv(path, target="y"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_r2"] is None and metrics["test_r2_corr"] is None and metrics["test_mse"] >= 0
    assert scores.is_undefined(result.metrics["test_r2"])
    assert (tmp_path / "run" / "actual_vs_predicted.png").stat().st_size > 0


def test_kfold_validation_with_folds_without_positives(tmp_path: Path) -> None:
    _pima_few_positives(tmp_path / "data")
    config = ValidationConfig(
        hidden=(4,), epochs=1, k=4, stratify=False, holdout_repeats=2, data_dir=str(tmp_path / "data")
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_validation(config, tmp_path / "val")
    assert sum(issubclass(w.category, scores.UndefinedScoreWarning) for w in caught) == 1
    written = json.loads((tmp_path / "val" / "metrics.json").read_text())
    fold_aucs = [row["auc"] for row in written["folds"]]
    assert None in fold_aucs and written["kfold_auc_mean"] is None and written["kfold_accuracy_mean"] is not None
    assert "undefined on split(s)" in written["undefined_scores"]["kfold_auc_mean"]
    assert (tmp_path / "val" / "fold_scores.png").stat().st_size > 0 and scores.is_undefined(metrics["kfold_auc_std"])


# --- stratified splits check the class counts before training -------------------------------------------


def test_stratified_splits_need_enough_rows_per_class() -> None:
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(
        DataError,
        match=r"stratified 4-fold split needs at least 4 rows of every class; "
        r"class 1 has 2 \(counts per class: 0: 10, 1: 2\)",
    ):
        kfold_indices(12, 4, stratify=y)
    assert len(kfold_indices(12, 2, stratify=y)) == 2  # two folds are enough rows
    with pytest.raises(DataError, match="class 1 has 1"):
        holdout_split(11, 0.25, stratify=np.array([0] * 10 + [1]))


def test_cli_stratified_kfold_with_too_few_positives_exits_2(tmp_path: Path) -> None:
    _pima_few_positives(tmp_path / "data")
    done = _cli(
        tmp_path,
        "run",
        "validation",
        "--workdir",
        str(tmp_path / "v"),
        "--data-dir",
        str(tmp_path / "data"),
        "--epochs",
        "1",
        "--k",
        "4",
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "class 1 has 2" in lines[0] and "0: 58, 1: 2" in lines[0]
    assert not (tmp_path / "v" / "metrics.json").exists()


def test_sweep_kfold_with_a_test_split_without_positives(tmp_path: Path) -> None:
    from dlchapter.data.splits import train_test_split
    from dlchapter.presets.sweep_california import PRESETS, sweep_command

    train, _ = train_test_split(60, 0.2, seed=0)  # the sweep's own split with split_seed 0
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(1, 100, (60, 8)), columns=PIMA_COLUMNS[:-1])
    frame["Outcome"] = 0
    frame.loc[train[:8], "Outcome"] = 1  # every positive in the training rows: 4 per stratified fold
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    argv = [
        "--workdir",
        str(tmp_path / "run"),
        "--config",
        "pima_kfold",
        "--epochs",
        "2",
        "--seeds",
        "0",
        "--folds",
        "2",
        "--learning-rates",
        "1e-3",
        "--l2s",
        "0",
        "--dropouts",
        "0.3",
        "--data-dir",
        str(tmp_path),
        "--stratify-test",
        "false",
    ]
    with pytest.warns(scores.UndefinedScoreWarning):
        assert sweep_command(argv, PRESETS) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_test_auc_mean"] is None and metrics["test_runs"][0]["test_auc"] is None
    assert (
        metrics["best_test_accuracy_mean"] is not None
        and "only class 0" in metrics["undefined_scores"]["best_test_auc_mean"]
    )
    models = pd.read_csv(tmp_path / "run" / "models.csv")
    assert models["val_auc"].notna().all()  # stratified folds keep both classes: validation AUCs are defined
    assert (tmp_path / "run" / "validation_curves.png").stat().st_size > 0
