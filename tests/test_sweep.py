"""Many models in one program: each vmapped model equals its own single-model `Trainer.fit`."""

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlchapter.data.preprocessing import StandardScaler
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.crossval import kfold_splits
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.sweep import ModelSpec, SweepConfig, SweepData, SweepTrainer, kfold_data
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from dlchapter.models.dense import MLP
from dlchapter.models.sweep_mlp import SweepMLP
from dlchapter.presets.sweep_california import PRESETS, sweep_command
from dlchapter.runs.sweep_runs import SweepRunConfig, configurations

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _regression(seed=0, n=256, n_val=64, features=6):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=features)

    def make(rows):
        x = rng.normal(size=(rows, features)).astype(np.float32)
        return x, (np.sin(x @ w) + 0.5 * rng.normal(size=rows)).astype(np.float32)

    return make(n), make(n_val)


_PROGRAMS: dict = {}


def _reference(
    spec,
    x,
    y,
    validation,
    *,
    hidden,
    dropout_layers,
    epochs,
    batch_size,
    task="regression",
    monitor="val_loss",
    patience=3,
):
    """The single-model run: the chapter's MLP, `make_optimizer` and `Trainer.fit`, keyed as `run_tabular` does.

    To compile less, runs that differ only in learning rate and L2 share one
    model, optimizer and Trainer, and set those two injected hyperparameters in
    the optimizer state (with decay the rate is a schedule: its own optimizer).
    """
    rates = tuple(spec.dropout if i in dropout_layers else 0.0 for i in range(len(hidden)))
    steps_per_epoch = -(-len(x) // batch_size)
    key = (task, hidden, rates, steps_per_epoch, spec.decay, spec.learning_rate if spec.decay else None)
    if key not in _PROGRAMS:
        tx = make_optimizer(
            OptimizerConfig("adam", spec.learning_rate, spec.decay, spec.l2), steps_per_epoch, l2_hyperparameter=True
        )
        model = MLP(hidden, 1, dropout=rates, head=TASKS[task].head)
        _PROGRAMS[key] = (model, tx, Trainer(TASKS[task]), jax.jit(lambda k, x: create_train_state(model, tx, x, k)))
    model, tx, trainer, init = _PROGRAMS[key]
    init_key, dropout_key = jax.random.split(jax.random.key(spec.seed))
    state = init(init_key, x[:1])  # create_train_state, compiled once per model
    hyper = {**state.opt_state.hyperparams, "l2": jnp.asarray(spec.l2, jnp.float32)}
    if not spec.decay:
        hyper["learning_rate"] = jnp.asarray(spec.learning_rate, jnp.float32)
    state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
    fit = FitConfig(epochs=epochs, batch_size=batch_size, seed=spec.seed, progress=False)
    return trainer.fit(
        state, x, y, fit, dropout_key, validation_data=validation, early_stopping=EarlyStopping(monitor, patience)
    )


def test_traced_dropout_is_flax_dropout_draw_for_draw():
    x = jax.random.normal(jax.random.key(0), (16, 5))
    mlp, sweep = MLP((32, 16), 1, dropout=0.3), SweepMLP((32, 16), 1, dropout_layers=(0, 1))
    params = mlp.init(jax.random.key(1), x)["params"]
    chex.assert_trees_all_equal(params, sweep.init(jax.random.key(1), x)["params"])  # same names and initialisers
    rngs = {"dropout": jax.random.key(2)}
    expected = mlp.apply({"params": params}, x, train=True, rngs=rngs)
    chex.assert_trees_all_equal(
        sweep.apply({"params": params}, x, np.float32(1.0 - 0.3), train=True, rngs=rngs), expected
    )
    assert not np.allclose(sweep.apply({"params": params}, x, np.float32(1.0 - 0.5), train=True, rngs=rngs), expected)
    # keep-prob 1 is no dropout at all; a layer without dropout leaves the others' streams alone
    chex.assert_trees_all_equal(
        sweep.apply({"params": params}, x, np.float32(1.0), train=True, rngs=rngs),
        MLP((32, 16), 1).apply({"params": params}, x),
    )
    first_only = MLP((32, 16), 1, dropout=(0.3, 0.0)).apply({"params": params}, x, train=True, rngs=rngs)
    chex.assert_trees_all_equal(
        SweepMLP((32, 16), 1, dropout_layers=(0,)).apply({"params": params}, x, np.float32(0.7), train=True, rngs=rngs),
        first_only,
    )


def test_vmapped_models_equal_single_trainer_runs_with_early_stopping():
    (x, y), validation = _regression()
    config = SweepConfig(task="regression", hidden=(16, 8), dropout_layers=(0,), epochs=16, batch_size=32, patience=3)
    specs = [  # seeds, learning rates, L2, dropout 0.2 and 0 (no dropout), decay
        ModelSpec(seed=3, learning_rate=3e-2, l2=1e-2, dropout=0.2),
        ModelSpec(seed=2, learning_rate=1e-2, l2=1e-2, dropout=0.2),
        ModelSpec(seed=0, learning_rate=1e-2, dropout=0.2),
        ModelSpec(seed=1, learning_rate=1e-2, l2=1e-2, dropout=0.2),
        ModelSpec(seed=0, learning_rate=3e-3, l2=1e-3, decay=0.1),
    ]
    trainer = SweepTrainer(config)
    result = trainer.fit(specs, SweepData.holdout(x, y, *validation))
    assert len(set(result.epochs_run.tolist())) == len(specs)  # every model stopped at a different epoch
    assert result.stopped_early.tolist() == [True, True, True, True, False]
    test = trainer.evaluate(result, *validation)
    for i, spec in enumerate(specs):
        state, history = _reference(
            spec, x, y, validation, hidden=(16, 8), dropout_layers=(0,), epochs=16, batch_size=32
        )
        assert result.epochs_run[i] == history.epochs_run and result.best_epoch[i] == history.best_epoch
        chex.assert_trees_all_close(result.model_params(i), state.params, rtol=1e-4, atol=1e-5)
        run = history.epochs_run
        for name in ("loss", "val_loss", "val_mae", "lr"):
            np.testing.assert_allclose(result.history[name][i, :run], history.values[name], rtol=1e-4, atol=1e-6)
        assert np.isnan(result.history["val_loss"][i, run:]).all()
        assert test["loss"][i] == pytest.approx(history.values["val_loss"][history.best_epoch - 1], rel=1e-4)
    assert trainer.traces["epoch"] == 1


def test_kfold_models_equal_trainer_on_each_fold():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(150, 4)) * [1.0, 5.0, 0.1, 2.0] + [0.0, 10.0, -1.0, 3.0]).astype(np.float32)
    labels = (x[:, 0] + 0.2 * x[:, 1] + rng.normal(size=150) > 2.0).astype(np.int64)
    splits = kfold_splits(len(x), 3, seed=0, stratify=labels)
    data = kfold_data(x, labels.astype(np.float32), splits)  # each fold standardized by its own training rows
    assert data.x.shape == (3, 150, 4) and not np.allclose(data.x[0], data.x[1])
    specs = [ModelSpec(seed=s, learning_rate=1e-2, fold=f) for s in (0, 1) for f in range(3)]
    config = SweepConfig(task="binary", hidden=(8,), epochs=10, batch_size=16, monitor="val_accuracy", patience=3)
    result = SweepTrainer(config).fit(specs, data)
    for i, spec in enumerate(specs):
        train_idx, val_idx = splits[spec.fold]
        scaler = StandardScaler.fit(x, rows=train_idx)
        x_fit, x_val = scaler.transform(x[train_idx]), scaler.transform(x[val_idx])
        y_fit, y_val = labels[train_idx].astype(np.float32), labels[val_idx].astype(np.float32)
        state, history = _reference(
            spec,
            x_fit,
            y_fit,
            (x_val, y_val),
            hidden=(8,),
            dropout_layers=(),
            epochs=10,
            batch_size=16,
            task="binary",
            monitor="val_accuracy",
        )
        assert result.best_epoch[i] == history.best_epoch and result.epochs_run[i] == history.epochs_run
        chex.assert_trees_all_close(result.model_params(i), state.params, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            result.history["val_accuracy"][i, : history.epochs_run], history.values["val_accuracy"], atol=1e-6
        )


def test_new_hyperparameters_seeds_and_folds_never_recompile():
    (x, y), validation = _regression(n=64, n_val=16)
    trainer = SweepTrainer(SweepConfig(hidden=(8,), dropout_layers=(0,), epochs=3, batch_size=16))
    data = SweepData.holdout(x, y, *validation)
    first = trainer.fit([ModelSpec(seed=s, learning_rate=1e-3, dropout=0.1) for s in range(3)], data)
    second = trainer.fit([ModelSpec(seed=9, learning_rate=0.1, l2=0.5, dropout=0.6, decay=1.0)] * 3, data)
    assert trainer.traces == {"init": 1, "epoch": 1}
    assert second.compile_seconds == 0.0 < first.compile_seconds
    assert not np.allclose(first.history["loss"], second.history["loss"])


def test_a_diverging_model_is_frozen_alone():
    (x, y), validation = _regression(n=64, n_val=16)
    trainer = SweepTrainer(SweepConfig(hidden=(8,), epochs=4, batch_size=16, monitor=None))
    result = trainer.fit(
        [ModelSpec(seed=0, learning_rate=1e-2), ModelSpec(seed=0, learning_rate=1e30)],
        SweepData.holdout(x, y, *validation),
    )
    assert result.diverged.tolist() == [False, True]
    assert result.epochs_run.tolist() == [4, 1]
    assert np.isfinite(result.history["loss"][0]).all() and np.isnan(result.history["loss"][1, 1:]).all()
    chex.assert_tree_all_finite(result.model_params(0))


def test_from_masks_rejects_a_row_on_both_sides():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="both a training and a validation row"):
        SweepData.from_masks(x, y, np.array([[1, 1, 1, 0]]), np.array([[0, 0, 1, 1]]))
    data = SweepData.from_masks(x, y, np.array([[1, 1, 0, 0], [0, 0, 1, 1]]), np.array([[0, 0, 1, 1], [1, 1, 0, 0]]))
    assert data.x.shape == (1, 4, 2) and [r.tolist() for r in data.train_rows] == [[0, 1], [2, 3]]


def test_random_search_stays_in_the_grids_ranges():
    config = SweepRunConfig(
        learning_rates=(1e-4, 1e-2), l2s=(0.0, 1e-5, 1e-3), dropouts=(0.0, 0.5), search="random", samples=200
    )
    drawn = configurations(config)
    assert len(drawn) == 200 and len(set(drawn)) > 150
    assert all(
        1e-4 <= c.learning_rate <= 1e-2 and (c.l2 == 0.0 or 1e-5 <= c.l2 <= 1e-3) and 0.0 <= c.dropout <= 0.5
        for c in drawn
    )
    assert 30 < sum(c.l2 == 0.0 for c in drawn) < 110  # about one draw in three
    assert len(configurations(SweepRunConfig(learning_rates=(1e-3, 1e-2), l2s=(0.0,), dropouts=(0.0, 0.1, 0.2)))) == 6


@pytest.mark.skipif(not (SHARED_DATA / "diabetes.csv").is_file(), reason="shared data directory absent")
def test_sweep_command_runs_a_pima_kfold_sweep(tmp_path, capsys):
    argv = [
        "--workdir",
        str(tmp_path),
        "--config",
        "pima_kfold",
        "--epochs",
        "2",
        "--seeds",
        "0",
        "--folds",
        "2",
        "--learning-rates",
        "1e-3",
        "--l2s",
        "0,0.01",
        "--dropouts",
        "0.3",
        "--data-dir",
        str(SHARED_DATA),
    ]
    assert sweep_command(argv, PRESETS) == 0
    assert "4 models" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_models"] == 4 and 0.5 < metrics["best_test_auc_mean"] <= 1.0
    assert np.load(tmp_path / "histories.npz")["val_loss"].shape == (4, 2)
    assert {"summary.md", "models.csv", "validation_curves.png", "config.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "each fold x seed" in (tmp_path / "summary.md").read_text()


# ------------------------------------------------------------- the work directory's lock
def test_a_sweep_into_a_busy_workdir_is_one_error_line_and_leaves_the_earlier_files(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from dlchapter import cli
    from dlchapter.reporting.workdir_lock import WorkdirBusy

    workdir = tmp_path / "sweep"
    workdir.mkdir()
    (workdir / "summary.md").write_text("an earlier sweep's report\n")
    (workdir / "metrics.json").write_text('{"n_models": 4}\n')
    root = Path(__file__).resolve().parents[1]
    code = (
        "import time\nfrom dlchapter.reporting.workdir_lock import exclusive_workdir\n"
        f"with exclusive_workdir({str(workdir)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(root)),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in workdir.iterdir()}
        argv = ["sweep", "--workdir", str(workdir), "--config", "pima_kfold", "--epochs", "1", "--seeds", "0"]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"error: the work directory {workdir} is in use by process {holder.pid}; wait for it to finish, "
            "or pass another --workdir"
        ]
        with pytest.raises(WorkdirBusy, match=f"in use by process {holder.pid}"):  # the command's own lock too
            sweep_command(argv[1:], PRESETS)
        assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before
        assert holder.poll() is None  # still holding: the refusals above were not a released lock's
    finally:
        holder.kill()
        holder.wait(timeout=60)


def test_a_sweep_holds_its_new_workdirs_lock_while_it_runs(tmp_path, capsys, monkeypatch):
    import os

    import filelock

    from dlchapter.runs import sweep_runs

    workdir = tmp_path / "new" / "sweep"  # does not exist yet: only the command itself can lock it
    seen = {}

    def run_sweep(config, directory):
        seen["pid"] = (Path(directory) / ".dlchapter.lock.pid").read_text().strip()
        other = filelock.FileLock(Path(directory) / ".dlchapter.lock", blocking=False, is_singleton=False)
        with pytest.raises(filelock.Timeout):
            other.acquire()
        seen["epochs"] = config.epochs
        raise ValueError("stopped inside the sweep")

    monkeypatch.setattr(sweep_runs, "run_sweep", run_sweep)
    assert sweep_command(["--workdir", str(workdir), "--epochs", "1"], PRESETS) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: stopped inside the sweep"]
    assert seen == {"pid": str(os.getpid()), "epochs": 1}
    assert not (workdir / ".dlchapter.lock.pid").exists()  # released when the command ended
    with filelock.FileLock(workdir / ".dlchapter.lock", blocking=False, is_singleton=False):
        pass
