"""Data parallelism: padding, start-up flags, and `Trainer(placement=DataParallel)` equal to one device.

The multi-device runs are subprocesses (tests/parallel_worker.py): JAX fixes
its device count when it starts, and a hung collective must end in a failed
test, not a hung suite. Each has a hard timeout and is killed (SIGKILL: the
distributed runtime catches SIGTERM) when it runs over.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from dlchapter.engine import parallel
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from tests import parallel_worker as worker

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # seconds per subprocess run; a quiet machine needs about 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, *flags: str) -> subprocess.Popen:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID)
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.parallel_worker", str(out), *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: list[subprocess.Popen]) -> None:
    """Wait for every process; kill them all and fail if one runs over or fails."""
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        tails = [p.communicate()[1][-2000:] for p in procs]
        pytest.fail(f"data-parallel worker ran over {TIMEOUT} s (hung collective?); stderr tails: {tails}")
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, f"worker exited {p.returncode}: {err[-3000:]}"


def _load(path: Path) -> dict:
    """A worker's results: per Trainer run ("steps1", "steps3") parameters and summary; the layout."""
    with np.load(path) as f:
        out: dict = {"layout": json.loads(str(f["layout"]))}
        for run in ("steps1", f"steps{worker.TRAINER_STEPS_PER_CALL}"):
            out[run] = {
                "params": {k.removeprefix(f"{run}/"): f[k] for k in f.files if k.startswith(f"{run}/")},
                **json.loads(str(f[f"{run}_summary"])),
            }
            if f"{run}_predict" in f.files:
                out[run]["predict"] = f[f"{run}_predict"]
        return out


def _reference(batch_size: int = worker.BATCH) -> dict:
    """The worker's problem trained by the Trainer on this process's single device (validation data too)."""
    x, y, x_val, y_val = worker.data()
    model, tx, init_key, dropout_key = worker.problem()
    state = create_train_state(model, tx, x, init_key)
    trainer = Trainer(TASKS["sparse_multiclass"], steps_per_call=1)
    config = FitConfig(epochs=worker.EPOCHS, batch_size=batch_size, seed=worker.SEED, progress=False)
    state, history = trainer.fit(state, x, y, config, dropout_key, validation_data=(x_val, y_val))
    return {
        "params": worker.flat_params(state.params),
        "history": history.values,
        "evaluate": trainer.evaluate(state, x_val, y_val),
        "predict": trainer.predict(state, x_val),
    }


@pytest.fixture(scope="module")
def reference() -> dict:
    return _reference()


def _assert_same_training(run: dict, reference: dict) -> None:
    """Parameters, and every history entry (and evaluate / predict where run) equal one device's within 1e-5."""
    assert run["params"].keys() == reference["params"].keys()
    chex.assert_trees_all_close(run["params"], reference["params"], rtol=1e-5, atol=1e-5)
    assert {"loss", "accuracy"} <= run["history"].keys()
    for name, values in run["history"].items():
        np.testing.assert_allclose(values, reference["history"][name], rtol=1e-5, atol=1e-9, err_msg=name)
    if "evaluate" in run:
        assert run["evaluate"].keys() == reference["evaluate"].keys()
        for name, value in run["evaluate"].items():
            np.testing.assert_allclose(value, reference["evaluate"][name], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(run["predict"], reference["predict"], rtol=1e-5, atol=1e-6)


def _assert_own_share_fed(plans: list[list[int]], n_processes: int, index: int) -> None:
    """Every plan the Trainer asked for made this process feed its own contiguous share of every global batch."""
    assert plans
    for global_cols, start, stop in plans:
        share = global_cols // n_processes
        assert global_cols % n_processes == 0 and (start, stop) == (index * share, (index + 1) * share), plans


def test_pad_to_multiple_adds_zero_weight_rows() -> None:
    batch = {"x": np.arange(10, dtype=np.float32).reshape(5, 2), "y": np.arange(5)}
    padded = parallel.pad_to_multiple(batch, 4)
    chex.assert_shape([padded["x"], padded["y"], padded["weight"]], [(8, 2), (8,), (8,)])
    np.testing.assert_array_equal(padded["weight"], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(padded["x"][:5], batch["x"])
    np.testing.assert_array_equal(padded["x"][5:], batch["x"][:3])  # the batch's own first rows, weight 0
    unchanged = parallel.pad_to_multiple({**batch, "weight": np.ones(5)}, 5)
    assert unchanged["x"].shape == (5, 2)
    columns = parallel.pad_to_multiple({"idx": np.zeros((3, 5), np.int32)}, 2, axis=1)
    chex.assert_shape([columns["idx"], columns["weight"]], [(3, 6), (3, 6)])
    np.testing.assert_array_equal(columns["weight"][:, -1], 0)


def test_initialize_distributed_reads_flags_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(jax.config, "update", lambda *args: None)  # the real collectives setting stays as it is
    assert parallel.initialize_distributed(environ={}) is False  # nothing set: one process
    assert parallel.initialize_distributed(num_processes=1, environ={}) is False
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"}
    assert parallel.initialize_distributed(environ=env) is True
    assert parallel.initialize_distributed(process_id=3, environ=env) is True  # a flag wins over the variable
    assert calls == [("10.0.0.1:1234", 4, 2), ("10.0.0.1:1234", 4, 3)]
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        parallel.initialize_distributed("10.0.0.1:1234", 2, environ={})
    with pytest.raises(ValueError, match="outside"):
        parallel.initialize_distributed("10.0.0.1:1234", 2, 2, environ={})


def test_single_device_mesh_equals_trainer(reference) -> None:
    """A data mesh of this process's one device, through `Trainer.fit`, trains exactly like the default placement."""
    out = worker._trainer_run(parallel.DataParallel.create(), 1, validation=False)
    summary = json.loads(str(out.pop("steps1_summary")))
    assert parallel.is_primary()
    assert summary["plans"] == [[worker.BATCH, 0, worker.BATCH]] * worker.EPOCHS  # no padding on one device
    _assert_same_training({"params": {k.removeprefix("steps1/"): v for k, v in out.items()}, **summary}, reference)


def test_reference_is_sensitive_to_the_global_batch(reference) -> None:
    """Processes that trained only on their own halves (batch 13) would not pass the comparison."""
    halves = _reference(batch_size=13)["params"]
    ref_params = reference["params"]
    x = worker.data()[0]
    model, tx, init_key, _ = worker.problem()
    init = worker.flat_params(create_train_state(model, tx, x, init_key).params)
    for other in (halves, init):
        gaps = [np.max(np.abs(other[k] - ref_params[k])) for k in ref_params]
        assert max(gaps) > 1e-3


@pytest.fixture(scope="module")
def devices_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One process with 4 CPU devices: global batch 25 padded to 28 (7 rows per device)."""
    out = tmp_path_factory.mktemp("devices") / "devices.npz"
    _finish([_start(out, "--devices", "4")])
    return _load(out)


@pytest.fixture(scope="module")
def processes_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Two processes on 127.0.0.1, one CPU device each, joined by jax.distributed with gloo."""
    tmp = tmp_path_factory.mktemp("processes")
    outs = [tmp / f"process{i}.npz" for i in range(2)]
    flags = ("--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2")
    _finish([_start(out, *flags, "--process-id", str(i)) for i, out in enumerate(outs)])
    return [_load(out) for out in outs]


def test_data_mesh_over_four_cpu_devices_equals_single_device(devices_run: dict, reference: dict) -> None:
    layout = devices_run["layout"]
    assert layout["devices"] == 4 and layout["mesh"] == {"data": 4} and layout["process_count"] == 1
    assert layout["batch"] == {"shape": [8, 6], "weight_sum": 5.0, "shard_rows": 2}
    assert devices_run["steps1"]["plans"] == [[28, 0, 28]] * worker.EPOCHS  # batch 25 padded to 28: 7 per device
    for run in ("steps1", f"steps{worker.TRAINER_STEPS_PER_CALL}"):
        _assert_own_share_fed(devices_run[run]["plans"], 1, 0)
        _assert_same_training(devices_run[run], reference)


def test_two_processes_with_gloo_equal_single_process(processes_run: list[dict], reference: dict) -> None:
    """Both processes end with the single-process parameters, each having fed its own half of every batch."""
    runs = ("steps1", f"steps{worker.TRAINER_STEPS_PER_CALL}")
    for i, result in enumerate(processes_run):
        layout = result["layout"]
        assert layout["joined"] and layout["process_count"] == 2 and layout["devices"] == 2
        assert layout["process_index"] == i and layout["primary"] == (i == 0)
        assert layout["batch"] == {"shape": [6, 6], "weight_sum": 5.0, "shard_rows": 3}
        assert result["steps1"]["plans"] == [[26, 13 * i, 13 * (i + 1)]] * worker.EPOCHS  # batch 25 padded to 26
        for run in runs:
            _assert_own_share_fed(result[run]["plans"], 2, i)
            _assert_same_training(result[run], reference)
    for run in runs:  # the replicas agree exactly
        chex.assert_trees_all_equal(processes_run[0][run]["params"], processes_run[1][run]["params"])
