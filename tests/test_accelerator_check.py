"""The accelerator check at its smoke size on CPU, its bad-flag errors, its deadline, and its helpers.

The full check (`python -m benchmarks.accelerator_check --out DIR --data-dir .device-data`)
is for an accelerator and is never run here; the smoke run goes through every
section's code with a few hundred rows of IDX files written by the test.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import (
    accel_report,
    accel_sections,
    accelerator_check,
    device_data,
    numerics_check,
)

ROOT = Path(__file__).resolve().parent.parent
DEVICE_FILES = {"check.log", "numerics-junit.xml", "numerics-pytest.log"}


def _check(argv, timeout=900):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.accelerator_check", *argv],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    data = accel_sections.write_synthetic_idx(tmp_path_factory.mktemp("idx"), 400, 100)
    out = tmp_path_factory.mktemp("out")
    proc = _check(["--out", str(out), "--smoke", "--data-dir", str(data)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (json_path,) = out.glob("accelerator-*-smoke.json")
    return json.loads(json_path.read_text()), json_path.with_suffix(".md").read_text(), out, data, proc.stdout


def test_smoke_writes_its_files_and_every_section_ran(smoke):
    report, _, out, _, stdout = smoke
    names = {p.name for p in out.iterdir()}
    assert names == DEVICE_FILES | {
        f"accelerator-{report['sections']['environment']['result']['device_name']}-smoke.{e}" for e in ("json", "md")
    }
    assert len(names) <= 8
    statuses = {name: s["status"] for name, s in report["sections"].items()}
    assert list(statuses) == list(accelerator_check.BUDGETS_S)
    assert statuses.pop("torch_compile") == "not run"
    assert set(statuses.values()) == {"done"}, statuses
    assert all(0 < s["seconds"] <= s["budget_s"] for n, s in report["sections"].items() if n != "torch_compile")
    assert "## Targets (issue 19)" in stdout and "wrote " in stdout


def test_smoke_environment_and_numerics(smoke):
    import jax
    import sklearn  # noqa: F401 - the numerics tests need it

    report = smoke[0]
    env = report["sections"]["environment"]["result"]
    assert env["backend"] == "cpu" and env["jax"] == jax.__version__ and env["orbax_checkpoint"]
    num = report["sections"]["numerics"]["result"]
    assert num["exit_code"] == 0 and num["counts"] == {"passed": len(numerics_check.SMOKE_TESTS)}
    for test_id in numerics_check.SMOKE_TESTS:
        result = num["tests"][test_id]
        close = [c for c in result["checks"] if not c["must_differ"]]
        assert close and all(c["rtol"] > 0 for c in close) and result["seconds"] >= 0


def test_smoke_cnn_epoch_reads_the_data_folder(smoke):
    report, _, _, data, _ = smoke
    one, whole = report["sections"]["cnn_epoch"]["result"]
    assert (one["steps_per_call"], whole["steps_per_call"]) == (1, 2) and one["rows"] == 128
    for r in (one, whole):
        assert str(data) in r["data"]  # the IDX files the test wrote, through the library's loader
        assert r["compile_s"] > 0 and len(r["epoch_s"]) == 2 and r["warm_epoch_s"] == r["epoch_s"][1] > 0
        assert 0.0 <= r["final_accuracy"] <= 1.0


def test_smoke_throughput_and_torch(smoke):
    report = smoke[0]
    ours = report["sections"]["throughput"]["result"]["diamonds_mlp"]["variants"]
    assert list(ours) == ["step", "fused8", "epoch"]
    assert all(v["step_ms"] > 0 and v["compile_s"] > 0 and v["traces"]["train"] == 1 for v in ours.values())
    torch_results = report["sections"]["torch_eager"]["result"]
    try:
        import torch  # noqa: F401
    except ImportError:
        assert all("torch not installed" in r["skipped"] for r in torch_results.values())
        return
    for name in ("diamonds_mlp", "mnist_cnn"):
        r = torch_results[name]
        assert r["step_ms"] > 0 and r["versions"]["device"] == "cpu" and r["mode"] == "eager"
        assert math.isclose(r["samples_per_s"], r["batch_size"] / r["step_ms"] * 1e3, rel_tol=1e-9)


def test_smoke_many_models_differ_and_scale_is_computed(smoke):
    report = smoke[0]
    fp32 = report["sections"]["many_models_fp32"]["result"]["rows"]
    assert [r["n_models"] for r in fp32] == [1, 2]
    for r in fp32:
        assert r["images_per_s"] > 0 and r["all_finite"] and r["compile_s"] > 0 and r["device_peak_mib"] is None
        assert math.isclose(r["images_per_s"], r["n_models"] * 2 * 64 * r["timed_calls"] / r["timed_s"], rel_tol=1e-9)
    assert fp32[0]["last_loss_spread"] == 0.0 < fp32[1]["last_loss_spread"]  # two seeds: two different models
    assert math.isclose(fp32[1]["speedup_vs_one"], fp32[1]["images_per_s"] / fp32[0]["images_per_s"], rel_tol=1e-9)
    (bf16,) = report["sections"]["many_models_bf16"]["result"]["rows"]
    assert bf16["precision"] == "bf16" and bf16["all_finite"] and bf16["last_loss_spread"] > 0


def test_smoke_experiment_and_markdown(smoke):
    report, md, _, data, _ = smoke
    exp = report["sections"]["experiment"]["result"]
    assert f"--data-dir {data}" in exp["command"] and str(data) in exp["data"]
    assert exp["epochs"] == 1 and exp["n_train"] + exp["n_validation"] == 300 and exp["n_validation"] > 0
    assert 0.0 <= exp["test_accuracy"] <= 1.0
    assert exp["process_wall_s"] > exp["compile_s"] + exp["train_s"] > 0
    for title in (
        "1. Environment",
        "2. Numerics",
        "3. CNN epoch",
        "4. Throughput",
        "5. Many CNNs at once (fp32)",
        "5. Many CNNs at once (bf16)",
        "6. Fashion-MNIST experiment",
    ):
        assert f"## {title}" in md
    verdicts = [
        line.rsplit("|", 2)[1].strip()
        for line in md.split("## Sections")[0].splitlines()
        if line.startswith("| ") and "verdict" not in line
    ]
    assert len(verdicts) == len(accel_report.targets(report)) == 6
    assert set(verdicts) == {"n/a"}  # a smoke size never claims a target
    for test_id in numerics_check.SMOKE_TESTS:
        assert test_id in md


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data-dir", "{empty}"], "lacks train-images-idx3-ubyte.gz"),
        (["--data-dir", "{empty}", "--synthetic"], "exclude each other"),
        (["--budget-s", "5"], "--budget-s must be more than"),
        (["--sections", "environment,bogus"], "unknown ['bogus']"),
    ],
)
def test_bad_flags_stop_before_any_work(tmp_path, extra, message):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--smoke", *(a.replace("{empty}", str(tmp_path)) for a in extra)]
    proc = _check(argv, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:") and message in proc.stderr
    assert not out.exists()


def test_a_wrong_backend_stops_after_the_environment(tmp_path):
    proc = _check(
        ["--out", str(tmp_path), "--synthetic", "--sections", "environment,cnn_epoch", "--expect-backend", "gpu"]
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: JAX's backend is cpu, expected gpu")
    (json_path,) = tmp_path.glob("accelerator-cpu-*.json")
    sections = json.loads(json_path.read_text())["sections"]
    assert sections["environment"]["status"] == "done" and sections["environment"]["result"]["backend"] == "cpu"
    assert sections["cnn_epoch"] == {
        "status": "not run",
        "reason": "JAX's backend is cpu, expected gpu",
        "seconds": 0.0,
        "result": None,
    }


def test_a_section_past_its_budget_is_recorded_as_cut_short(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setitem(accelerator_check.BUDGETS_S, "cnn_epoch", 1.0)  # less than importing JAX takes
    report = accelerator_check.main(
        ["--out", str(tmp_path), "--smoke", "--synthetic", "--sections", "cnn_epoch,torch_compile"]
    )
    section = report["sections"]["cnn_epoch"]
    assert section["status"] == "cut short at 1 s" and section["result"] is None and section["seconds"] < 5
    md = (tmp_path / "accelerator-unknown-smoke.md").read_text()
    assert "| cnn_epoch | cut short at 1 s |" in md and "| torch_compile | not run: not run at the smoke size" in md


def test_global_deadline_leaves_later_sections_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setattr(accelerator_check, "MIN_START_S", 8.5)
    report = accelerator_check.main(
        ["--out", str(tmp_path), "--synthetic", "--budget-s", "9", "--sections", "environment,throughput"]
    )
    assert report["sections"]["environment"]["status"] in ("done", "cut short at 9 s")
    assert report["sections"]["throughput"]["status"] == "not run"
    assert report["sections"]["throughput"]["reason"].startswith("global deadline")


def test_tolerances_are_read_from_the_test_source(tmp_path):
    source = tmp_path / "test_x.py"
    source.write_text(
        "import numpy as np, chex, jax\n"
        "def test_a():\n    np.testing.assert_allclose(1, 1, rtol=1e-4, atol=2e-5)\n"
        "    assert not np.allclose(1, 2, atol=1e-3)\n"
        "def test_b():\n    with jax.enable_x64(True):\n        chex.assert_trees_all_close(1, 1)\n"
        "def test_c():\n    assert 1 == 1\n"
        "def test_d():\n    assert 1.0 == pytest.approx(1.0, rel=1e-3)\n    chex.assert_trees_all_equal(1, 1)\n"
    )
    tol = numerics_check.tolerances(source)
    assert tol["test_a"] == {
        "x64": False,
        "checks": [
            {"call": "assert_allclose", "line": 3, "must_differ": False, "rtol": 1e-4, "atol": 2e-5},
            {"call": "allclose", "line": 4, "must_differ": True, "rtol": 1e-5, "atol": 1e-3},
        ],
    }
    assert tol["test_b"]["x64"] and tol["test_b"]["checks"][0]["rtol"] == 1e-6  # chex's default
    assert tol["test_c"] == {"x64": False, "checks": []}
    assert [(c["call"], c["rtol"], c["atol"]) for c in tol["test_d"]["checks"]] == [
        ("approx", 1e-3, 1e-12),
        ("assert_trees_all_equal", 0.0, 0.0),
    ]
    functions = ["test_cell_matches_numpy_float64", "test_cell", "test_scan"]
    assert (
        numerics_check._function_of("t.py::CellTest::test_cell_matches_numpy_float64_gru__with_jit", functions)
        == functions[0]
    )
    assert numerics_check._function_of("t.py::test_scan[lstm]", functions) == "test_scan"
    assert numerics_check._function_of("t.py::test_other", functions) is None


def test_pytest_outcomes_are_parsed_from_the_summary():
    text = "PASSED tests/a.py::test_x[1]\nFAILED tests/a.py::T::test_y - AssertionError: Not equal\nnoise\n"
    assert numerics_check.parse_summary(text) == {
        "tests/a.py::test_x[1]": {"outcome": "passed", "message": ""},
        "tests/a.py::T::test_y": {"outcome": "failed", "message": "AssertionError: Not equal"},
    }


def test_device_data_refuses_a_wrong_file_and_copies_nothing(tmp_path):
    source = (
        accel_sections.write_synthetic_idx(tmp_path / "src", 60_000, 100) / device_data.SUBDIR
    )  # test split too small
    with pytest.raises(
        device_data.PrepareError, match=r"t10k-images-idx3-ubyte.gz: shape \(100, 28, 28\), expected \(10000, 28, 28\)"
    ):
        device_data.prepare(source, tmp_path / "dest")
    (source / "train-labels-idx1-ubyte.gz").write_bytes(b"not the data")
    with pytest.raises(device_data.PrepareError, match="train-labels-idx1-ubyte.gz: not a readable IDX file"):
        device_data.prepare(source, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert device_data.main(["--source", str(tmp_path / "absent"), "--dest", str(tmp_path / "dest")]) == 2
    assert not (tmp_path / "dest").exists()


@pytest.mark.skipif(not device_data.DEFAULT_SOURCE.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_device_data_copies_the_checked_files(tmp_path):
    copies = device_data.prepare(device_data.DEFAULT_SOURCE, tmp_path)
    assert [p.name for p in copies] == list(device_data.FILES) and device_data.data_files(tmp_path) == copies
    for path in copies:
        assert path.read_bytes() == (device_data.DEFAULT_SOURCE / path.name).read_bytes()
    assert device_data.prepare(device_data.DEFAULT_SOURCE, tmp_path) == copies  # again: nothing to do
