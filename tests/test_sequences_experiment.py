"""The sequences experiment (issue 6): reduced runs of both tasks, the chronological split, the scaler and
persistence."""

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dlchapter.configs.config import parse_config
from dlchapter.data import DataError, load
from dlchapter.models.recurrent import RecurrentNet
from dlchapter.runs.sequence_runs import SequenceConfig, resolve, split_series
from experiments import sequences

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("simple_rnn", "gru", "lstm", "dense")
# the shared data beside the checkout (as tests/data/conftest.py finds it), unless $DLCHAPTER_DATA_DIR names another
DATA_DIR = os.environ.get("DLCHAPTER_DATA_DIR") or str(Path(__file__).resolve().parents[1].parent / "shared" / "data")


def _temperatures():
    try:
        return load("daily_min_temperatures", DATA_DIR, download=False)
    except DataError as error:
        pytest.skip(f"daily minimum temperatures not available: {error}")


def _check_pngs(workdir: Path, names) -> None:
    for name in names:
        data = (workdir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000, name


@pytest.fixture(scope="module")
def temperature_run(tmp_path_factory):
    _temperatures()
    workdir = tmp_path_factory.mktemp("temperatures")
    result = sequences.main(
        [
            "--task",
            "temperatures",
            "--workdir",
            str(workdir),
            "--epochs",
            "2",
            "--hidden",
            "4",
            "--dense-hidden",
            "8",
            "--patience",
            "1",
            "--data-dir",
            DATA_DIR,
        ]
    )
    return workdir, result


def test_temperature_run_writes_every_file_and_metric(temperature_run):
    workdir, result = temperature_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    for model in (*MODELS, "persistence"):
        for key in (f"test_mae_{model}", f"test_rmse_{model}"):
            assert math.isfinite(metrics[key]) and metrics[key] > 0, key
    for model in MODELS:
        ratio = metrics[f"mae_ratio_{model}_vs_persistence"]
        assert ratio == pytest.approx(metrics[f"test_mae_{model}"] / metrics["test_mae_persistence"])
        assert metrics[f"epochs_run_{model}"] == len(result.histories[model].values["loss"]) <= 2
        rows = list(csv.DictReader((workdir / f"history_{model}.csv").open()))
        assert len(rows) == metrics[f"epochs_run_{model}"] and "val_loss" in rows[0]
    # hidden 4: the cells' parameter counts from the chapter's equations, plus the Dense(4 -> 1) head
    h, f = 4, 1
    assert metrics["params_simple_rnn"] == h * (h + f + 1) + h + 1
    assert metrics["params_gru"] == 3 * h * (h + f + 1) + h + 1
    assert metrics["params_lstm"] == 4 * h * (h + f + 1) + h + 1
    assert metrics["params_dense"] == 30 * 8 + 8 + 8 + 1
    _check_pngs(
        workdir, ["forecasts_test.png", "forecasts_test_90days.png", *(f"training_curves_{m}.png" for m in MODELS)]
    )
    summary = (workdir / "summary.md").read_text()
    for label in ("persistence", "SimpleRNN", "GRU", "LSTM", "Dense"):
        assert f"| {label} |" in summary
    config = json.loads((workdir / "config.json").read_text())
    assert config["hidden"] == 4 and config["models"] == list(MODELS) and config["window"] == 30


def test_persistence_mae_matches_numpy_on_the_raw_file(temperature_run):
    workdir, _ = temperature_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    ds = _temperatures()
    dates = ds.index.astype("datetime64[D]")
    values = ds.x[:, 0].astype(np.float64)
    test_rows = np.flatnonzero(dates >= np.datetime64("1990-01-01"))
    errors = values[test_rows] - values[test_rows - 1]
    assert metrics["n_test"] == test_rows.size
    assert metrics["test_mae_persistence"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-9)
    assert metrics["test_rmse_persistence"] == pytest.approx(np.sqrt(np.mean(errors**2)), rel=1e-9)
    # and it is not trivially equal to a model's error
    assert metrics["test_mae_persistence"] != pytest.approx(metrics["test_mae_gru"], rel=1e-3)


def test_chronological_split_does_not_leak():
    ds = _temperatures()
    splits, scaler = split_series(ds, 30, "1988-12-31", "1989-12-31")
    train, val, test = splits["train"], splits["validation"], splits["test"]
    assert train.dates.max() < val.dates.min() and val.dates.max() < test.dates.min()
    assert train.dates.max() <= np.datetime64("1988-12-31") and test.dates.min() >= np.datetime64("1990-01-01")
    assert len(train.y) + len(val.y) + len(test.y) == len(ds) - 30
    # each training window holds the 30 values just before its target, so every training input predates validation
    dates = ds.index.astype("datetime64[D]")
    values = ds.x[:, 0].astype(np.float64)
    target_rows = np.searchsorted(dates, train.dates)
    input_rows = target_rows[:, None] - 30 + np.arange(30)[None, :]
    np.testing.assert_allclose(train.x[..., 0] * scaler.scale[0] + scaler.mean[0], values[input_rows], atol=1e-4)
    np.testing.assert_allclose(train.y_true, values[target_rows])
    assert dates[input_rows].max() < val.dates.min()
    np.testing.assert_allclose(train.last_value[1:], train.y_true[:-1])  # window i ends on target i-1
    # persistence is the last input value, unscaled
    np.testing.assert_allclose(test.last_value[0], ds.x[np.searchsorted(dates, test.dates[0]) - 1, 0])


def test_scaler_is_fitted_on_the_training_period_only():
    ds = _temperatures()
    splits, scaler = split_series(ds, 30, "1988-12-31", "1989-12-31")
    dates = ds.index.astype("datetime64[D]")
    train_values = ds.x[dates <= np.datetime64("1988-12-31"), 0].astype(np.float64)
    np.testing.assert_allclose(scaler.mean[0], train_values.mean(), rtol=1e-12)
    np.testing.assert_allclose(scaler.scale[0], train_values.std(), rtol=1e-12)
    all_values = ds.x[:, 0].astype(np.float64)
    assert abs(scaler.mean[0] - all_values.mean()) > 1e-3  # the full-series statistics differ
    np.testing.assert_allclose(splits["test"].y * scaler.scale[0] + scaler.mean[0], splits["test"].y_true, rtol=1e-5)
    # a later cut moves the statistics: they really come from the chosen period
    _, later = split_series(ds, 30, "1989-06-30", "1989-12-31")
    assert later.mean[0] != pytest.approx(scaler.mean[0], rel=1e-6)


def test_bad_split_dates_are_refused():
    ds = _temperatures()
    with pytest.raises(ValueError, match="train_until < validation_until"):
        split_series(ds, 30, "1990-01-01", "1989-12-31")


def test_task_defaults_and_unknown_models():
    temps = resolve(SequenceConfig(task="temperatures"))
    images = resolve(SequenceConfig(task="images", hidden=16))
    assert temps.models == MODELS and temps.dataset == "daily_min_temperatures"
    assert images.models == ("gru", "lstm") and images.hidden == 16 and images.dataset == "fashion_mnist"
    holdout = resolve(SequenceConfig(task="images", dataset="mnist", holdout_from_test=True, patience=7))
    assert holdout.epochs > images.epochs and holdout.patience == 7  # the small holdout trains longer; flags still win
    with pytest.raises(ValueError, match="unknown model"):
        resolve(SequenceConfig(models=("transformer",)))
    with pytest.raises(ValueError, match="task must be"):
        resolve(SequenceConfig(task="text"))


def test_recurrent_net_accepts_train_keyword():
    import jax
    import jax.numpy as jnp

    net = RecurrentNet(cell="gru", hidden=3, out_features=2)
    x = jnp.ones((2, 5, 4))
    variables = net.init(jax.random.key(0), x, train=False)
    assert net.apply(variables, x, train=True).shape == (2, 2)


def test_bare_holdout_flag_means_true():
    def holdout(*argv):
        config, _ = parse_config(SequenceConfig, ["--workdir", "d", *argv], sequences.PRESETS)
        return config.holdout_from_test

    assert holdout("--holdout-from-test") is True
    assert holdout("--holdout-from-test", "--task", "images") is True
    assert holdout("--holdout-from-test", "false") is False
    assert holdout() is False


def test_images_run_on_the_mnist_holdout(tmp_path):
    try:
        load("mnist", DATA_DIR, split="test", download=False)
    except DataError as error:
        pytest.skip(f"MNIST test split not available: {error}")
    argv = [
        "--task",
        "images",
        "--dataset",
        "mnist",
        "--holdout-from-test",
        "--workdir",
        str(tmp_path),
        "--hidden",
        "8",
        "--epochs",
        "2",
        "--max-train",
        "300",
        "--max-test",
        "100",
        "--batch-size",
        "64",
        "--data-dir",
        DATA_DIR,
    ]
    result = sequences.main(argv)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for model in ("gru", "lstm"):
        assert 0.0 <= metrics[f"test_accuracy_{model}"] <= 1.0
        assert math.isfinite(metrics[f"test_loss_{model}"])
        assert (tmp_path / f"history_{model}.csv").read_text().startswith("epoch,loss,accuracy")
        assert metrics[f"epochs_run_{model}"] == result.histories[model].epochs_run
    assert metrics["n_test"] == 100 and metrics["n_train"] + metrics["n_validation"] == 300
    _check_pngs(
        tmp_path,
        [
            "training_curves_gru.png",
            "training_curves_lstm.png",
            "confusion_matrix_gru.png",
            "confusion_matrix_lstm.png",
            "sample_predictions.png",
        ],
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["holdout_from_test"] is True and config["dataset"] == "mnist"
    assert "| LSTM |" in (tmp_path / "summary.md").read_text()
