"""The iris experiment end to end, through both entry points, and its report files."""

import json

import numpy as np
import pytest

from dlchapter import cli
from experiments import iris

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_run_dir(workdir):
    metrics = json.loads((workdir / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "seed", "epochs_run", "best_epoch", "params"):
        assert key in metrics, key
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["params"] == 12 * 4 + 12 + 8 * 12 + 8 + 3 * 8 + 3
    history = (workdir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,accuracy")
    assert len(history) == 1 + metrics["epochs_run"]
    config = json.loads((workdir / "config.json").read_text())
    assert config["hidden"] == [12, 8] and config["batch_size"] == 10
    for png in ("training_curves.png", "confusion_matrix.png"):
        data = (workdir / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    summary = (workdir / "summary.md").read_text()
    assert "| setosa |" in summary and "**191**" in summary
    return metrics


def test_chapter_preset_runs_faithfully(tmp_path):
    result = iris.main(["--workdir", str(tmp_path), "--seed", "0"])
    metrics = _check_run_dir(tmp_path)
    assert metrics["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    assert metrics["n_test"] == 38 and metrics["n_validation"] == 0
    # early stopping on training accuracy with patience 4 stops long before 150 epochs
    assert metrics["stopped_early"] and metrics["epochs_run"] < 40
    assert metrics["epochs_run"] == metrics["best_epoch"] + 4


def test_improved_preset_through_the_cli_learns_iris(tmp_path, capsys):
    assert cli.main(["run", "iris", "--workdir", str(tmp_path), "--config", "improved", "--seed", "4"]) == 0
    metrics = _check_run_dir(tmp_path)
    assert metrics["n_validation"] > 0
    assert metrics["test_accuracy"] >= 0.9
    assert "test accuracy" in capsys.readouterr().out


def test_command_line_overrides_reach_the_config(tmp_path):
    iris.main(["--workdir", str(tmp_path), "--epochs", "3", "--hidden", "6,5", "--monitor", "none"])
    config = json.loads((tmp_path / "config.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert config["hidden"] == [6, 5] and config["monitor"] is None
    assert metrics["epochs_run"] == 3 and metrics["params"] == 6 * 4 + 6 + 5 * 6 + 5 + 3 * 5 + 3
    summary = (tmp_path / "summary.md").read_text()
    assert "3 epochs run, nothing monitored, stopped early: False" in summary and "best epoch None" not in summary


def test_same_seed_same_result(tmp_path):
    a = iris.main(["--workdir", str(tmp_path / "a"), "--seed", "2", "--epochs", "5", "--monitor", "none"])
    b = iris.main(["--workdir", str(tmp_path / "b"), "--seed", "2", "--epochs", "5", "--monitor", "none"])
    c = iris.main(["--workdir", str(tmp_path / "c"), "--seed", "3", "--epochs", "5", "--monitor", "none"])
    assert a.history.values["loss"] == b.history.values["loss"]
    assert not np.allclose(a.history.values["loss"], c.history.values["loss"])


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in cli.EXPERIMENTS:
        assert name in out
