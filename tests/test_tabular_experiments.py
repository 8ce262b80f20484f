"""The tabular experiments end to end on the real files: every report file, and the metrics recomputed by
scikit-learn from the run's own predictions."""

import csv
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from dlchapter.checkpoint.run_identity import RunMismatch
from dlchapter.data import load
from dlchapter.data.preprocessing import ZeroImputer, filter_feature_range
from dlchapter.data.tabular import PLAUSIBLE_RANGES
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state, split_validation
from dlchapter.models.dense import MLP
from dlchapter.runs.tabular_runs import ensemble_seeds, prepare, run_tabular
from experiments import california, diabetes, diamonds

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_data = pytest.mark.skipif(not (SHARED_DATA / "diamonds.csv").is_file(), reason="shared data directory absent")


def _columns(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}  # diabetes's labels are "0", "1"


def _check_files(workdir: Path, pngs: tuple[str, ...]) -> dict:
    for png in ("training_curves.png", *pngs):
        data = (workdir / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000, png
    for name in ("history.csv", "config.json", "summary.md", "predictions.csv"):
        assert (workdir / name).stat().st_size > 0, name
    summary = (workdir / "summary.md").read_text()
    for png in pngs:
        assert f"({png})" in summary, png
    return json.loads((workdir / "metrics.json").read_text())


def _check_regression(metrics: dict, actual: np.ndarray, predicted: np.ndarray, prefix: str = "test_") -> None:
    assert metrics[f"{prefix}mse"] == pytest.approx(skm.mean_squared_error(actual, predicted), rel=1e-6)
    assert metrics[f"{prefix}rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(actual, predicted)), rel=1e-6)
    assert metrics[f"{prefix}mae"] == pytest.approx(skm.mean_absolute_error(actual, predicted), rel=1e-6)
    assert metrics[f"{prefix}r2"] == pytest.approx(skm.r2_score(actual, predicted), rel=1e-6)
    assert metrics[f"{prefix}r2_corr"] == pytest.approx(np.corrcoef(actual, predicted)[0, 1] ** 2, rel=1e-6)


@needs_data
def test_diamonds_chapter_preset_report_matches_sklearn(tmp_path):
    diamonds.main(["--workdir", str(tmp_path), "--data-dir", str(SHARED_DATA), "--epochs", "1"])
    metrics = _check_files(tmp_path, ("actual_vs_predicted.png",))
    predictions = _columns(tmp_path / "predictions.csv")
    assert len(predictions["actual"]) == metrics["n_test"] == round(0.2 * (53_940 - metrics["dropped_rows"]))
    _check_regression(metrics, predictions["actual"], predictions["predicted"])
    assert metrics["params"] == 126_201 and metrics["test_r2"] > 0.5
    assert "126,201" in (tmp_path / "summary.md").read_text()


@needs_data
def test_california_reports_xgboost_beside_the_network(tmp_path):
    california.main(["--workdir", str(tmp_path), "--data-dir", str(SHARED_DATA), "--epochs", "2"])
    metrics = _check_files(tmp_path, ("actual_vs_predicted.png", "nn_vs_xgboost.png"))
    predictions = _columns(tmp_path / "predictions.csv")
    _check_regression(metrics, predictions["actual"], predictions["predicted"])
    _check_regression(metrics, predictions["actual"], predictions["xgboost"], prefix="xgb_test_")
    assert predictions["actual"].max() < 5.0  # the chapter's Value < 5 filter
    assert metrics["xgb_test_mse"] < 0.25


@needs_data
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_diabetes_report_matches_sklearn_at_the_threshold(tmp_path, threshold):
    diabetes.main(
        ["--workdir", str(tmp_path), "--data-dir", str(SHARED_DATA), "--epochs", "5", "--threshold", str(threshold)]
    )
    metrics = _check_files(tmp_path, ("roc_curve.png", "confusion_matrix.png"))
    p = _columns(tmp_path / "predictions.csv")
    assert set(p) == {"label", "probability_1", "predicted"}  # the positive class is Outcome 1
    assert metrics["classes"] == ["0", "1"] and metrics["positive_class"] == "1"
    assert np.array_equal(p["predicted"], (p["probability_1"] > threshold).astype(float))
    assert metrics["test_auc"] == pytest.approx(skm.roc_auc_score(p["label"], p["probability_1"]), rel=1e-9)
    assert metrics["test_accuracy"] == pytest.approx(skm.accuracy_score(p["label"], p["predicted"]))
    table = json.loads((tmp_path / "classification_report.json").read_text())
    names = ["no diabetes", "diabetes"]  # the class names the report and confusion matrix use (Outcome 0, 1)
    expected = skm.classification_report(p["label"], p["predicted"], target_names=names, output_dict=True)
    for label in (*names, "macro avg", "weighted avg"):
        for key in ("precision", "recall", "f1-score", "support"):
            assert table[label][key] == pytest.approx(expected[label][key]), (label, key)


@needs_data
def test_ensemble_is_the_mean_of_the_single_runs_it_stands_for(tmp_path):
    config = dataclasses.replace(diabetes.IMPROVED, data_dir=str(SHARED_DATA), epochs=6, patience=2, seed=1, ensemble=3)
    run_tabular(config, tmp_path)
    ensemble = _columns(tmp_path / "predictions.csv")
    members = [_trainer_fit_member(config, seed) for seed in ensemble_seeds(1, 3)]
    np.testing.assert_allclose(ensemble["probability_1"], np.mean(members, axis=0), atol=2e-5)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["ensemble"] == 3 and metrics["member_seeds"] == [1, 1001, 2001]


@needs_data
def test_a_bf16_ensemble_trains_in_bfloat16_close_to_the_fp32_one(tmp_path):
    config = dataclasses.replace(diabetes.IMPROVED, data_dir=str(SHARED_DATA), epochs=3, seed=1, ensemble=2)
    run_tabular(config, tmp_path / "fp32")
    run_tabular(dataclasses.replace(config, precision="bf16"), tmp_path / "bf16")
    fp32, bf16 = _columns(tmp_path / "fp32" / "predictions.csv"), _columns(tmp_path / "bf16" / "predictions.csv")
    gap = np.abs(np.asarray(bf16["probability_1"]) - np.asarray(fp32["probability_1"]))
    assert 0 < gap.max() < 0.05  # bfloat16 really computed (not fp32 again), and stayed close


@needs_data
def test_a_checkpointed_ensemble_resumes_like_one_longer_run(tmp_path):
    config = dataclasses.replace(
        diabetes.IMPROVED,
        data_dir=str(SHARED_DATA),
        epochs=4,
        patience=10,
        seed=1,
        ensemble=2,
        checkpoint_every_epochs=1,
    )
    run_tabular(config, tmp_path / "whole")
    run_tabular(dataclasses.replace(config, epochs=2), tmp_path / "split")  # stopped after 2 epochs ...
    run_tabular(config, tmp_path / "split")  # ... and continued from its checkpoint to 4
    whole, split = _columns(tmp_path / "whole" / "predictions.csv"), _columns(tmp_path / "split" / "predictions.csv")
    np.testing.assert_array_equal(split["probability_1"], whole["probability_1"])
    assert (
        json.loads((tmp_path / "split" / "metrics.json").read_text())["member_epochs_run"]
        == json.loads((tmp_path / "whole" / "metrics.json").read_text())["member_epochs_run"]
        == [4, 4]
    )
    before = (tmp_path / "split" / "metrics.json").read_bytes()
    with pytest.raises(RunMismatch, match="learning_rate"):  # another run never reuses those checkpoints
        run_tabular(dataclasses.replace(config, learning_rate=0.05), tmp_path / "split")
    assert (tmp_path / "split" / "metrics.json").read_bytes() == before


def test_a_failed_restart_of_a_checkpointed_ensemble_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
    from dlchapter.engine.many_models import ManyModels

    config = dataclasses.replace(
        diabetes.IMPROVED,
        data_dir=str(SHARED_DATA),
        epochs=2,
        patience=10,
        seed=1,
        ensemble=2,
        checkpoint_every_epochs=1,
    )
    run_tabular(config, tmp_path)
    checkpoints = tmp_path / "checkpoints"
    steps_before = sorted(p.name for p in checkpoints.iterdir())

    def fails(*args, **kwargs):
        raise RuntimeError("the new run fails before its first save")

    with monkeypatch.context() as patch:
        patch.setattr(ManyModels, "_run_epoch", fails)
        with pytest.raises(RuntimeError, match="before its first save"):
            run_tabular(dataclasses.replace(config, restart=True), tmp_path)
    assert sorted(p.name for p in checkpoints.iterdir()) == steps_before  # put back, not deleted
    assert not list(tmp_path.glob("checkpoints.replaced-*"))
    run_tabular(dataclasses.replace(config, restart=True), tmp_path)  # a restart that saves drops the old copy
    assert not list(tmp_path.glob("checkpoints.replaced-*"))


def _trainer_fit_member(config, member_seed: int) -> np.ndarray:
    """One member the ordinary way: `Trainer.fit` on the run's split, with the member's seed for weights,
    dropout and batch order."""
    task = TASKS[config.task]
    data = prepare(config)
    fit_config = FitConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        validation_mode=config.validation_mode,
        seed=config.seed,
    )
    x_fit, y_fit, validation = split_validation(data.x_train, data.y_train, fit_config, classification=True)
    model = MLP(config.hidden, 1, config.activation, config.dropout, head=task.head)
    tx = make_optimizer(
        OptimizerConfig(config.optimizer, config.learning_rate, config.decay, config.l2),
        -(-len(y_fit) // config.batch_size),
    )
    init_key, dropout_key = jax.random.split(jax.random.key(member_seed))
    state = create_train_state(model, tx, x_fit, init_key)
    trainer = Trainer(task)
    stopper = EarlyStopping(config.monitor, config.patience)
    state, _ = trainer.fit(
        state,
        x_fit,
        y_fit,
        dataclasses.replace(fit_config, seed=member_seed),
        dropout_key,
        validation_data=validation,
        early_stopping=stopper,
    )
    return np.asarray(trainer.predict(state, data.x_test)).ravel()


@needs_data
def test_implausible_diamonds_are_the_zero_and_oversized_stones():
    frame = pd.read_csv(SHARED_DATA / "diamonds.csv")
    sizes = frame[["x", "y", "z"]]
    expected_bad = int(((sizes <= 0) | (sizes > 20)).any(axis=1).sum())
    ds, dropped = filter_feature_range(load("diamonds", data_dir=SHARED_DATA), PLAUSIBLE_RANGES["diamonds"])
    assert dropped == expected_bad and 20 <= dropped <= 30
    assert len(ds) == len(frame) - expected_bad
    assert ds.x[:, 3:6].min() > 0 and ds.x[:, 3:6].max() <= 20


def test_zero_imputer_uses_the_median_of_measured_training_values():
    x = np.array([[0.0, 5.0], [2.0, 0.0], [4.0, 7.0], [9.0, 1.0]], np.float32)
    imputer = ZeroImputer.fit(x, [0, 1])
    assert imputer.medians == (4.0, 5.0)  # medians of [2, 4, 9] and [5, 7, 1]
    out = imputer.transform(np.array([[0.0, 0.0], [3.0, 2.0]], np.float32))
    np.testing.assert_array_equal(out, [[4.0, 5.0], [3.0, 2.0]])
    assert x[0, 0] == 0.0  # the input is not modified


@needs_data
def test_improved_diabetes_imputes_from_training_rows_only():
    config = dataclasses.replace(diabetes.IMPROVED, data_dir=str(SHARED_DATA), scale_inputs=False)
    data = prepare(config)
    glucose = data.ds.feature_names.index("Glucose")
    assert (data.x_train[:, glucose] > 0).all() and (data.x_test[:, glucose] > 0).all()
    raw = load("diabetes", data_dir=SHARED_DATA).x[:, glucose]
    assert (raw == 0).sum() == 5  # the file has five patients without a glucose measurement


@needs_data
@pytest.mark.parametrize("option", [{"data_parallel": True}, {"dropout": (0.3, 0.2)}])
def test_ensemble_refuses_what_one_vmapped_program_cannot_do(tmp_path, option):
    config = dataclasses.replace(diabetes.IMPROVED, data_dir=str(SHARED_DATA), ensemble=2, **option)
    with pytest.raises(ValueError, match="ensemble"):
        run_tabular(config, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


# --- a researcher's own CSV through the same workflow (issue 17, item 8) --------------------------------------


def _own_csv(tmp_path: Path, task: str, n: int = 240) -> Path:
    """Five numeric columns, one categorical column and a target, as a user's file might hold them."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n).round(4) for i in range(5)})
    frame.insert(2, "region", rng.choice(["north", "south", "east", "west"], n))
    signal = frame.x0 - 0.5 * frame.x3 + frame.region.map({"north": 1.0, "south": -1.0, "east": 0.5, "west": 0.0})
    noisy = (signal + rng.normal(0, 0.2, n)).round(4)
    frame["target"] = noisy if task == "regression" else np.where(signal > 0, "yes", "no")
    path = tmp_path / f"own_{task}.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_own_csv_end_to_end_scores_equal_sklearn_on_predictions(tmp_path: Path, task: str) -> None:
    from dlchapter.data import load_csv

    ds = load_csv(_own_csv(tmp_path, task), target="target", categorical=("region",), task=task)
    config = dataclasses.replace(
        diabetes.CHAPTER if task == "binary" else california.CHAPTER,
        dataset="ignored",
        epochs=5,
        xgboost=False,
        max_target=None,
        note="",
    )
    result = run_tabular(config, tmp_path / "run", dataset=ds)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(predictions) == metrics["n_test"] == 48
    assert metrics["categories"] == {"region": ["east", "north", "south", "west"]}
    assert metrics["missing_values"] == {"policy": "error", "rows_dropped": 0, "cells_imputed": 0}
    widths = [9, *config.hidden, 1]  # 5 numeric inputs and 4 one-hot region columns
    assert metrics["params"] == sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == "own_" + task
    if task == "regression":
        actual, predicted = predictions.actual, predictions.predicted
        assert metrics["test_mse"] == pytest.approx(skm.mean_squared_error(actual, predicted), rel=1e-9)
        assert metrics["test_mae"] == pytest.approx(skm.mean_absolute_error(actual, predicted), rel=1e-9)
        assert metrics["test_r2"] == pytest.approx(skm.r2_score(actual, predicted), rel=1e-9)
        assert (tmp_path / "run" / "actual_vs_predicted.png").stat().st_size > 5_000
    else:
        assert ds.class_names == ("no", "yes")
        assert metrics["test_accuracy"] == pytest.approx(skm.accuracy_score(predictions.label, predictions.predicted))
        assert set(predictions.label) | set(predictions.predicted) <= {"no", "yes"}  # the file's own labels
        auc = skm.roc_auc_score(predictions.label == "yes", predictions.probability_yes)
        assert metrics["test_auc"] == pytest.approx(auc, rel=1e-9)
        assert 0.0 < metrics["test_auc"] < 1.0 and (tmp_path / "run" / "roc_curve.png").stat().st_size > 5_000
    assert result.metrics["n_train"] + metrics["n_validation"] + metrics["n_test"] == 240


def test_own_csv_category_seen_only_in_test_rows(tmp_path: Path) -> None:
    from dlchapter.data import DataError, load_csv
    from dlchapter.data.splits import train_test_split

    path = _own_csv(tmp_path, "regression", n=60)
    frame = pd.read_csv(path)
    config = dataclasses.replace(california.CHAPTER, epochs=1, max_target=None, test_size=0.25, seed=3)
    _, test_idx = train_test_split(60, config.test_size, seed=config.seed)
    frame.loc[test_idx[1], "region"] = "island"
    frame.to_csv(path, index=False)
    ds = load_csv(path, target="target", categorical=("region",))
    line = test_idx[1] + 2  # the header is line 1
    with pytest.raises(DataError, match=rf"column 'region', line {line}: category 'island' does not occur in the"):
        prepare(config, ds)
    arrays = prepare(config, ds, handle_unknown="ignore")
    assert arrays.x_train.shape[1] == 5 + 4 and (arrays.x_test[1, 5:] == 0).all()  # the unseen category: all zeros
