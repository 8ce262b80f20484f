"""A run's report files: predictions.csv in the user's class labels, and no report file of an earlier run left
beside a new report (`dlchapter.reporting.report_manifest`); a user's own files are never touched."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from dlchapter.presets import iris
from dlchapter.reporting import report_manifest, safe_write
from dlchapter.runs.tabular_runs import run_tabular
from experiments import california


def _rooms_csv(path: Path, n: int = 150) -> Path:
    """A target with the numeric classes 2, 4, 6 (codes 0, 1, 2 would read as other classes) and a price."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"area": rng.normal(100, 20, n).round(1), "age": rng.normal(30, 9, n).round(1)})
    frame["rooms"] = np.select([frame.area < 90, frame.area < 110], [2, 4], 6)
    frame["price"] = (3 * frame.area - frame.age + rng.normal(0, 5, n)).round(2)
    frame.to_csv(path, index=False)
    return path


def _config(task: str, **changes):
    base = iris.CHAPTER if task == "multiclass" else california.CHAPTER
    return dataclasses.replace(
        base, dataset="ignored", epochs=2, batch_size=32, xgboost=False, max_target=None, note="", **changes
    )


def test_multiclass_predictions_use_the_files_labels(tmp_path):
    from dlchapter.data import load_csv

    ds = load_csv(_rooms_csv(tmp_path / "rooms.csv"), target="rooms", task="multiclass")
    run_tabular(_config("multiclass"), tmp_path / "run", dataset=ds)
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(predictions.columns) == ["label", "predicted", "probability_2", "probability_4", "probability_6"]
    assert set(predictions.label) == {2, 4, 6} and set(predictions.predicted) <= {2, 4, 6}
    probabilities = predictions[["probability_2", "probability_4", "probability_6"]].to_numpy()
    np.testing.assert_array_equal(predictions.predicted, np.array([2, 4, 6])[probabilities.argmax(axis=1)])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["classes"] == ["2", "4", "6"] and "positive_class" not in metrics
    assert metrics["test_accuracy"] == pytest.approx(skm.accuracy_score(predictions.label, predictions.predicted))
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "## Classes" in summary and "`2`, `4`, `6`" in summary


def test_a_regression_rerun_removes_the_classification_runs_report_files_only(tmp_path):
    from dlchapter.data import load_csv

    data, workdir = _rooms_csv(tmp_path / "rooms.csv"), tmp_path / "run"
    run_tabular(_config("multiclass"), workdir, dataset=load_csv(data, target="rooms", task="multiclass"))
    classification = {
        "classification_report.json",
        "config.json",
        "confusion_matrix.png",
        "history.csv",
        "metrics.json",
        "predictions.csv",
        "report_files.json",
        "summary.md",
        "training_curves.png",
    }
    assert {p.name for p in workdir.iterdir() if p.is_file()} == classification
    assert json.loads((workdir / "report_files.json").read_text())["files"] == sorted(classification)
    (workdir / "notes.txt").write_text("mine")  # the user's own files beside the report
    (workdir / "mine").mkdir()
    (workdir / "mine" / "confusion_matrix.png").write_bytes(b"not ours")
    run_tabular(_config("regression"), workdir, dataset=load_csv(data, target="price", task="regression"))
    regression = classification - {"classification_report.json", "confusion_matrix.png"} | {"actual_vs_predicted.png"}
    assert {p.name for p in workdir.iterdir() if p.is_file()} == regression | {"notes.txt"}
    assert json.loads((workdir / "report_files.json").read_text())["files"] == sorted(regression)
    assert (workdir / "notes.txt").read_text() == "mine"
    assert (workdir / "mine" / "confusion_matrix.png").read_bytes() == b"not ours"
    assert list(pd.read_csv(workdir / "predictions.csv").columns) == ["actual", "predicted"]


def test_without_a_manifest_only_the_fixed_report_names_go(tmp_path, caplog):
    for name in ("metrics.json", "roc_curve.png", "history_gru.csv", "notes.md", "my_predictions.csv"):
        (tmp_path / name).write_text(name)
    safe_write.take_written(tmp_path)
    safe_write.write_text(tmp_path / "metrics.json", "{}")  # this run's
    with caplog.at_level("WARNING"):
        removed = report_manifest.finish_report(tmp_path)
    assert removed == ["history_gru.csv", "roc_curve.png"]
    assert "removed 2 report file(s) of the earlier run" in caplog.text and "roc_curve.png" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.json",
        "my_predictions.csv",
        "notes.md",
        "report_files.json",
    ]
    assert (tmp_path / "notes.md").read_text() == "notes.md"


def test_a_manifest_decides_and_only_plain_names_in_it_count(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("history_lstm.csv", "predictions.csv", "notes.md", "sub/keep.csv"):
        (tmp_path / name).write_text(name)
    listed = ["history_lstm.csv", "sub/keep.csv", "../notes.md", "report_files.json"]
    (tmp_path / "report_files.json").write_text(json.dumps({"files": listed}))
    safe_write.take_written(tmp_path)
    assert report_manifest.finish_report(tmp_path, ["summary.md"]) == ["history_lstm.csv"]
    assert (tmp_path / "predictions.csv").exists()  # not in the earlier manifest: not that run's
    assert (tmp_path / "sub" / "keep.csv").exists() and (tmp_path / "notes.md").exists()
    assert json.loads((tmp_path / "report_files.json").read_text())["files"] == ["report_files.json"]


def test_the_summary_caps_a_long_category_list():
    from dlchapter.runs.tabular_runs import _first

    many = [f"house {i}" for i in range(240)]
    assert _first(many) == ", ".join(many[:20]) + ", ... and 220 more (all in metrics.json)"
    assert _first(many[:21]) == ", ".join(many[:21])
