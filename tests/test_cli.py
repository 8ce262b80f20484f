"""`dlchapter run all`: runs what has data, skips the rest with the reason, reports failures, writes an index.
`dlchapter list` and `--help` start fast and import no experiment and no preset's heavy modules."""

import json
import subprocess
import sys

import pytest

from dlchapter import cli
from dlchapter.presets import EXPERIMENTS, Experiment, Recipe


def _broken_recipe() -> Recipe:
    def run(config, workdir):
        raise RuntimeError("this experiment is broken on purpose")

    iris = EXPERIMENTS["iris"].recipe()
    return Recipe(iris.config_class, iris.presets, run, lambda *a: "", "broken")


def test_run_all_writes_an_index_of_runs_skips_and_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(
        "DLCHAPTER_DATA_DIR", str(tmp_path / "empty")
    )  # no files: only iris (bundled with scikit-learn) has data
    monkeypatch.setenv("DLCHAPTER_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(
        cli,
        "EXPERIMENTS",
        {
            "iris": EXPERIMENTS["iris"],
            "diamonds": EXPERIMENTS["diamonds"],
            "tabular": EXPERIMENTS["tabular"],  # needs your own CSV: skipped, saying what it needs
            "broken": Experiment("broken", (), _broken_recipe),
        },
    )
    status = cli.main(["run", "all", "--workdir", str(tmp_path / "runs"), "--epochs", "3"])
    assert status == 1  # one experiment failed; the others still ran and were indexed
    index = (tmp_path / "runs" / "index.md").read_text()
    assert "| iris | [summary](iris/summary.md) |" in index
    assert (tmp_path / "runs" / "iris" / "summary.md").is_file()
    assert "| diamonds | skipped: " in index and "diamonds" in capsys.readouterr().err
    assert "| broken | failed: RuntimeError: this experiment is broken on purpose |" in index
    assert "| tabular | skipped: needs --data-path and --target (your own CSV) |" in index
    assert not (tmp_path / "runs" / "tabular").exists()
    assert not (tmp_path / "runs" / "diamonds").exists()


_IMPORTS = """
import json, sys, time
started = time.perf_counter()
sys.argv = ["dlchapter", *json.loads(sys.argv[1])]
from dlchapter import cli
try:
    status = cli.main()
except SystemExit as stop:
    status = stop.code
seconds = time.perf_counter() - started
HEAVY = ("experiments", "jax", "jaxlib", "flax", "optax", "orbax", "pandas", "sklearn", "matplotlib", "tyro",
         "numpy", "scipy", "tensorboardX", "torch")
LIGHT = ("dlchapter.presets.recipe",)  # the Recipe dataclass the registry names, not a preset module
heavy = sorted(m for m in sys.modules if m not in LIGHT and (m.split(".")[0] in HEAVY
               or m.startswith(("dlchapter.runs", "dlchapter.presets.", "dlchapter.engine.train", "dlchapter.data"))))
print(json.dumps({"status": status, "seconds": seconds, "heavy": heavy}))
"""


def _light(argv):
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS, json.dumps(argv)], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_list_and_help_start_fast_and_import_no_experiment_or_preset_module():
    # module lists, not wall clock (which the machine's load decides): without JAX no program can compile;
    # benchmarks/cli_start.py measures the seconds
    for argv in (["list"], ["--help"], ["run", "--help"]):
        report, out = _light(argv)
        assert report["status"] == 0, out
        assert report["heavy"] == [], (
            f"{argv}: imported {report['heavy']}"
        )  # no experiments.*, no JAX, no numpy, no preset module
    assert "iris" in out and "sweep_california" in out or "Exit status" in out


def test_list_names_the_registry_and_no_library_module_imports_experiments():
    import pathlib

    root = pathlib.Path(cli.__file__).parent
    offenders = [
        str(p)
        for p in root.rglob("*.py")
        if "import experiments" in p.read_text() or "from experiments" in p.read_text()
    ]
    assert offenders == []
    assert set(EXPERIMENTS) >= {
        "iris",
        "diamonds",
        "california",
        "diabetes",
        "mnist_cnn",
        "sequences",
        "sweep_california",
        "tabular",
    }


def test_dataset_metadata_matches_the_data_registry():
    from dlchapter.data import known_datasets
    from dlchapter.presets.datasets import TARGET_KINDS

    assert sorted(TARGET_KINDS) == sorted(known_datasets())


def test_experiment_help_shows_its_own_grouped_flags_with_defaults_and_choices(capsys):
    try:
        cli.main(["run", "diabetes", "--help"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    for text in (
        "--threshold",
        "--batch-size",
        "--hidden INT,...",
        "(default: 100,8)",
        "{regression,binary,multiclass}",
        "data options",
        "model options",
        "optimizer options",
        "fit options",
        "runtime options",
        "decision threshold",
    ):
        assert text in out, text


def test_thin_launcher_still_runs_as_a_module_and_shows_the_experiments_flags():
    done = subprocess.run(
        [sys.executable, "-m", "experiments.diabetes", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--threshold" in done.stdout and "dlchapter run diabetes" in done.stdout


@pytest.mark.parametrize(
    ("stop", "status", "name"), [("SIGINT", cli.EXIT_CTRL_C, "Ctrl-C"), ("SIGTERM", cli.EXIT_SIGTERM, "SIGTERM")]
)
def test_a_stop_outside_checkpointed_training_is_one_line_and_its_exit_status(tmp_path, stop, status, name):
    import os
    import signal

    workdir = tmp_path / "run"
    env = {**os.environ, "DLCHAPTER_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "dlchapter.cli", "run", "iris", "--workdir", str(workdir), "--epochs", "5000"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    lines = []
    for line in proc.stderr:  # training has started: Ctrl-C reaches the whole process group, as from a terminal
        lines.append(line)
        if line.startswith("Epoch 1/"):
            os.killpg(proc.pid, getattr(signal, stop))
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=120) == status, "".join(lines)[-2000:]
    assert not any("Traceback" in line for line in lines)
    assert lines[-1].startswith(f"interrupted ({name}) before the run finished")
    assert not (workdir / "summary.md").exists()
