"""`dlchapter run tabular`: a researcher's own CSV through the chapter's workflow from the command line,
and `--missing error|drop|impute` on the tabular experiments (issue 17, items 7 and 8).

The CSVs are written by the tests; scores are recomputed by scikit-learn from the run's predictions.csv,
the missing-value counts and imputed medians by pandas from the file itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm

from dlchapter import cli
from dlchapter.data.splits import train_test_split

DATA_DIR = os.environ.get("DLCHAPTER_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
ROOT = Path(__file__).resolve().parents[1]
N_ROWS = 200


def _houses(path: Path, task: str, n: int = N_ROWS, seed: int = 5) -> Path:
    """Five numeric columns, a categorical `region` and a target `price` (numbers, or yes/no for binary)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(size=n).round(4) for name in ("rooms", "area", "age", "lat", "lon")})
    frame.insert(3, "region", rng.choice(["north", "south", "east"], n))
    signal = frame.rooms - 0.7 * frame.age + frame.region.map({"north": 1.0, "south": -1.0, "east": 0.0})
    noisy = (3 * signal + rng.normal(0, 0.3, n)).round(4)
    frame["price"] = noisy if task == "regression" else np.where(signal > 0, "yes", "no")
    frame.to_csv(path, index=False)
    return path


def _houses_argv(data: Path, workdir: Path, task: str = "regression") -> list[str]:
    """`run tabular`'s flags for a `_houses` CSV: its target, its categorical column, the task and the workdir."""
    target = ["--target", "price", "--categorical", "region", "--task", task]
    return ["--data-path", str(data), *target, "--workdir", str(workdir)]


def _run(argv: list[str], via: str = "dlchapter") -> subprocess.CompletedProcess:
    command = (
        [sys.executable, "-m", "dlchapter.cli", "run", "tabular"]
        if via == "dlchapter"
        else [sys.executable, "-m", "experiments.tabular"]
    )
    return subprocess.run([*command, *argv], capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)


def _one_error_line(stderr: str, needle: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert needle in errors[0], errors[0]
    assert "Traceback" not in stderr, stderr


def _snapshot(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """`dlchapter run tabular` on a regression CSV, in a subprocess (the real console path and exit status)."""
    root = tmp_path_factory.mktemp("houses")
    data = _houses(root / "houses.csv", "regression")
    workdir = root / "run"
    done = _run([*_houses_argv(data, workdir), "--epochs", "40", "--seed", "1"])
    return data, workdir, done


def test_regression_end_to_end_metrics_equal_sklearn(regression_run):
    data, workdir, done = regression_run
    assert done.returncode == 0, done.stderr
    assert f"report in {workdir}/summary.md" in done.stdout
    metrics = json.loads((workdir / "metrics.json").read_text())
    predictions = pd.read_csv(workdir / "predictions.csv")
    assert len(predictions) == metrics["n_test"] == 40  # the preset's 20% test split
    assert metrics["n_train"] + metrics["n_validation"] + metrics["n_test"] == N_ROWS
    assert metrics["n_validation"] == 32  # 20% of the 160 training rows
    actual, predicted = predictions.actual, predictions.predicted
    assert metrics["test_mse"] == pytest.approx(skm.mean_squared_error(actual, predicted), rel=1e-9)
    assert metrics["test_mae"] == pytest.approx(skm.mean_absolute_error(actual, predicted), rel=1e-9)
    assert metrics["test_r2"] == pytest.approx(skm.r2_score(actual, predicted), rel=1e-9)
    assert metrics["test_r2"] > 0.5  # the network learned the signal (inputs scaled, one-hot regions)
    truth = pd.read_csv(data)
    _, test_idx = train_test_split(N_ROWS, 0.2, seed=1)
    np.testing.assert_allclose(actual, truth.price.to_numpy()[test_idx], rtol=1e-6)  # the report's rows are the file's
    assert metrics["categories"] == {"region": ["east", "north", "south"]}
    assert metrics["missing_values"] == {"policy": "error", "rows_dropped": 0, "cells_imputed": 0}
    assert metrics["params"] == (5 + 3 + 1) * 64 + (64 + 1) * 32 + 33  # 5 numeric + 3 one-hot inputs, 64, 32, 1
    history = pd.read_csv(workdir / "history.csv")
    assert "val_loss" in history.columns and metrics["best_epoch"] == int(np.argmin(history.val_loss)) + 1
    for figure in ("training_curves.png", "actual_vs_predicted.png"):
        assert (workdir / figure).stat().st_size > 5_000
    config = json.loads((workdir / "config.json").read_text())
    assert config["data_path"] == str(data) and config["target"] == "price" and config["categorical"] == ["region"]
    assert config["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert config["dataset"] == "houses" and config["missing"] == "error" and config["scale_inputs"] is True
    assert "houses" in (workdir / "summary.md").read_text()


def test_binary_end_to_end_through_the_launcher(tmp_path):
    data = _houses(tmp_path / "sold.csv", "binary")
    workdir = tmp_path / "run"
    done = _run(
        [
            "--data-path",
            str(data),
            "--target",
            "price",
            "--categorical",
            "region",
            "--task",
            "binary",
            "--workdir",
            str(workdir),
            "--epochs",
            "30",
            "--hidden",
            "16,8",
        ],
        via="launcher",
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((workdir / "metrics.json").read_text())
    predictions = pd.read_csv(workdir / "predictions.csv")
    assert len(predictions) == metrics["n_test"] == 40
    assert metrics["test_accuracy"] == pytest.approx(skm.accuracy_score(predictions.label, predictions.predicted))
    assert list(predictions.columns) == ["label", "probability_yes", "predicted"]  # the CSV's labels, "yes" positive
    assert metrics["classes"] == ["no", "yes"] and metrics["positive_class"] == "yes"
    positive = predictions.label == "yes"
    assert metrics["test_auc"] == pytest.approx(skm.roc_auc_score(positive, predictions.probability_yes), rel=1e-9)
    assert ((predictions.predicted == "yes") == (predictions.probability_yes > 0.5)).all()
    assert set(predictions.label) <= {"no", "yes"} and set(predictions.predicted) <= {"no", "yes"}
    truth = pd.read_csv(data).price
    assert positive.mean() == pytest.approx((truth == "yes").mean(), abs=0.02)  # stratified test split
    report = json.loads((workdir / "classification_report.json").read_text())
    assert set(report) >= {"no", "yes"}
    for figure in ("training_curves.png", "roc_curve.png", "confusion_matrix.png"):
        assert (workdir / figure).stat().st_size > 5_000


def _with_holes(path: Path) -> tuple[Path, pd.DataFrame]:
    frame = pd.read_csv(_houses(path, "regression"))
    frame.loc[[4, 17, 30], "area"] = np.nan
    frame.loc[[17, 90], "region"] = np.nan
    frame.loc[[50], "price"] = np.nan  # a row without a target is dropped even under impute
    frame.to_csv(path, index=False)
    return path, pd.read_csv(path)


def test_missing_error_names_the_flags_that_exist(tmp_path, capsys):
    data, _ = _with_holes(tmp_path / "holes.csv")
    argv = [
        "run",
        "tabular",
        "--data-path",
        str(data),
        "--target",
        "price",
        "--categorical",
        "region",
        "--workdir",
        str(tmp_path / "run"),
        "--epochs",
        "2",
    ]
    assert cli.main(argv) == 2
    _one_error_line(capsys.readouterr().err, "--missing drop")
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("policy", ["drop", "impute"])
def test_missing_drop_and_impute_are_recorded_and_right(tmp_path, policy):
    data, frame = _with_holes(tmp_path / "holes.csv")
    workdir = tmp_path / policy
    argv = [
        "run",
        "tabular",
        "--data-path",
        str(data),
        "--target",
        "price",
        "--categorical",
        "region",
        "--workdir",
        str(workdir),
        "--epochs",
        "2",
        "--missing",
        policy,
    ]
    assert cli.main(argv) == 0
    metrics = json.loads((workdir / "metrics.json").read_text())
    record = metrics["missing_values"]
    holes = frame.isna()
    rows = len(frame) - holes.any(axis=1).sum() if policy == "drop" else len(frame) - holes.price.sum()
    assert metrics["n_train"] + metrics["n_validation"] + metrics["n_test"] == rows
    assert record["policy"] == policy
    if policy == "drop":
        assert record["rows_dropped"] == 5 and record["cells_imputed"] == 0  # rows 4, 17, 30, 50, 90
    else:
        assert record["rows_dropped"] == 1 and record["cells_imputed"] == 5  # price: 1 row; area 3, region 2 cells
        assert record["imputed"]["area"]["cells"] == 3 and record["imputed"]["region"]["cells"] == 2
        kept = frame[frame.price.notna()]
        assert record["imputed"]["area"]["value"] == pytest.approx(kept.area.median())
        assert record["imputed"]["region"]["value"] == kept.region.mode()[0]
    assert json.loads((workdir / "config.json").read_text())["missing"] == policy
    summary = (workdir / "summary.md").read_text()
    assert f"missing={policy!r}: {record['rows_dropped']} row(s) dropped" in summary


def _pima_with_holes(directory: Path) -> pd.DataFrame:
    frame = pd.read_csv(Path(DATA_DIR) / "diabetes.csv")
    directory.mkdir()
    text = frame.to_csv(index=False).splitlines()
    for line in (3, 10, 11):  # 1-based file lines: blank the Glucose cell (the second field)
        fields = text[line - 1].split(",")
        fields[1] = ""
        text[line - 1] = ",".join(fields)
    (directory / "diabetes.csv").write_text("\n".join(text) + "\n")
    return frame


@pytest.mark.skipif(not (Path(DATA_DIR) / "diabetes.csv").is_file(), reason="the Pima file is not available")
def test_missing_on_a_built_in_experiment(tmp_path, capsys):
    frame = _pima_with_holes(tmp_path / "data")
    base = ["run", "diabetes", "--data-dir", str(tmp_path / "data"), "--epochs", "2"]
    assert cli.main([*base, "--workdir", str(tmp_path / "refused")]) == 2
    _one_error_line(capsys.readouterr().err, "--missing impute")
    assert cli.main([*base, "--workdir", str(tmp_path / "drop"), "--missing", "drop"]) == 0
    metrics = json.loads((tmp_path / "drop" / "metrics.json").read_text())
    assert metrics["missing_values"] == {"policy": "drop", "rows_dropped": 3, "cells_imputed": 0}
    assert metrics["n_train"] + metrics["n_validation"] + metrics["n_test"] == len(frame) - 3
    assert cli.main([*base, "--workdir", str(tmp_path / "impute"), "--missing", "impute"]) == 0
    record = json.loads((tmp_path / "impute" / "metrics.json").read_text())["missing_values"]
    kept = frame.Glucose.drop(index=[1, 8, 9])  # file lines 3, 10, 11 are rows 1, 8, 9
    assert record["cells_imputed"] == 3 and record["imputed"]["Glucose"]["value"] == pytest.approx(kept.median())


def _bad_inputs(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    regression = _houses(tmp_path / "houses.csv", "regression", n=60)
    strings = _houses(tmp_path / "labels.csv", "binary", n=60)
    unseen = pd.read_csv(_houses(tmp_path / "unseen.csv", "regression", n=60))
    _, test_idx = train_test_split(60, 0.2, seed=0)
    unseen.loc[test_idx[2], "region"] = "island"
    unseen.to_csv(tmp_path / "unseen.csv", index=False)
    target = ["--target", "price", "--categorical", "region"]
    ids = pd.read_csv(regression).assign(house=[f"h{i}" for i in range(60)])  # an ID column: 48 training categories
    ids.to_csv(tmp_path / "ids.csv", index=False)
    return [
        ("no --data-path", ["--target", "price"], "--data-path"),
        ("no --target", ["--data-path", str(regression)], "--target"),
        ("missing file", ["--data-path", str(tmp_path / "nope.csv"), *target], "nope.csv: no such file"),
        ("a directory", ["--data-path", str(tmp_path), *target], "not a file"),
        ("unknown target", ["--data-path", str(regression), "--target", "prize"], "no column 'prize'"),
        (
            "unknown categorical",
            ["--data-path", str(regression), "--target", "price", "--categorical", "zone"],
            "no column 'zone'",
        ),
        (
            "target listed as categorical",
            ["--data-path", str(regression), "--target", "price", "--categorical", "region,price"],
            "--categorical",
        ),
        (
            "binary on a numeric target",
            ["--data-path", str(regression), *target, "--task", "binary"],
            "--task regression",
        ),
        (
            "multiclass on a continuous target",
            ["--data-path", str(regression), *target, "--task", "multiclass"],
            "--task regression",
        ),
        ("regression on class labels", ["--data-path", str(strings), *target, "--task", "regression"], "--task binary"),
        ("categories not declared", ["--data-path", str(regression), "--target", "price"], "--categorical region"),
        (
            "unseen category",
            ["--data-path", str(tmp_path / "unseen.csv"), *target],
            f"line {test_idx[2] + 2}: category 'island'",
        ),
        (
            "an ID column as categorical (the 48 known categories capped)",
            ["--data-path", str(tmp_path / "ids.csv"), "--target", "price", "--categorical", "region,house"],
            "does not occur in the training rows (48 known: ['h",
        ),
        ("bad --missing", ["--data-path", str(regression), *target, "--missing", "fill"], "--missing"),
        (
            "bad --handle-unknown",
            ["--data-path", str(regression), *target, "--handle-unknown", "skip"],
            "--handle-unknown",
        ),
        ("two-character --sep", ["--data-path", str(regression), *target, "--sep", ";;"], "--sep"),
        ("one data row", ["--data-path", str(_rows(tmp_path / "one.csv", 1)), "--target", "y"], "needs more rows"),
        (
            "two data rows",
            ["--data-path", str(_rows(tmp_path / "two.csv", 2)), "--target", "y", "--task", "regression"],
            "needs more rows",
        ),
    ]


def _rows(path: Path, n: int) -> Path:
    """A numeric CSV of `n` data rows (x, y)."""
    path.write_text("x,y\n" + "".join(f"{i}.5,{2 * i}.25\n" for i in range(n)))
    return path


def test_bad_inputs_are_one_error_line_and_leave_an_earlier_run_alone(regression_run, tmp_path, capsys):
    _, workdir, done = regression_run
    assert done.returncode == 0, done.stderr
    before = _snapshot(workdir)
    for name, argv, needle in _bad_inputs(tmp_path):
        status = cli.main(["run", "tabular", "--workdir", str(workdir), "--epochs", "2", *argv])
        err = capsys.readouterr().err
        assert status == 2, (name, err)
        _one_error_line(err, needle)
        assert max(len(line) for line in err.splitlines()) < 600, (name, err)  # long lists are capped
        assert _snapshot(workdir) == before, name


def test_unseen_category_ignored_when_asked(tmp_path):
    frame = pd.read_csv(_houses(tmp_path / "unseen.csv", "regression", n=60))
    _, test_idx = train_test_split(60, 0.2, seed=0)
    frame.loc[test_idx[2], "region"] = "island"
    frame.to_csv(tmp_path / "unseen.csv", index=False)
    argv = [
        "run",
        "tabular",
        "--data-path",
        str(tmp_path / "unseen.csv"),
        "--target",
        "price",
        "--categorical",
        "region",
        "--workdir",
        str(tmp_path / "run"),
        "--epochs",
        "2",
        "--handle-unknown",
        "ignore",
    ]
    assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["unknown_categories"] == "ignore" and "island" not in metrics["categories"]["region"]


def test_the_generic_flags_are_not_flags_of_the_chapter_experiments(tmp_path, capsys):
    assert cli.main(["run", "iris", "--workdir", str(tmp_path / "r"), "--data-path", "x.csv"]) == 2
    _one_error_line(capsys.readouterr().err, "--data-path")
    assert cli.main(["run", "tabular", "--workdir", str(tmp_path / "r"), "--dataset", "iris"]) == 2
    _one_error_line(capsys.readouterr().err, "--dataset")


def test_help_describes_the_new_flags(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "tabular", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for expected in (
        "--data-path STR the CSV file",
        "(required)",
        "--missing {error,drop,impute} empty or NA cells",
        "(default: error)",
        "--handle-unknown {error,ignore}",
        "--task {regression,binary,multiclass}",
        "--sep STR the field separator",
        "--categorical STR,... feature columns holding categories",
        "--steps-per-call {none}|INT train steps per compiled call",
        "Adam at Keras's default rate",  # a default with an apostrophe, not shell-quoted (Keras'"'"'s)
    ):
        assert expected in text, expected
    assert "'\"'\"'" not in text
    with pytest.raises(SystemExit):
        cli.main(["run", "diamonds", "--help"])
    assert "--missing {error,drop,impute}" in " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_a_checkpointed_rerun_on_a_changed_csv_under_the_same_path_is_refused(tmp_path):
    """The rows' digest binds the checkpoints (not the file's path or bytes): a changed file is refused, the same
    rows from another path resume."""
    data = _houses(tmp_path / "houses.csv", "regression")
    workdir = tmp_path / "run"
    argv = [*_houses_argv(data, workdir), "--checkpoint-every-epochs", "1", "--seed", "1"]
    first = _run([*argv, "--epochs", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    again = _run([*argv, "--epochs", "3"])  # the same file: resumes and trains the one extra epoch
    assert again.returncode == 0 and "resuming from checkpoint" in again.stderr, again.stderr[-3000:]
    before = _snapshot(workdir)
    _houses(data, "regression", seed=6)  # other rows under the same path
    changed = _run([*argv, "--epochs", "4"])
    assert changed.returncode == 2, changed.stderr[-3000:]
    _one_error_line(changed.stderr, "data_content_digest")
    assert _snapshot(workdir) == before
    (tmp_path / "elsewhere").mkdir()
    moved = _houses(tmp_path / "elsewhere" / "houses.csv", "regression")  # the first run's rows, another path
    argv[argv.index(str(data))] = str(moved)
    elsewhere = _run([*argv, "--epochs", "3"])
    assert elsewhere.returncode == 0 and "nothing to train" in elsewhere.stderr, elsewhere.stderr[-3000:]
