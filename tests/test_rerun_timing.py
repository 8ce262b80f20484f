"""A rerun's timings: one that restores a finished run from its checkpoints and trains nothing keeps that run's
train and compile seconds; a program loaded from the persistent compilation cache says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlchapter import cli

ROOT = Path(__file__).resolve().parent.parent


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


PROGRAM = """
import logging, sys, jax, jax.numpy as jnp
from dlchapter.engine.compilation_cache import enable_compilation_cache
from dlchapter.reporting.tracking import FitLog, track_run
enable_compilation_cache()
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
with track_run(sys.argv[1]) as scope:
    FitLog(1, 1).compile(lambda: jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0).lower(jnp.ones((7, 3))))
    print("cached:", scope.compiled_from_cache)
"""


def test_a_program_from_the_persistent_cache_is_reported_as_loaded(tmp_path):
    env = {**os.environ, "DLCHAPTER_COMPILATION_CACHE": str(tmp_path / "cache")}

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(tmp_path / "w")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    first, second = run(), run()
    assert "compiled the train program in" in first and "cached: [False]" in first
    assert "loaded the train program from the compilation cache in" in second and "cached: [True]" in second
