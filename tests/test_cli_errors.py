"""Every ordinary user error ends in exit 2 and one `error:` line that names the flag, file or directory,
with no traceback, before anything loads or trains, and leaves an earlier run's files byte-identical.

The table runs in-process through `dlchapter.cli.main` (most cases fail before any data loads); a few
cases also go through a subprocess of `python -m dlchapter.cli` to check the real exit status and stderr.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlchapter import cli

DATA_DIR = os.environ.get("DLCHAPTER_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

# (name, command after `dlchapter`, text the error line must contain); WORKDIR is the earlier run's directory.
RUN = ("run", "iris", "--workdir", "WORKDIR")
CASES: list[tuple[str, tuple[str, ...], str]] = [
    # ranges
    ("batch size 0", (*RUN, "--batch-size", "0"), "--batch-size"),
    ("negative batch size", (*RUN, "--batch-size", "-3"), "--batch-size"),
    ("epochs 0", (*RUN, "--epochs", "0"), "--epochs"),
    ("negative learning rate", (*RUN, "--learning-rate", "-0.1"), "--learning-rate"),
    ("zero learning rate", (*RUN, "--learning-rate", "0"), "--learning-rate"),
    ("infinite learning rate", (*RUN, "--learning-rate", "inf"), "--learning-rate"),
    ("dropout 1.0", (*RUN, "--dropout", "1.0,1.0"), "--dropout"),
    ("negative dropout", (*RUN, "--dropout", "-0.1,0"), "--dropout"),
    ("validation split 1.5", (*RUN, "--validation-split", "1.5"), "--validation-split"),
    ("negative validation split", (*RUN, "--validation-split", "-0.1"), "--validation-split"),
    ("test size 0", (*RUN, "--test-size", "0"), "--test-size"),
    ("hold-out fraction 2", ("run", "validation", "--workdir", "WORKDIR", "--holdout-fraction", "2"), "--holdout"),
    ("one true weight", ("run", "backprop", "--workdir", "WORKDIR", "--true-w", "1"), "--true-w"),
    ("three true weights", ("run", "backprop", "--workdir", "WORKDIR", "--true-w", "1,2,3"), "--true-w"),
    ("test size 1", (*RUN, "--test-size", "1"), "--test-size"),
    ("clip quantile 0.7", (*RUN, "--clip-quantile", "0.7"), "--clip-quantile"),
    ("threshold 2", (*RUN, "--threshold", "2"), "--threshold"),
    ("threshold 0", (*RUN, "--threshold", "0"), "--threshold"),
    ("steps per call -1", (*RUN, "--steps-per-call", "-1"), "--steps-per-call"),
    ("seed -1", (*RUN, "--seed", "-1"), "--seed"),
    ("seed 2**32", (*RUN, "--seed", str(2**32)), "--seed"),
    ("patience -1", (*RUN, "--patience", "-1"), "--patience"),
    ("ensemble 0", (*RUN, "--ensemble", "0"), "--ensemble"),
    ("hidden width 0", (*RUN, "--hidden", "0"), "--hidden"),
    ("negative hidden width", (*RUN, "--hidden", "12,-8"), "--hidden"),
    ("empty hidden", (*RUN, "--hidden", ""), "--hidden"),
    ("negative l2", (*RUN, "--l2", "-1"), "--l2"),
    ("negative decay", (*RUN, "--decay", "-0.5"), "--decay"),
    ("negative checkpoint interval", (*RUN, "--checkpoint-every-epochs", "-1"), "--checkpoint-every-epochs"),
    # flags and types
    ("not a number", (*RUN, "--batch-size", "abc"), "--batch-size"),
    ("unknown flag", (*RUN, "--bogus", "1"), "--bogus"),
    ("bad tuple item", (*RUN, "--hidden", "a,b"), "--hidden"),
    ("bad boolean", (*RUN, "--scale-inputs", "maybe"), "--scale-inputs"),
    ("flag without value", (*RUN, "--epochs"), "--epochs"),
    ("unknown preset", (*RUN, "--config", "nope"), "--config"),
    # choices
    ("unknown task", (*RUN, "--task", "foo"), "--task"),
    ("unknown activation", (*RUN, "--activation", "swish"), "--activation"),
    ("unknown optimizer", (*RUN, "--optimizer", "adamw"), "--optimizer"),
    ("unknown precision", (*RUN, "--precision", "fp8"), "--precision"),
    ("unknown validation mode", (*RUN, "--validation-mode", "random"), "--validation-mode"),
    ("image data set in a tabular run", (*RUN, "--dataset", "mnist"), "--dataset"),
    ("unknown data set", (*RUN, "--dataset", "nope"), "--dataset"),
    ("unknown CNN style", ("run", "mnist_cnn", "--workdir", "WORKDIR", "--style", "fancy"), "--style"),
    (
        "unknown recurrent model",
        ("run", "sequences", "--workdir", "WORKDIR", "--models", "gru,transformer"),
        "--models",
    ),
    # cross-field
    ("binary task on iris", (*RUN, "--task", "binary"), "--task"),
    ("regression task on iris", (*RUN, "--task", "regression"), "--task"),
    ("target filter on a classification run", (*RUN, "--max-target", "3"), "--max-target"),
    ("log target on a classification run", (*RUN, "--log-target", "true"), "--log-target"),
    ("scaled target on a classification run", (*RUN, "--scale-target", "true"), "--scale-target"),
    (
        "XGBoost beside a classification run",
        ("run", "diabetes", "--workdir", "WORKDIR", "--xgboost", "true"),
        "--xgboost",
    ),
    ("no plausible ranges known for iris", (*RUN, "--drop-implausible", "true"), "--drop-implausible"),
    ("one dropout rate for two layers", (*RUN, "--dropout", "0.5"), "--dropout"),
    ("val_loss without a validation split", (*RUN, "--monitor", "val_loss"), "--monitor"),
    ("a log the run never writes", (*RUN, "--monitor", "auc"), "--monitor"),
    ("ensemble with two dropout rates", (*RUN, "--ensemble", "2", "--dropout", "0.1,0.2"), "--ensemble"),
    (
        "sequence task and data set",
        ("run", "sequences", "--workdir", "WORKDIR", "--task", "images", "--dataset", "daily_min_temperatures"),
        "--dataset",
    ),
    ("sweep learning rate 0", ("sweep", "--workdir", "WORKDIR", "--learning-rates", "0,1e-3"), "--learning-rates"),
    ("sweep with one fold", ("sweep", "--workdir", "WORKDIR", "--folds", "1"), "--folds"),
    ("sweep without seeds", ("sweep", "--workdir", "WORKDIR", "--seeds", ""), "--seeds '': give at least one"),
    ("sweep without l2s", ("sweep", "--workdir", "WORKDIR", "--l2s", ""), "--l2s"),
    ("batch size list with 0", ("run", "batch_size", "--workdir", "WORKDIR", "--batch-sizes", "0,32"), "--batch-sizes"),
    # the tabular experiments' --missing, and the generic experiment on your own CSV (issue 17)
    ("unknown missing policy", (*RUN, "--missing", "fill"), "--missing"),
    ("own-CSV flag on a chapter experiment", (*RUN, "--data-path", "AFILE"), "--data-path"),
    ("own CSV without --data-path", ("run", "tabular", "--workdir", "WORKDIR", "--target", "y"), "--data-path"),
    (
        "own CSV that does not exist",
        ("run", "tabular", "--workdir", "WORKDIR", "--data-path", "/nonexistent/houses.csv", "--target", "y"),
        "--data-path /nonexistent/houses.csv: no such file",
    ),
    (
        "own CSV path is a directory",
        ("run", "tabular", "--workdir", "WORKDIR", "--data-path", "WORKDIR", "--target", "y"),
        "not a file",
    ),
    (
        "target listed as categorical",
        ("run", "tabular", "--workdir", "WORKDIR", "--data-path", "AFILE", "--target", "y", "--categorical", "a,y"),
        "--categorical",
    ),
    # directories
    ("missing data directory", (*RUN, "--data-dir", "/nonexistent/dlchapter"), "--data-dir"),
    ("data directory is a file", (*RUN, "--data-dir", "AFILE"), "--data-dir"),
    ("empty workdir", ("run", "iris", "--workdir", ""), "--workdir"),
    ("workdir flag without a value", ("run", "iris", "--workdir"), "--workdir"),
    ("workdir is a file", ("run", "iris", "--workdir", "AFILE"), "--workdir"),
    ("workdir under a file", ("run", "iris", "--workdir", "AFILE/run"), "--workdir"),
    ("workdir on a read-only file system", ("run", "iris", "--workdir", "/proc/dlchapter-run"), "--workdir"),
    ("no workdir", ("run", "iris", "--epochs", "2"), "--workdir"),
    ("run all into a file", ("run", "all", "--workdir", "AFILE"), "--workdir"),
    # commands
    ("unknown experiment", ("run", "nope", "--workdir", "WORKDIR"), "nope"),
    ("unknown command", ("frobnicate",), "frobnicate"),
    ("run without a name", ("run",), "dlchapter run"),
]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A finished iris run: every case below passes this workdir (or fails before touching it)."""
    workdir = tmp_path_factory.mktemp("earlier") / "run"
    assert cli.main(["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--monitor", "none"]) == 0
    return workdir


def _snapshot(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def _argv(command: tuple[str, ...], workdir: Path, a_file: Path) -> list[str]:
    return [token.replace("WORKDIR", str(workdir)).replace("AFILE", str(a_file)) for token in command]


def _assert_one_error_line(stderr: str, needle: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert needle in errors[0], errors[0]
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("name,command,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(name, command, needle, earlier_run, tmp_path, capsys):
    before = _snapshot(earlier_run)
    assert before  # the earlier run wrote its report
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a directory\n")
    status = cli.main(_argv(command, earlier_run, a_file))
    captured = capsys.readouterr()
    assert status == 2, (name, captured.err)
    _assert_one_error_line(captured.err, needle)
    assert _snapshot(earlier_run) == before


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


def _fail_in_prepare(monkeypatch, error: BaseException) -> None:
    from dlchapter.runs import tabular_runs as tabular

    def prepare(*args, **kwargs):
        raise error

    monkeypatch.setattr(tabular, "prepare", prepare)


def _library_errors():
    from dlchapter.checkpoint.store import CheckpointError
    from dlchapter.engine.train import TrainingDiverged

    return [
        ("disk full", OSError(errno.ENOSPC, "No space left on device", "/cache/iris.csv"), "/cache/iris.csv"),
        (
            "permission denied",
            PermissionError(errno.EACCES, "Permission denied", "/cache/iris.csv"),
            "Permission denied",
        ),
        (
            "missing optional package",
            ModuleNotFoundError("No module named 'xgboost'", name="xgboost"),
            "pip install xgboost",
        ),
        ("unusable checkpoint", CheckpointError("checkpoints/3 is not readable: run with --restart"), "--restart"),
        ("diverged", TrainingDiverged("loss is NaN at step 7: lower --learning-rate"), "step 7"),
    ]


def test_errors_raised_during_a_run_are_one_line_and_leave_the_workdir_alone(earlier_run, monkeypatch, capsys):
    for name, error, needle in _library_errors():
        before = _snapshot(earlier_run)
        with monkeypatch.context() as patch:
            _fail_in_prepare(patch, error)
            status = cli.main(["run", "iris", "--workdir", str(earlier_run), "--epochs", "2"])
        captured = capsys.readouterr()
        assert status == 2, (name, captured.err)
        _assert_one_error_line(captured.err, needle)
        assert _snapshot(earlier_run) == before, name


def test_missing_data_file_names_the_data_set(earlier_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLCHAPTER_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DLCHAPTER_DATA_DIR", str(empty))
    before = _snapshot(earlier_run)
    status = cli.main(["run", "diabetes", "--workdir", str(earlier_run), "--data-dir", str(empty), "--epochs", "1"])
    assert status == 2
    _assert_one_error_line(capsys.readouterr().err, "diabetes")
    assert _snapshot(earlier_run) == before


def test_xgboost_missing_is_caught_before_training(earlier_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # what `import xgboost` sees when it is not installed
    before = _snapshot(earlier_run)
    assert cli.main(["run", "california", "--workdir", str(earlier_run), "--data-dir", DATA_DIR]) == 2
    _assert_one_error_line(capsys.readouterr().err, "--xgboost")
    assert _snapshot(earlier_run) == before


def test_mnist_holdout_larger_than_the_test_split_stops_before_training(earlier_run, capsys):
    from dlchapter.data import DataError, load

    try:
        load("mnist", DATA_DIR, split="test", download=False)
    except DataError as error:
        pytest.skip(f"MNIST test split not available: {error}")
    before = _snapshot(earlier_run)
    status = cli.main(
        [
            "run",
            "mnist_cnn",
            "--workdir",
            str(earlier_run),
            "--data-dir",
            DATA_DIR,
            "--holdout-from-test",
            "--holdout-train",
            "9000",
            "--holdout-test",
            "2000",
        ]
    )
    assert status == 2
    _assert_one_error_line(capsys.readouterr().err, "--holdout-train 9000")
    assert _snapshot(earlier_run) == before


def test_debug_shows_the_traceback_and_a_bug_is_not_hidden(earlier_run, monkeypatch, capsys):
    assert cli.main(["--debug", "run", "iris", "--workdir", str(earlier_run), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: --batch-size")
    _fail_in_prepare(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):  # the console script then exits 1 with the traceback
        cli.main(["run", "iris", "--workdir", str(earlier_run)])


@pytest.mark.parametrize(
    "command,needle",
    [
        (("run", "iris", "--workdir", "WORKDIR", "--batch-size", "0"), "--batch-size"),
        (("run", "iris", "--workdir", "/proc/dlchapter-run"), "--workdir"),
        (("run", "nope", "--workdir", "WORKDIR"), "nope"),
    ],
)
def test_through_a_subprocess(command, needle, earlier_run, tmp_path):
    before = _snapshot(earlier_run)
    done = subprocess.run(
        [sys.executable, "-m", "dlchapter.cli", *_argv(command, earlier_run, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    _assert_one_error_line(done.stderr, needle)
    assert _snapshot(earlier_run) == before


def _earlier_checkpointed_run(tmp_path: Path) -> Path:
    workdir = tmp_path / "ck"
    assert cli.main(["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--checkpoint-every-epochs", "1"]) == 0
    return workdir


def test_a_run_that_would_ignore_an_earlier_runs_checkpoints_is_refused(tmp_path, capsys):
    workdir = _earlier_checkpointed_run(tmp_path)
    capsys.readouterr()
    before = _snapshot(workdir)
    assert cli.main(["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--seed", "1"]) == 2
    _assert_one_error_line(capsys.readouterr().err, "--checkpoint-every-epochs")
    assert _snapshot(workdir) == before
    # --restart says to start over: the checkpoints go, and the new run's report describes what ran
    assert cli.main(["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--seed", "1", "--restart"]) == 0
    assert not (workdir / "checkpoints").exists()
    assert json.loads((workdir / "config.json").read_text())["seed"] == 1


def test_checkpoints_laid_out_by_an_older_version_are_refused_with_what_to_do(tmp_path, capsys, monkeypatch):
    """Checkpoints whose optimizer state has another layout (before the sixth session every optimizer state
    held an L2 term) fit the config but not the state: one error line that says why and what to do."""
    from dlchapter.engine import fitting, optim

    with monkeypatch.context() as patch:
        patch.setattr(fitting, "make_optimizer", lambda *a, **k: optim.make_optimizer(*a, **k, l2_hyperparameter=True))
        workdir = _earlier_checkpointed_run(tmp_path)
    capsys.readouterr()
    before = _snapshot(workdir)
    assert cli.main(["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--checkpoint-every-epochs", "1"]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err, "does not fit")
    assert "older dlchapter" in err and "--restart" in err, err
    assert _snapshot(workdir) == before
    args = ["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--checkpoint-every-epochs", "1", "--restart"]
    assert cli.main(args) == 0


def test_a_failed_restart_run_without_checkpoints_keeps_the_earlier_checkpoints(tmp_path, capsys, monkeypatch):
    from dlchapter.data import DataError
    from dlchapter.runs import tabular_runs

    workdir = _earlier_checkpointed_run(tmp_path)
    capsys.readouterr()
    before = _snapshot(workdir)

    def bad_rows(config, directory):
        raise DataError("row 17 of iris.csv is bad (found late)")

    monkeypatch.setattr(tabular_runs, "run_tabular", bad_rows)
    assert cli.main(["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--seed", "1", "--restart"]) == 2
    _assert_one_error_line(capsys.readouterr().err, "row 17 of iris.csv is bad (found late)")
    assert _snapshot(workdir) == before  # only a finished --restart run deletes them


@pytest.mark.parametrize("what", ["config.json is a directory", "checkpoints is a file"])
def test_an_output_name_taken_by_the_wrong_kind_of_file_is_refused_before_training(tmp_path, capsys, what):
    workdir = _earlier_checkpointed_run(tmp_path)
    capsys.readouterr()
    if what == "config.json is a directory":
        (workdir / "config.json").unlink()
        (workdir / "config.json").mkdir()
    else:
        import shutil

        shutil.rmtree(workdir / "checkpoints")
        (workdir / "checkpoints").write_text("x\n")
    before = _snapshot(workdir)
    assert cli.main(["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--checkpoint-every-epochs", "1"]) == 2
    _assert_one_error_line(capsys.readouterr().err, what.split()[0])
    assert _snapshot(workdir) == before


def test_a_dangling_link_as_workdir_is_named(tmp_path, capsys):
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    assert cli.main(["run", "iris", "--workdir", str(link), "--epochs", "2"]) == 2
    _assert_one_error_line(capsys.readouterr().err, "does not exist")


def test_another_data_set_gets_its_own_headline_and_no_foreign_notes(tmp_path, capsys):
    workdir = tmp_path / "pima"
    argv = ["run", "iris", "--workdir", str(workdir), "--dataset", "diabetes", "--task", "binary", "--epochs", "2"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("diabetes (chapter, seed 0): test accuracy ")
    summary = (workdir / "summary.md").read_text()
    assert "was written for iris; this run uses --dataset diabetes" in summary and "unscaled inputs" not in summary


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--bogus"], "Unrecognized options: --bogus"),
        (["--seed", "1"], "sweep_california: Unrecognized options"),  # the sweep takes --seeds
        (["--epochs", "0"], "--epochs 0: must be a whole number >= 1"),
    ],
)
def test_run_all_with_a_flag_one_experiment_cannot_take_stops_before_anything_runs(tmp_path, capsys, flags, needle):
    """Each experiment used to fail on its own (exit 1, a line per experiment) and index.md was written anyway."""
    workdir = tmp_path / "all"
    assert cli.main(["run", "all", "--workdir", str(workdir), "--quick", *flags]) == 2
    _assert_one_error_line(capsys.readouterr().err, needle)
    assert not workdir.exists()
