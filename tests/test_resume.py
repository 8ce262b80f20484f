"""Exact resume after SIGKILL and SIGTERM, corrupted checkpoints, NaN guard, mismatched models.

Each run is a subprocess (tests/resume_worker.py) that trains a small MLP with
dropout and early-stopping bookkeeping, checkpointing after every step.
"""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.checkpoint.store import CheckpointError, CheckpointStore
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from dlchapter.models.dense import MLP
from tests import resume_worker

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def _worker(ckpt: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resume_worker", str(ckpt), str(out), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(ckpt: Path, out: Path, *extra: str) -> tuple[int, str]:
    proc = _worker(ckpt, out, *extra)
    _, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, err


def _steps(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def _interrupt(ckpt: Path, out: Path, sig: int, min_steps: int = 3) -> subprocess.Popen:
    """Start a run, wait until it has checkpointed `min_steps` steps, then signal it at a random moment."""
    proc = _worker(ckpt, out, "--restart")
    deadline = time.monotonic() + TIMEOUT
    while len(_steps(ckpt)) < min(min_steps, 2) or (_steps(ckpt) and max(_steps(ckpt)) < min_steps):
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.5))
    assert proc.poll() is None, "the run finished before the signal: the test would prove nothing"
    proc.send_signal(sig)
    proc.wait(timeout=TIMEOUT)
    return proc


def _assert_same_run(a: Path, b: Path) -> None:
    ref, got = np.load(a), np.load(b)
    assert sorted(ref.files) == sorted(got.files)
    for name in ref.files:
        np.testing.assert_array_equal(ref[name], got[name], err_msg=name)  # bitwise


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run's final parameters and history."""
    work = tmp_path_factory.mktemp("reference")
    code, err = _finish(work / "ckpt", work / "out.npz", "--restart")
    assert code == 0, err[-3000:]
    return work / "out.npz"


def test_sigkill_at_a_random_step_then_resume_is_bitwise_equal(tmp_path, reference):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.npz"
    proc = _interrupt(ckpt, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    killed_at = max(_steps(ckpt))
    assert killed_at < 4 * 5  # 4 epochs of 5 steps: it really stopped early
    code, err = _finish(ckpt, out)
    assert code == 0, err[-3000:]
    _assert_same_run(reference, out)


def test_sigterm_saves_says_how_to_resume_and_resume_is_bitwise_equal(tmp_path, reference):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.npz"
    proc = _interrupt(ckpt, out, signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == 3, err[-3000:]
    # the interrupted fit had restart=True: again with it, it would start over; without it, it resumes (the worker
    # calls the Python API, so the hint names CheckpointConfig, not the command line's --restart)
    hint = "Call fit again with CheckpointConfig(restart=False) to resume"
    assert "SIGTERM received" in err and hint in err and str(ckpt) in err and "--restart" not in err
    code, err = _finish(ckpt, out)
    assert code == 0, err[-3000:]
    _assert_same_run(reference, out)


def test_corrupted_latest_checkpoint_resumes_from_the_previous_one(tmp_path, reference):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.npz"
    _interrupt(ckpt, out, signal.SIGTERM, min_steps=4)
    steps = _steps(ckpt)
    assert len(steps) >= 2
    latest = ckpt / str(steps[-1])
    damaged = 0
    for file in latest.rglob("*"):
        if file.is_file() and file.stat().st_size > 64 and "ocdbt" in str(file):
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
            damaged += 1
    assert damaged, "found no data file to damage"
    code, err = _finish(ckpt, out)
    assert code == 0, err[-3000:]
    assert f"step {steps[-1]}" in err or f"/{steps[-1]}" in err, err[-3000:]  # the damaged step is reported
    _assert_same_run(reference, out)


def test_nan_stops_with_the_step_and_the_earlier_checkpoint_restores(tmp_path):
    ckpt = tmp_path / "ckpt"
    code, err = _finish(
        ckpt, tmp_path / "out.npz", "--restart", "--optimizer", "sgd", "--lr", "1.0", "--target-scale", "10"
    )
    assert code == 4, err[-3000:]
    assert "loss became" in err and "at step" in err
    failed_step = int(err.split("at step ")[1].split()[0])
    steps = _steps(ckpt)
    assert steps and max(steps) < failed_step  # nothing at or after the broken step was saved
    x, _ = resume_worker.data()
    model = MLP((32, 16), 1, dropout=(0.1, 0.0))
    state = create_train_state(model, make_optimizer(OptimizerConfig("sgd", learning_rate=1.0)), x, jax.random.key(0))
    with CheckpointStore(ckpt, read_only=True) as store:
        tree, meta, step = store.restore(None)
    assert step == max(steps)
    for leaf in jax.tree.leaves(tree["state"]["params"]):
        assert np.all(np.isfinite(leaf))
    assert jax.tree.structure(tree["state"]["params"]) == jax.tree.structure(jax.tree.map(np.asarray, state.params))


def test_restoring_into_a_mismatched_model_names_the_parameter(tmp_path):
    x, y = resume_worker.data()
    trainer = Trainer(TASKS["regression"])

    def fit(width: int):
        state = create_train_state(MLP((width, 16), 1), make_optimizer(OptimizerConfig("adam")), x, jax.random.key(0))
        return trainer.fit(
            state,
            x,
            y,
            FitConfig(epochs=1, batch_size=64),
            jax.random.key(1),
            checkpoint=CheckpointConfig(tmp_path / "ckpt"),
        )

    fit(32)
    with pytest.raises(CheckpointError, match=r"initial_weights\.shapes\.dense_0/kernel: \[6, 32\] -> \[6, 48\]"):
        fit(48)  # the API's run identity names the weights' shapes (the store's own check: tests/test_checkpoint.py)


def test_restart_starts_over_and_checkpoints_hold_no_pickle(tmp_path, reference):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.npz"
    assert _finish(ckpt, out, "--restart")[0] == 0
    first = _steps(ckpt)
    assert _finish(ckpt, out, "--restart")[0] == 0
    assert _steps(ckpt) == first
    _assert_same_run(reference, out)
    for file in ckpt.rglob("*"):
        if file.is_file():
            head = file.read_bytes()[:2]
            assert not (len(head) == 2 and head[0] == 0x80 and head[1] <= 5), f"{file} looks like a pickle"
            assert file.suffix not in (".pkl", ".pickle")
