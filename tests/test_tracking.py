"""Run tracking: TensorBoard events read back with tensorboard's own reader, epoch log lines, compile time apart."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from dlchapter.reporting import verbosity
from dlchapter.reporting.figures import class_names, needs_log_scale

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DLCHAPTER_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}


def _history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _accumulator(directory: Path):
    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _hparams(acc) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def _check_events_match_files(workdir: Path) -> dict:
    """Every history.csv value, the test metrics and the hyperparameters are in workdir/tb; returns metrics.json."""
    acc = _accumulator(workdir / "tb")
    rows = _history(workdir / "history.csv")
    metrics = json.loads((workdir / "metrics.json").read_text())
    config = json.loads((workdir / "config.json").read_text())
    scalars = set(acc.Tags()["scalars"])
    for column in rows[0]:
        if column == "epoch":
            continue
        events = {e.step: e.value for e in acc.Scalars(column)}
        assert events == {int(r["epoch"]): float(np.float32(r[column])) for r in rows}, column  # events hold float32
    tests = {k: v for k, v in metrics.items() if k.startswith("test_")}
    assert tests and set(tests) <= scalars
    for name, value in tests.items():
        assert [e.value for e in acc.Scalars(name)] == [float(np.float32(value))], name
    hparams = _hparams(acc)
    assert hparams["epochs"] == config["epochs"] and hparams["seed"] == config["seed"]
    assert hparams["optimizer"] == config["optimizer"] and hparams["hidden"] == str(config["hidden"])
    assert len(acc.Tags()["images"]) >= 2 and any("Model" in t for t in acc.Tags()["tensors"])
    summary = (workdir / "summary.md").read_text()
    for tag in acc.Tags()["images"]:  # each figure's own PNG bytes, its size read back by matplotlib's PNG reader
        (event,) = acc.Images(tag)
        (name,) = [line.split("(")[-1].rstrip(")") for line in summary.splitlines() if f"[{tag}]" in line]
        png = (workdir / name).read_bytes()
        assert event.encoded_image_string == png
        assert (event.height, event.width) == matplotlib.image.imread(workdir / name).shape[:2]
    return metrics


def test_cli_run_writes_events_and_one_log_line_per_epoch(tmp_path):
    workdir = tmp_path / "iris"
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:  # not a terminal: the default verbosity is one line per epoch
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dlchapter.cli",
                "run",
                "iris",
                "--workdir",
                str(workdir),
                "--config",
                "improved",
                "--epochs",
                "4",
                "--patience",
                "100",
            ],
            env=_env(tmp_path),
            stderr=stderr,
            stdout=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    log = stderr_path.read_text()
    assert done.returncode == 0, log[-3000:]
    rows = _history(workdir / "history.csv")
    assert len(rows) == 4
    lines = re.findall(
        r"^Epoch (\d+)/4 - [\d.]+s - loss: ([\d.e+-]+) .*val_loss: ([\d.e+-]+).* lr: 0\.01$", log, re.MULTILINE
    )
    assert [int(e) for e, _, _ in lines] == [1, 2, 3, 4], log
    for (_, loss, val_loss), row in zip(lines, rows):
        assert float(loss) == pytest.approx(row["loss"], rel=1e-3) and float(val_loss) == pytest.approx(
            row["val_loss"], rel=1e-3
        )
    assert "\r" not in log  # no progress bar when stderr is a file
    metrics = _check_events_match_files(workdir)
    acc = _accumulator(workdir / "tb")
    assert metrics["compile_seconds"] > 0
    assert [e.value for e in acc.Scalars("compile_seconds")] == [pytest.approx(metrics["compile_seconds"], rel=1e-6)]
    assert len(acc.Scalars("samples_per_second")) == 4 and min(e.value for e in acc.Scalars("samples_per_second")) > 0
    # epoch 1 no longer holds the compilation: it is far shorter than the compile it used to include
    assert rows[0]["epoch_seconds"] < metrics["compile_seconds"]


def test_quiet_verbosity_prints_no_epoch_lines_and_bad_values_stop_before_work(tmp_path):
    quiet = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.iris",
            "--workdir",
            str(tmp_path / "q"),
            "--epochs",
            "2",
            "--verbosity",
            "quiet",
        ],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Epoch" not in quiet.stderr and (tmp_path / "q" / "tb").is_dir()
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.iris", "--workdir", str(tmp_path / "b"), "--verbosity", "loud"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --verbosity must be one of quiet, epoch, bar, got 'loud'"
    ]
    assert not (tmp_path / "b").exists()


def test_a_run_outside_the_cli_still_gets_its_events_from_history_csv(tmp_path):
    from experiments import iris

    iris.main(["--workdir", str(tmp_path), "--epochs", "3", "--monitor", "none"])  # no run scope: nothing streamed
    _check_events_match_files(tmp_path)


@pytest.mark.parametrize("scoped", [True, False])
def test_a_rerun_into_the_same_directory_hides_the_earlier_runs_events(tmp_path, scoped):
    import contextlib

    from dlchapter.reporting.tracking import track_run
    from experiments import iris

    for epochs, rate in (("5", "0.001"), ("2", "0.02")):
        with track_run(tmp_path, progress=False) if scoped else contextlib.nullcontext():
            iris.main(["--workdir", str(tmp_path), "--epochs", epochs, "--learning-rate", rate, "--monitor", "none"])
    _check_events_match_files(tmp_path)  # the second run's 2 epochs, test metrics and hyperparameters only
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == (2 if scoped else 1)


def test_configure_sets_what_stderr_shows():
    assert verbosity.configure("bar") is True
    assert verbosity.configure("epoch") is False
    with pytest.raises(verbosity.VerbosityError):
        verbosity.configure("loud")
    assert verbosity.pop_verbosity(["--workdir", "w", "--verbosity=quiet", "--epochs", "2"]) == (
        "quiet",
        ["--workdir", "w", "--epochs", "2"],
    )


def test_log_scale_only_beyond_two_decades_and_diabetes_class_names():
    assert needs_log_scale([2.0, 1.0, 0.01])  # 200x
    assert not needs_log_scale([1.0, 0.0101])  # 99x
    assert not needs_log_scale([100.0, 0.001, 0.0])  # a zero cannot go on a log axis
    assert needs_log_scale([5.0], [0.04])  # training and validation together
    assert class_names("diabetes", ("0", "1"), 2) == ["no diabetes", "diabetes"]
    assert class_names("iris", ("setosa", "versicolor", "virginica"), 3) == ["setosa", "versicolor", "virginica"]
    assert class_names("other", None, 2) == ["0", "1"]


def test_fit_records_compile_apart_and_the_bar_stays_after_training(tmp_path, capsys):
    import jax

    from dlchapter.engine.optim import OptimizerConfig, make_optimizer
    from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
    from dlchapter.models.dense import MLP
    from dlchapter.reporting.tracking import track_run

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    y = (x @ np.arange(1.0, 5.0, dtype=np.float32))[:, None]
    state = create_train_state(MLP((8,), 1), make_optimizer(OptimizerConfig("adam", 0.01), 3), x, jax.random.key(0))
    trainer = Trainer(TASKS["regression"])
    with track_run(tmp_path, progress=True) as scope:  # progress=True: the bar even though stderr is captured
        _, history = trainer.fit(
            state, x, y, FitConfig(epochs=3, batch_size=32, validation_split=0.25), jax.random.key(1)
        )
    assert trainer.traces["train"] == 1 and trainer.traces["eval"] == 1  # the AOT compile is the one jit then uses
    assert (
        history.compile_seconds > 0
        and scope.compile_seconds
        and sum(scope.compile_seconds) == pytest.approx(history.compile_seconds)
    )
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "100%" in bar and "9/9" in bar  # leave=True: the finished bar is the last thing on the line
    acc = _accumulator(tmp_path / "tb")
    assert [e.step for e in acc.Scalars("val_loss")] == [1, 2, 3]


def test_a_resumed_run_replaces_the_epochs_after_its_checkpoint(tmp_path):
    import jax

    from dlchapter.checkpoint.resume import CheckpointConfig, TrainingInterrupted
    from dlchapter.engine.optim import OptimizerConfig, make_optimizer
    from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
    from dlchapter.models.dense import MLP
    from dlchapter.reporting.tracking import track_run

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    config = FitConfig(epochs=4, batch_size=16, progress=False)
    checkpoint = CheckpointConfig(tmp_path / "checkpoints", every_epochs=2)

    def fit(on_epoch_end=None):
        state = create_train_state(MLP((8,), 1), make_optimizer(OptimizerConfig("adam", 0.01), 4), x, jax.random.key(0))
        with track_run(tmp_path, progress=False):
            return Trainer(TASKS["regression"]).fit(
                state, x, y, config, jax.random.key(1), checkpoint=checkpoint, on_epoch_end=on_epoch_end
            )[1]

    def interrupt_in_epoch_3(epoch, logs, state):
        if epoch == 3:  # after epoch 3's events, before its checkpoint: the run resumes from epoch 2
            raise TrainingInterrupted("simulated SIGTERM")

    def crash_in_epoch_1(epoch, logs, state):
        raise RuntimeError("simulated crash")

    earlier = create_train_state(MLP((8,), 1), make_optimizer(OptimizerConfig("sgd", 0.001), 4), x, jax.random.key(5))
    with track_run(tmp_path, progress=False):  # an earlier run in the directory, without checkpoints
        Trainer(TASKS["regression"]).fit(earlier, x, y, FitConfig(epochs=6, batch_size=16), jax.random.key(2))
    earlier_files = _tree(tmp_path / "tb")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(crash_in_epoch_1)
    assert _tree(tmp_path / "tb") == earlier_files  # a crash removes its own events only
    with pytest.raises(TrainingInterrupted):
        fit(interrupt_in_epoch_3)
    assert not set(earlier_files) & set(_tree(tmp_path / "tb"))  # interrupted: the resume continues this run alone
    history = fit()
    events = _accumulator(tmp_path / "tb").Scalars("loss")
    assert [e.step for e in events] == [1, 2, 3, 4]  # epoch 3 of the interrupted run is gone, not shown twice
    assert [e.value for e in events] == [float(np.float32(v)) for v in history.values["loss"]]


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_failing_rerun_leaves_the_earlier_runs_events_byte_identical(tmp_path, capsys):
    from dlchapter import cli

    workdir = tmp_path / "iris"
    good = ["run", "iris", "--workdir", str(workdir), "--epochs", "2", "--verbosity", "quiet"]
    assert cli.main(good) == 0
    before, reports = _tree(workdir / "tb"), {n: (workdir / n).read_bytes() for n in ("config.json", "metrics.json")}
    assert any(name.startswith("events.out.tfevents.") for name in before)
    diverging = [*good[:4], "--epochs", "4", "--learning-rate", "1e30", "--optimizer", "sgd", "--verbosity", "quiet"]
    capsys.readouterr()
    assert cli.main(diverging) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nan" in err[0], err
    assert _tree(workdir / "tb") == before  # names and bytes: the failed run's file is gone, the earlier ones stay
    assert {n: (workdir / n).read_bytes() for n in reports} == reports
    _check_events_match_files(workdir)  # TensorBoard still shows the run that config.json describes


def test_a_nothing_to_train_rerun_keeps_the_runs_compile_seconds(tmp_path):
    from dlchapter import cli

    argv = ["run", "iris", "--workdir", str(tmp_path), "--epochs", "2", "--checkpoint-every-epochs", "1"]
    assert cli.main([*argv, "--verbosity", "quiet"]) == 0
    first = json.loads((tmp_path / "metrics.json").read_text())
    assert first["compile_seconds"] > 0
    assert cli.main([*argv, "--verbosity", "quiet"]) == 0  # finished and checkpointed: nothing left to train
    second = json.loads((tmp_path / "metrics.json").read_text())
    # this invocation compiled and trained nothing: the report keeps the run's own timings, not a restore's
    assert second["compile_seconds"] == first["compile_seconds"] and second["train_seconds"] == first["train_seconds"]
    assert second["epochs_trained_by_this_run"] == 0
    assert second["epochs_run"] == first["epochs_run"] == 2
    _check_events_match_files(tmp_path)


def test_the_command_lines_log_handler_marks_warnings_as_warning_lines():
    import io
    import logging

    from dlchapter.reporting import verbosity

    library = logging.getLogger("dlchapter")
    before = (list(library.handlers), library.level, library.propagate)
    stream = io.StringIO()
    try:
        verbosity.configure("epoch", stream)
        logging.getLogger("dlchapter.some_module").info("resumed from a checkpoint")
        logging.getLogger("dlchapter.some_module").warning("a helper process stopped")
    finally:
        library.handlers[:] = before[0]
        library.setLevel(before[1])
        library.propagate = before[2]
    assert stream.getvalue().splitlines() == ["resumed from a checkpoint", "warning: a helper process stopped"]
