"""A rerun's timings: one that restores a finished run from its checkpoints and trains nothing keeps that run's
train and compile seconds (a program loaded from the persistent compilation cache: tests/test_compilation_cache.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlchapter import cli


def _csv(path: Path, n: int = 120) -> Path:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"a": rng.normal(size=n).round(3), "b": rng.normal(size=n).round(3)})
    frame["y"] = (2 * frame.a - frame.b + rng.normal(0, 0.1, n)).round(3)
    frame.to_csv(path, index=False)
    return path


def _run(data: Path, workdir: Path, epochs: int = 2) -> dict:
    argv = ["run", "tabular", "--data-path", str(data), "--target", "y", "--task", "regression"]
    argv += ["--epochs", str(epochs), "--checkpoint-every-epochs", "1", "--workdir", str(workdir)]
    assert cli.main(argv) == 0
    return json.loads((workdir / "metrics.json").read_text())


def test_a_rerun_that_trains_nothing_keeps_the_runs_timings(tmp_path):
    data, workdir = _csv(tmp_path / "t.csv"), tmp_path / "run"
    first = _run(data, workdir)
    assert "epochs_trained_by_this_run" not in first and first["compile_seconds"] > 0
    again = _run(data, workdir)
    assert again["epochs_trained_by_this_run"] == 0 and again["timing_source"] == "the earlier report"
    assert again["train_seconds"] == first["train_seconds"] and again["compile_seconds"] == first["compile_seconds"]
    assert "this rerun trained nothing" in (workdir / "summary.md").read_text()
    longer = _run(data, workdir, epochs=3)  # trains one more epoch: its own timings
    assert "epochs_trained_by_this_run" not in longer and longer["train_seconds"] != first["train_seconds"]


def test_without_the_earlier_report_the_checkpointed_epoch_times_are_summed(tmp_path):
    data, workdir = _csv(tmp_path / "t.csv"), tmp_path / "run"
    _run(data, workdir)
    epoch_seconds = pd.read_csv(workdir / "history.csv").epoch_seconds
    (workdir / "metrics.json").unlink()
    again = _run(data, workdir)
    assert again["train_seconds"] == pytest.approx(epoch_seconds.sum(), rel=1e-9)
    assert again["compile_seconds"] is None and "epoch_seconds" in again["timing_source"]
