"""The concept experiments end to end (small sizes), and the pieces they rest on:
decay through a real fit, L2 through a real step, per-split scaling, compile-once timing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlchapter.data.preprocessing import StandardScaler
from dlchapter.engine import crossval
from dlchapter.engine.losses import mse
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from dlchapter.models.dense import MLP
from dlchapter.runs.dynamics import SplitData, train_mlp
from experiments import activations, backprop, batch_size, optimizers, overfitting, validation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _finite_numbers(value, where="metrics"):
    """Every number in a JSON tree is finite (JSON null would be a NaN written by write_json)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{where}[{i}]")
    else:
        assert value is not None, f"{where} is null (not finite)"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), where


def _check_run(workdir: Path, figures: tuple[str, ...], keys: tuple[str, ...]) -> dict:
    for name in figures:
        data = (workdir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000, name
    metrics = json.loads((workdir / "metrics.json").read_text())
    for key in keys:
        assert key in metrics, key
    _finite_numbers(metrics)
    assert json.loads((workdir / "config.json").read_text())
    summary = (workdir / "summary.md").read_text()
    assert summary.startswith("# ") and all(f"({name})" in summary for name in figures)
    return metrics


@pytest.fixture
def data_dir() -> str:
    if not (SHARED_DATA / "cal_housing.csv").exists() or not (SHARED_DATA / "diabetes.csv").exists():
        pytest.skip(f"shared data directory {SHARED_DATA} lacks the data sets")
    return str(SHARED_DATA)


def test_activations_experiment(tmp_path, capsys):
    metrics = activations.main(["--workdir", str(tmp_path), "--points", "201"])
    _check_run(
        tmp_path,
        ("activations.png", "softmax_hardmax.png"),
        ("softmax", "softmax_sum", "hardmax", "max_abs_gelu_minus_gelu_tanh"),
    )
    e = np.exp([1.0, -1.0, 0.0, 3.0])
    np.testing.assert_allclose(metrics["softmax"], e / e.sum(), rtol=1e-5)  # the chapter's example
    assert metrics["softmax_sum"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["hardmax"] == [0.0, 0.0, 0.0, 1.0]
    assert metrics["max_abs_derivative_error_vs_finite_difference"] < 1e-6
    assert 1e-4 < metrics["max_abs_gelu_minus_gelu_tanh"] < 1e-3
    assert "softmax" in capsys.readouterr().out


def test_backprop_experiment_agrees_with_autodiff_and_sklearn(tmp_path):
    m = backprop.main(["--workdir", str(tmp_path), "--rows", "200", "--steps", "1500"])
    _check_run(
        tmp_path,
        ("loss_curve.png", "decision_boundary.png"),
        ("w", "b", "sklearn_w", "max_gradient_difference_hand_vs_jax_grad", "max_weight_difference_to_sklearn"),
    )
    assert m["max_gradient_difference_hand_vs_jax_grad"] < 1e-12
    assert m["max_weight_difference_to_sklearn"] < 1e-6
    assert m["max_weight_difference_to_jax_grad"] < 1e-12
    assert m["final_loss"] < m["initial_loss"] - 0.1
    short = backprop.main(
        ["--workdir", str(tmp_path / "short"), "--rows", "200", "--steps", "3", "--learning-rate", "0.1"]
    )
    assert short["max_weight_difference_to_sklearn"] > 1e-2  # the comparison can fail


def test_batch_size_experiment(tmp_path, data_dir):
    m = batch_size.main(
        [
            "--workdir",
            str(tmp_path),
            "--data-dir",
            data_dir,
            "--train-rows",
            "256",
            "--validation-rows",
            "128",
            "--batch-sizes",
            "1",
            "--epochs",
            "2",
            "--hidden",
            "16",
        ]
    )
    _check_run(tmp_path, ("batch_size.png",), ("n_train", "runs", "best_method"))
    assert [r["batch_size"] for r in m["runs"]] == [1, 256]  # SGD and batch GD (batch = m)
    assert [r["steps_per_epoch"] for r in m["runs"]] == [256, 1]
    assert all(r["train_traces"] == 1 and r["compile_seconds"] >= 0 for r in m["runs"])


def test_optimizers_experiment_logs_the_decayed_rate(tmp_path, data_dir):
    m = optimizers.main(
        [
            "--workdir",
            str(tmp_path),
            "--data-dir",
            data_dir,
            "--train-rows",
            "256",
            "--validation-rows",
            "128",
            "--optimizers",
            "sgd,adam",
            "--epochs",
            "3",
            "--hidden",
            "16",
            "--decay",
            "1.0",
        ]
    )
    _check_run(tmp_path, ("optimizers.png",), ("runs", "best_optimizer", "decay_lr_max_relative_error"))
    runs = {r["optimizer"]: r for r in m["runs"]}
    assert set(runs) == {"sgd", "adam", "adam + decay"}
    assert runs["sgd"]["lr_last_epoch"] == pytest.approx(0.01) and runs["adam"]["lr_last_epoch"] == pytest.approx(0.001)
    assert runs["adam + decay"]["lr_last_epoch"] == pytest.approx(0.01 / 3)
    assert m["decay_lr_max_relative_error"] < 1e-6


def test_overfitting_experiment(tmp_path, data_dir):
    m = overfitting.main(
        [
            "--workdir",
            str(tmp_path),
            "--data-dir",
            data_dir,
            "--train-rows",
            "128",
            "--validation-rows",
            "128",
            "--hidden",
            "32,32",
            "--epochs",
            "2",
        ]
    )
    metrics = _check_run(tmp_path, ("overfitting.png",), ("runs", "n_train"))
    assert [r["variant"] for r in m["runs"]] == ["no regularization", "L2 0.01", "dropout 0.5", "L2 0.01 + dropout 0.5"]
    assert all(f"final_gap[{r['variant']}]" in metrics for r in m["runs"])
    assert all(0.0 <= r["final_val_accuracy"] <= 1.0 for r in m["runs"])


def test_validation_experiment(tmp_path, data_dir):
    m = validation.main(
        [
            "--workdir",
            str(tmp_path),
            "--data-dir",
            data_dir,
            "--k",
            "2",
            "--epochs",
            "4",
            "--learning-rate",
            "0.01",
            "--holdout-repeats",
            "1",
            "--hidden",
            "16,8",
        ]
    )
    _check_run(
        tmp_path,
        ("fold_scores.png",),
        (
            "kfold_accuracy_mean",
            "kfold_accuracy_std",
            "kfold_auc_mean",
            "kfold_auc_std",
            "holdout_accuracy",
            "holdout_auc",
            "folds",
        ),
    )
    assert len(m["folds"]) == 2 and sum(f["n_val"] for f in m["folds"]) == 768  # every row validated once
    assert all(0.65 < f["auc"] <= 1.0 for f in m["folds"])  # it learns
    assert m["kfold_auc_mean"] == pytest.approx(np.mean([f["auc"] for f in m["folds"]]))


# ---------------------------------------------------------------- library pieces


def _toy_regression(n=24, features=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    return x, (x @ rng.normal(size=features)).astype(np.float32)


def test_decay_schedule_through_a_real_fits_history():
    """history["lr"] of a real fit follows a0 / (1 + decay * epoch), epoch counted from 0."""
    x, y = _toy_regression(n=20)
    a0, decay, batch = 0.05, 0.5, 8  # 3 steps per epoch, the last one padded
    trainer = Trainer(TASKS["regression"])
    tx = make_optimizer(OptimizerConfig("sgd", a0, decay=decay), steps_per_epoch=3)
    state = create_train_state(MLP((4,)), tx, x, jax.random.key(0))
    _, history = trainer.fit(state, x, y, FitConfig(epochs=5, batch_size=batch, progress=False), jax.random.key(1))
    expected = [a0 / (1 + decay * epoch) for epoch in range(5)]
    np.testing.assert_allclose(history.values["lr"], expected, rtol=1e-6)
    plain = create_train_state(MLP((4,)), make_optimizer(OptimizerConfig("sgd", a0)), x, jax.random.key(0))
    _, flat = Trainer(TASKS["regression"]).fit(
        plain, x, y, FitConfig(epochs=5, batch_size=batch, progress=False), jax.random.key(1)
    )
    assert flat.values["lr"] == pytest.approx([a0] * 5) and not np.allclose(flat.values["lr"], expected)


def test_l2_through_a_trainer_step_equals_the_per_layer_hand_penalty():
    """One SGD step of a real 2-hidden-layer MLP with l2 = the step on mse + l2 * (|W0|² + |W1|² + |Wout|²)."""
    x, y = _toy_regression(n=16)
    l2, rate = 0.1, 0.05
    model = MLP((5, 3))
    tx = make_optimizer(OptimizerConfig("sgd", rate, l2=l2))
    state = create_train_state(model, tx, x, jax.random.key(0))
    params0 = jax.tree.map(jnp.copy, state.params)
    trainer = Trainer(TASKS["regression"])
    state, _ = trainer.fit(
        state, x, y, FitConfig(epochs=1, batch_size=16, shuffle=False, progress=False), jax.random.key(1)
    )

    def hand_loss(p):
        outputs = model.apply({"params": p}, x)
        penalty = sum(
            jnp.sum(p[layer]["kernel"] ** 2) for layer in ("dense_0", "dense_1", "output")
        )  # written out per layer
        return mse(outputs, y, jnp.ones(16)) + l2 * penalty

    by_hand = jax.tree.map(lambda p, g: p - rate * g, params0, jax.grad(hand_loss)(params0))
    chex.assert_trees_all_close(state.params, by_hand, rtol=1e-5, atol=1e-6)
    no_penalty = jax.tree.map(
        lambda p, g: p - rate * g,
        params0,
        jax.grad(lambda p: mse(model.apply({"params": p}, x), y, jnp.ones(16)))(params0),
    )
    assert not np.allclose(state.params["dense_1"]["kernel"], no_penalty["dense_1"]["kernel"])
    np.testing.assert_allclose(
        state.params["output"]["bias"], no_penalty["output"]["bias"], rtol=1e-5
    )  # biases are not penalized


def test_cross_validate_fits_scaling_on_each_splits_training_rows_only():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=5.0, scale=3.0, size=(40, 2)).astype(np.float32)
    y = rng.integers(0, 2, size=40)
    seen = []

    def spy(x_train, y_train, x_val, y_val, index):
        seen.append((x_train, x_val))
        np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-5)
        return {"score": float(index)}

    splits = crossval.kfold_splits(40, 4, seed=1)
    rows = crossval.cross_validate(x, y, splits, spy)
    for (train_idx, val_idx), (_, x_val) in zip(splits, seen):
        expected = StandardScaler.fit(x[train_idx]).transform(x[val_idx])
        np.testing.assert_allclose(x_val, expected, rtol=1e-6)
        assert abs(float(x_val.mean())) > 1e-3  # validation rows are not standardized by their own statistics
    assert [r["split"] for r in rows] == [1, 2, 3, 4] and sum(r["n_val"] for r in rows) == 40
    summary = crossval.summarize(rows)["score"]
    assert summary["mean"] == pytest.approx(1.5) and summary["std"] == pytest.approx(np.std([0, 1, 2, 3], ddof=1))
    with pytest.raises(ValueError, match="both training and validation"):
        crossval.cross_validate(x, y, [(np.arange(30), np.arange(25, 40))], spy)


def test_train_mlp_warmup_compiles_once_so_epoch_times_are_training_only():
    x, y = _toy_regression(n=64)
    data = SplitData("toy", "memory", x[:48], y[:48], x[48:], y[48:])
    run = train_mlp(
        data, hidden=(8,), optimizer=OptimizerConfig("sgd", 0.01), batch_size=4, epochs=3, seed=0, warmup=True
    )
    assert run.traces == 1 and run.steps_per_epoch == 12
    assert len(run.epoch_seconds) == len(run.train_loss) == len(run.val_loss) == 3
    assert run.compile_seconds is not None and run.compile_seconds > max(run.epoch_seconds)
    assert run.train_loss[-1] < run.train_loss[0]
