"""A run is bound to its checkpoints: what a rerun into the same workdir resumes, extends or refuses.

Command-line runs are subprocesses of `python -m dlchapter.cli run iris` (small: 3 to 8
epochs of 90 rows), so that their stderr is checked exactly as a user sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from dlchapter import cli
from dlchapter.checkpoint.checkpoint_manifest import meta_digest
from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.checkpoint.run_identity import RESULT_NEUTRAL_FIELDS, RunMismatch, differences
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from dlchapter.models.dense import MLP

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240
BASE = ("--config", "improved", "--epochs", "3", "--checkpoint-every-epochs", "1")


def _messages(stderr: str) -> list[str]:
    """stderr's lines without the epoch and compile-time lines that `--verbosity epoch` (not a terminal) shows."""
    return [line for line in stderr.strip().splitlines() if not line.startswith(("Epoch ", "compiled the "))]


def _cli(workdir: Path, *flags: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    command = [sys.executable, "-m", "dlchapter.cli", "run", "iris", "--workdir", str(workdir), *flags]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def _files(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 3-epoch improved-iris run with a checkpoint after every epoch."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    proc = _cli(workdir, *BASE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _copy(run: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    return workdir


# ------------------------------------------------------------------ refused
@pytest.mark.parametrize(
    "flags, expected",
    [
        (("--seed", "1"), "seed: 0 -> 1"),
        (("--learning-rate", "0.02"), "learning_rate: 0.01 -> 0.02"),
        (("--batch-size", "20"), "batch_size: 10 -> 20"),
        (("--optimizer", "rmsprop"), 'optimizer: "adam" -> "rmsprop"'),
        (("--epochs", "2"), "epochs: 3 -> 2 (fewer than the checkpointed run)"),
    ],
)
def test_a_changed_config_is_refused_and_the_workdir_is_untouched(finished, tmp_path, capsys, flags, expected):
    workdir = _copy(finished, tmp_path)
    before = _files(workdir)
    args = [*BASE, *flags] if flags[0] != "--epochs" else [*BASE[:2], *flags, *BASE[4:]]
    assert cli.main(["run", "iris", "--workdir", str(workdir), *args]) == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: the checkpoints in"), err
    assert expected in err[0] and "--restart" in err[0] and "another --workdir" in err[0], err[0]
    assert _files(workdir) == before  # config.json, report and checkpoints byte-identical


def _iris_dir(tmp_path: Path, name: str, change: bool) -> Path:
    """A --data-dir holding the chapter's iris.csv, or a copy with one measurement changed."""
    source = Path(os.environ.get("DLCHAPTER_DATA_DIR", ROOT.parent / "shared" / "data")) / "iris.csv"
    text = source.read_text()
    directory = tmp_path / name
    directory.mkdir()
    (directory / "iris.csv").write_text(text.replace("\n5.1,3.5,", "\n5.3,3.5,", 1) if change else text)
    return directory


def test_other_data_under_the_same_name_is_refused_and_the_same_data_elsewhere_resumes(finished, tmp_path, capsys):
    """--data-dir is result-neutral (the data set is named by the config); the data's digest in the checkpoints
    tells other rows apart, which used to resume silently."""
    workdir = _copy(finished, tmp_path)
    before = _files(workdir)
    changed = _iris_dir(tmp_path, "changed", change=True)
    assert cli.main(["run", "iris", "--workdir", str(workdir), *BASE, "--data-dir", str(changed)]) == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and "data_content_digest" in err[0] and "--restart" in err[0], err
    assert _files(workdir) == before
    same = _iris_dir(tmp_path, "same", change=False)
    assert cli.main(["run", "iris", "--workdir", str(workdir), *BASE, "--data-dir", str(same)]) == 0
    assert "nothing to train" in capsys.readouterr().err


def test_every_differing_field_is_listed_on_one_line_in_a_subprocess(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    before = _files(workdir)
    proc = _cli(workdir, *BASE, "--seed", "1", "--learning-rate", "0.02", "--batch-size", "20", "--hidden", "6,5")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _messages(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "batch_size: 10 -> 20; hidden: [12, 8] -> [6, 5]; learning_rate: 0.01 -> 0.02; seed: 0 -> 1" in lines[0]
    assert _files(workdir) == before


def test_restart_or_a_result_neutral_change_is_not_refused(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    proc = _cli(workdir, *BASE[:4], "--checkpoint-every-epochs", "2", "--note", "another note")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the run finished its 3 epochs; nothing to train" in proc.stderr
    proc = _cli(workdir, *BASE, "--seed", "1", "--restart")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((workdir / "config.json").read_text())["seed"] == 1
    assert json.loads((workdir / "metrics.json").read_text())["seed"] == 1
    assert _steps(workdir) and _set_aside(workdir) == []  # the earlier run's checkpoints went at the first save


def test_identity_rules():
    old = {
        "seed": 0,
        "epochs": 3,
        "restart": False,
        "runtime": {"data_dir": "a", "steps_per_call": 1},
        "optimizer": {"name": "adam", "learning_rate": 0.01},
    }
    new = {
        "seed": 0,
        "epochs": 8,
        "restart": True,
        "runtime": {"data_dir": "b", "steps_per_call": 8},
        "optimizer": {"name": "sgd", "learning_rate": 0.01},
        "l2": 0.1,
    }
    assert differences(old, new) == [
        'l2: "(absent)" -> 0.1 (the checkpoint was written before runs stored it)',
        'optimizer.name: "adam" -> "sgd"',
    ]
    assert differences(new, old) == [
        "epochs: 8 -> 3 (fewer than the checkpointed run)",
        'l2: 0.1 -> "(absent)"',
        'optimizer.name: "sgd" -> "adam"',
    ]
    assert differences(old, dict(old, epochs=30)) == []
    assert {"restart", "data_dir", "steps_per_call", "note"} <= RESULT_NEUTRAL_FIELDS
    assert not {"seed", "learning_rate", "batch_size", "optimizer", "epochs", "hidden"} & RESULT_NEUTRAL_FIELDS


# ------------------------------------------------------------------ resumed
def test_an_unchanged_rerun_of_an_interrupted_run_resumes_exactly(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    flags = ("--config", "improved", "--epochs", "6", "--checkpoint-every-epochs", "1")
    assert _cli(whole, *flags).returncode == 0
    shutil.copytree(whole, cut)
    for step in _steps(cut)[-2:]:  # as if killed after epoch 4: only that epoch's checkpoint survives
        shutil.rmtree(cut / "checkpoints" / str(step))
    (cut / "predictions.csv").unlink()
    proc = _cli(cut, *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps_per_epoch = _steps(whole)[-1] // 6
    resumed = f"resuming from checkpoint step {4 * steps_per_epoch} in {cut / 'checkpoints'} at epoch 5 of 6"
    assert resumed in proc.stderr
    assert (cut / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
    assert (cut / "history.csv").read_text().splitlines()[:5] == (whole / "history.csv").read_text().splitlines()[:5]


def test_more_epochs_train_exactly_the_extra_ones_and_equal_one_longer_run(finished, tmp_path):
    extended, longer = _copy(finished, tmp_path), tmp_path / "longer"
    proc = _cli(extended, *BASE[:2], "--epochs", "8", *BASE[4:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "at epoch 4 of 8" in proc.stderr
    assert _cli(longer, *BASE[:2], "--epochs", "8", *BASE[4:]).returncode == 0
    assert json.loads((extended / "config.json").read_text())["epochs"] == 8  # config.json describes what ran
    history = (extended / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 8 and history[1:4] == (finished / "history.csv").read_text().splitlines()[1:4]
    assert (extended / "predictions.csv").read_bytes() == (longer / "predictions.csv").read_bytes()
    assert (extended / "predictions.csv").read_bytes() != (finished / "predictions.csv").read_bytes()


def test_a_run_that_stopped_early_is_not_trained_again_by_more_epochs(tmp_path):
    workdir = tmp_path / "run"  # the chapter preset stops on training accuracy within a few epochs
    assert _cli(workdir, "--epochs", "100", "--checkpoint-every-epochs", "1").returncode == 0
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["epochs_run"] < 100
    proc = _cli(workdir, "--epochs", "200", "--checkpoint-every-epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"the run stopped early after {metrics['epochs_run']} epochs; nothing to train" in proc.stderr
    again = json.loads((workdir / "metrics.json").read_text())
    assert again["epochs_run"] == metrics["epochs_run"] and again["test_accuracy"] == metrics["test_accuracy"]


def _fit(directory: Path, epochs: int, tx: optax.GradientTransformation, seen: list[int], run_config=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype(np.float32)
    y = (x @ rng.normal(size=5)).astype(np.float32)
    state = create_train_state(MLP((16,), 1, dropout=(0.2,)), tx, x, jax.random.key(1))
    return Trainer(TASKS["regression"]).fit(
        state,
        x,
        y,
        FitConfig(epochs=epochs, batch_size=16, seed=3, progress=False),
        jax.random.key(2),
        checkpoint=CheckpointConfig(directory, run_config=run_config),
        on_epoch_end=lambda epoch, logs, st: seen.append(epoch),
    )


def test_extension_with_the_chapters_per_epoch_decay_equals_one_longer_run(tmp_path):
    """a = a0 / (1 + decay * epoch) depends only on the epoch: 3 epochs then 3 more = 6 epochs."""
    tx = make_optimizer(OptimizerConfig("sgd", learning_rate=0.05, decay=0.5), steps_per_epoch=6)
    seen_short, seen_extra, seen_long = [], [], []
    _fit(tmp_path / "a", 3, tx, seen_short)
    extended, history = _fit(tmp_path / "a", 6, tx, seen_extra)
    longer, long_history = _fit(tmp_path / "b", 6, tx, seen_long)
    assert seen_short == [1, 2, 3] and seen_extra == [4, 5, 6] and seen_long == [1, 2, 3, 4, 5, 6]
    assert history.values["loss"] == long_history.values["loss"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=0), extended.params, longer.params)
    rates = history.values["lr"]
    np.testing.assert_allclose(rates, [0.05 / (1 + 0.5 * e) for e in range(6)], rtol=1e-6)  # the chapter's formula


def test_extension_with_a_schedule_over_the_total_is_not_one_longer_run(tmp_path):
    """Why the README's rule has an exception: a schedule that spans all steps changes with --epochs."""

    def tx(epochs):
        return optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.05, 0.0, 6 * epochs))

    # bound by a run config, as the command line's runs are (its identity holds no optimizer probe)
    _fit(tmp_path / "a", 3, tx(3), [], run_config={"epochs": 3, "schedule": "linear over the total"})
    extended, _ = _fit(tmp_path / "a", 6, tx(6), [], run_config={"epochs": 6, "schedule": "linear over the total"})
    longer, _ = _fit(tmp_path / "b", 6, tx(6), [])
    assert not np.allclose(extended.params["dense_0"]["kernel"], longer.params["dense_0"]["kernel"])
    # without one (the Python API), the optimizer's probe sees the schedule change and the extension is refused
    _fit(tmp_path / "c", 3, tx(3), [])
    with pytest.raises(RunMismatch, match="optimizer_updates_digest"):
        _fit(tmp_path / "c", 6, tx(6), [])


def test_library_fit_without_a_run_config_refuses_another_fit_config(tmp_path):
    tx = make_optimizer(OptimizerConfig("adam"))
    _fit(tmp_path / "a", 2, tx, [])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype(np.float32)
    state = create_train_state(MLP((16,), 1, dropout=(0.2,)), tx, x, jax.random.key(1))
    with pytest.raises(RunMismatch, match=r"fit\.batch_size: 16 -> 32; fit\.seed: 3 -> 4"):
        Trainer(TASKS["regression"]).fit(
            state,
            x,
            x[:, 0],
            FitConfig(epochs=2, batch_size=32, seed=4, progress=False),
            jax.random.key(2),
            checkpoint=CheckpointConfig(tmp_path / "a"),
        )


# ----------------------------------------------------- damaged steps, quietly
def _rewrite_meta(step_dir: Path, edit) -> None:
    """Edits the metadata and its checksum consistently: only the schema check can catch it."""
    meta_file, manifest_file = step_dir / "meta" / "metadata", step_dir / "manifest" / "metadata"
    meta, manifest = json.loads(meta_file.read_text()), json.loads(manifest_file.read_text())
    edit(meta)
    manifest["meta_sha256"] = meta_digest(meta)
    meta_file.write_text(json.dumps(meta))
    manifest_file.write_text(json.dumps(manifest))


DAMAGE = {
    "edited history": lambda d: (d / "meta" / "metadata").write_text(
        (d / "meta" / "metadata").read_text().replace('"loss": [', '"loss": [0.001, ', 1)
    ),
    "wrong types": lambda d: (d / "meta" / "metadata").write_text('{"epoch": "x"}'),
    "junk meta": lambda d: (d / "meta" / "metadata").write_text("\x00junk{"),
    "deleted meta": lambda d: (d / "meta" / "metadata").unlink(),
    "junk orbax metrics": lambda d: (d / "metrics" / "metrics").write_text("junk"),
    "schema: epoch beyond history": lambda d: _rewrite_meta(d, lambda m: m.update(epoch=m["epoch"] + 1)),
    "schema: best epoch in the future": lambda d: _rewrite_meta(d, lambda m: m["early_stopping"].update(best_epoch=99)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_step_with_bad_metadata_is_set_aside_with_one_warning_line(finished, tmp_path, damage):
    workdir = _copy(finished, tmp_path)
    steps = _steps(workdir)
    DAMAGE[damage](workdir / "checkpoints" / str(steps[-1]))
    (workdir / "predictions.csv").unlink()
    proc = _cli(workdir, *BASE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _messages(proc.stderr)
    where = workdir / "checkpoints"
    assert len(lines) == 2, proc.stderr[-3000:]  # nothing else: no traceback, no asyncio or tensorstore noise
    assert lines[0].startswith(f"warning: checkpoint step {steps[-1]} in {where} is damaged ("), lines[0]
    assert f"moved to {where / 'corrupt' / str(steps[-1])}; resuming from step {steps[-2]}" in lines[0]
    assert lines[1] == f"resuming from checkpoint step {steps[-2]} in {where} at epoch 3 of 3"
    assert (workdir / "predictions.csv").read_bytes() == (finished / "predictions.csv").read_bytes()


def test_no_usable_step_is_one_error_line_suggesting_restart(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    for step in _steps(workdir):
        (workdir / "checkpoints" / str(step) / "meta" / "metadata").write_text("[]")
    before = _files(workdir)
    proc = _cli(workdir, *BASE)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _messages(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: no usable checkpoint in {workdir / 'checkpoints'}")
    assert lines[0].endswith("pass --restart to delete them and start over, or use another --workdir")
    assert _files(workdir) == before  # nothing moved when nothing is usable


# ------------------------------------------------------------ --restart keeps the earlier checkpoints until a save
def _set_aside(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.iterdir() if p.name.startswith("checkpoints.replaced-"))


def test_a_restart_run_that_fails_before_its_first_save_leaves_the_earlier_checkpoints_usable(
    finished, tmp_path, capsys, monkeypatch
):
    import errno

    from dlchapter.checkpoint.orbax_manager import StepManager as _Manager

    workdir = _copy(finished, tmp_path)
    before = _files(workdir)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(_Manager, "save", full)  # the new run's first save fails: the disk is full
        assert cli.main(["run", "iris", "--workdir", str(workdir), *BASE, "--seed", "1", "--restart"]) == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: cannot write checkpoint step ") and "ENOSPC" in err[0], err
    after = _files(workdir)  # the earlier files byte-identical; the failed attempt's own TensorBoard events may stay
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith("tb/events.out.tfevents.") for k in after.keys() - before.keys())
    assert _set_aside(workdir) == []
    proc = _cli(workdir, *BASE)  # a plain rerun resumes the earlier run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _messages(proc.stderr) == [
        f"checkpoint step {_steps(workdir)[-1]} in {workdir / 'checkpoints'}: the run finished its 3 epochs; "
        "nothing to train"
    ]
    assert (workdir / "predictions.csv").read_bytes() == (finished / "predictions.csv").read_bytes()


def test_a_diverging_restart_run_puts_the_earlier_checkpoints_back(finished, tmp_path, capsys, monkeypatch):
    from dlchapter.engine.train import Trainer, TrainingDiverged

    workdir = _copy(finished, tmp_path)
    before = _files(workdir)

    def diverged(self, nonfinite, sums, epoch):
        raise TrainingDiverged(f"loss became nan at step 1 (epoch {epoch + 1}); lower the learning rate")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_raise_if_diverged", diverged)
        assert cli.main(["run", "iris", "--workdir", str(workdir), *BASE, "--learning-rate", "9", "--restart"]) == 2
    err = _messages(capsys.readouterr().err)
    assert err == ["error: loss became nan at step 1 (epoch 1); lower the learning rate"], err
    after = _files(workdir)
    assert {k: v for k, v in after.items() if k in before} == before and _set_aside(workdir) == []
    assert cli.main(["run", "iris", "--workdir", str(workdir), *BASE]) == 0  # resumes: nothing left to train
    assert "the run finished its 3 epochs; nothing to train" in capsys.readouterr().err


def test_checkpoints_a_killed_restart_run_had_set_aside_are_put_back_by_the_next_run(finished, tmp_path):
    from dlchapter.checkpoint import set_aside

    workdir = _copy(finished, tmp_path)
    before = _files(workdir)
    aside = set_aside.set_aside(workdir / "checkpoints")  # what a --restart run killed before its first save leaves
    (workdir / "checkpoints").mkdir()  # beside the new run's still empty directory
    assert _set_aside(workdir) == [aside.name]
    proc = _cli(workdir, *BASE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _messages(proc.stderr)
    assert lines[0] == (
        f"warning: put the checkpoints that an interrupted --restart run had set aside in {aside} back in "
        f"{workdir / 'checkpoints'} (that run saved nothing)"
    ), lines
    assert lines[1].endswith("the run finished its 3 epochs; nothing to train") and len(lines) == 2, lines
    assert _set_aside(workdir) == []
    after = _files(workdir)
    assert {k: v for k, v in after.items() if k.startswith("checkpoints/")} == {
        k: v for k, v in before.items() if k.startswith("checkpoints/")
    }


def test_set_aside_copies_are_put_back_only_when_the_new_directory_holds_no_step(tmp_path):
    from dlchapter.checkpoint import set_aside

    directory = tmp_path / "checkpoints"
    (directory / "7").mkdir(parents=True)
    (directory / "7" / "data").write_text("earlier")
    first = set_aside.set_aside(directory)
    assert not directory.exists() and (first / "7" / "data").read_text() == "earlier"
    (directory / "3").mkdir(parents=True)  # the new run saved: every copy set aside is stale
    second = set_aside.set_aside(directory)
    assert first != second and set_aside.set_aside_copies(directory) == [first, second]
    assert set_aside.recover(directory) == second  # nothing at `directory`: the newest copy comes back
    assert sorted(p.name for p in directory.iterdir()) == ["3"] and set_aside.set_aside_copies(directory) == []
    (tmp_path / "checkpoints.replaced-20000101T000000Z").mkdir()
    assert set_aside.recover(directory) is None and set_aside.set_aside_copies(directory) == []
    (directory / "3").rmdir()
    assert set_aside.set_aside(directory) is None and not directory.exists()  # no step: nothing to keep


# ------------------------------------------------------------ busy workdir
def _wait_for_lock(workdir: Path, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + TIMEOUT
    pid_file = workdir / ".dlchapter.lock.pid"
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return int(pid_file.read_text())


def test_a_second_run_into_a_busy_workdir_exits_2_at_once_and_the_first_finishes(tmp_path):
    busy, alone = tmp_path / "busy", tmp_path / "alone"
    flags = ("--config", "improved", "--epochs", "40", "--checkpoint-every-epochs", "1")
    first = _cli(busy, *flags, wait=False)
    try:
        holder = _wait_for_lock(busy, first)
        assert holder == first.pid
        # A control started at the same moment: the same interpreter and imports, under the same load, then exit.
        started = time.perf_counter()
        control = subprocess.Popen([sys.executable, "-m", "dlchapter.cli", "list"], cwd=ROOT, stdout=subprocess.DEVNULL)
        second = _cli(busy, *flags)
        elapsed = time.perf_counter() - started
        assert control.wait(timeout=TIMEOUT) == 0
        startup = time.perf_counter() - started
        assert first.poll() is None, "the first run ended before the second was refused: the test proves nothing"
    finally:
        _, err = first.communicate(timeout=TIMEOUT)
    assert second.returncode == 2, second.stderr[-3000:]
    lines = _messages(second.stderr)
    expected = (
        f"error: the work directory {busy} is in use by process {first.pid}; wait for it to finish, "
        "or pass another --workdir"
    )
    assert lines == [expected], second.stderr[-3000:]
    assert elapsed < startup + 1.0, (elapsed, startup)  # no waiting: refused within a second of starting up
    assert first.returncode == 0, err[-3000:]
    assert _cli(alone, *flags).returncode == 0
    assert (busy / "predictions.csv").read_bytes() == (alone / "predictions.csv").read_bytes()
    assert not (busy / ".dlchapter.lock.pid").exists()


def test_a_killed_runs_lock_does_not_block_the_next_run(tmp_path):
    workdir = tmp_path / "run"
    first = _cli(workdir, "--config", "improved", "--epochs", "40", "--checkpoint-every-epochs", "1", wait=False)
    _wait_for_lock(workdir, first)
    first.kill()
    first.communicate(timeout=TIMEOUT)
    assert (workdir / ".dlchapter.lock.pid").read_text().strip() == str(first.pid)  # left behind by the kill
    proc = _cli(workdir, *BASE[:2], "--epochs", "3", "--restart", *BASE[4:])
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_lock_is_refused_within_a_second_in_the_library(tmp_path):
    from dlchapter.reporting.workdir_lock import WorkdirBusy, exclusive_workdir

    code = (
        "import sys, time\nfrom dlchapter.reporting.workdir_lock import exclusive_workdir\n"
        f"with exclusive_workdir({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        with pytest.raises(WorkdirBusy, match=f"in use by process {holder.pid}"), exclusive_workdir(tmp_path):
            pass
        assert time.perf_counter() - started < 1.0
    finally:
        holder.kill()
        holder.wait(timeout=TIMEOUT)
    with exclusive_workdir(tmp_path) as directory:  # the kernel released the killed holder's lock
        assert (directory / ".dlchapter.lock.pid").read_text().strip() == str(os.getpid())


def test_only_process_0_of_a_multi_process_run_takes_the_lock(tmp_path, monkeypatch):
    from dlchapter.reporting.run_guard import guarded_run, workdir_of
    from dlchapter.reporting.workdir_lock import WorkdirBusy, exclusive_workdir

    with exclusive_workdir(tmp_path), exclusive_workdir(tmp_path):  # re-entrant within one process
        pass
    assert workdir_of(["--seed", "1", "--workdir=a/b"]) == Path("a/b") and workdir_of(["--seed", "1"]) is None
    import filelock

    # another holder (its own open file): exclusive_workdir is re-entrant within one process
    with filelock.FileLock(tmp_path / ".dlchapter.lock", is_singleton=False):
        monkeypatch.setenv("JAX_PROCESS_ID", "0")
        with pytest.raises(WorkdirBusy), guarded_run(["--workdir", str(tmp_path)]):
            pass
        monkeypatch.setenv("JAX_PROCESS_ID", "1")
        with guarded_run(["--workdir", str(tmp_path)]):  # process 1 shares process 0's workdir
            pass


# ------------------------------------------------------------- full disk
def test_a_full_disk_stops_the_run_with_one_error_line_and_keeps_the_earlier_files(
    finished, tmp_path, capsys, monkeypatch
):
    import errno

    from dlchapter.checkpoint.orbax_manager import StepManager as _Manager

    workdir = _copy(finished, tmp_path)
    before = _files(workdir)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_Manager, "save", full)
    assert cli.main(["run", "iris", "--workdir", str(workdir), *BASE[:2], "--epochs", "5", *BASE[4:]]) == 2
    err = _messages(capsys.readouterr().err)
    step = 4 * _steps(workdir)[-1] // 3  # the end of epoch 4, the first save of the extension
    assert err[-1] == (
        f"error: cannot write checkpoint step {step} in {workdir / 'checkpoints'}: "
        "No space left on device (ENOSPC); free some space, or pass another --workdir"
    ), err
    assert len(err) == 2 and err[0].startswith("resuming from checkpoint step")
    after = _files(workdir)  # the earlier files byte-identical; the failed attempt's own TensorBoard events may stay
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith("tb/events.out.tfevents.") for k in after.keys() - before.keys()), (
        after.keys() - before.keys()
    )


def test_a_real_write_limit_through_the_command_line_is_one_error_line(tmp_path):
    """RLIMIT_FSIZE makes every large write fail for real (EFBIG), as a full disk does (ENOSPC)."""
    workdir = tmp_path / "run"
    code = (
        "import resource, runpy, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))\n"
        f"sys.argv = ['dlchapter', 'run', 'iris', '--workdir', {str(workdir)!r}, *{list(BASE)!r}]\n"
        "runpy.run_module('dlchapter.cli', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    expected = (
        f"error: cannot write checkpoint step 9 in {workdir / 'checkpoints'}: File too large (EFBIG); "
        "a file-size limit (ulimit -f) was reached, or pass another --workdir"
    )
    assert _messages(proc.stderr) == [expected]
