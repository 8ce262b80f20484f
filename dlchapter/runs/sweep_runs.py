"""A hyperparameter sweep as one library call: grid or random configurations x seeds (x folds), trained together.

source -> arrays -> train/test split -> validation split (or k folds, each
standardized by its own training rows) -> every (configuration, seed, fold)
model in one vmapped program (`dlchapter.engine.sweep`) -> per-configuration mean +-
std of the validation score at each model's best epoch -> the best
configuration, scored on the test rows -> run directory (summary.md,
metrics.json, models.csv, histories.npz, validation-curve figure).

The config (`SweepRunConfig`, `from_tabular`) lives in `dlchapter.presets.run_configs`, importable without JAX;
the `dlchapter sweep` command is `dlchapter.presets.sweep_california.sweep_command`.
The configurations and the report (table, figure, run directory) are `dlchapter.runs.sweep_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlchapter.data.preprocessing import StandardScaler
from dlchapter.engine.crossval import kfold_splits
from dlchapter.engine.sweep import ModelSpec, SweepConfig, SweepData, SweepResult, SweepTrainer, kfold_data
from dlchapter.engine.train import TASKS, FitConfig, split_validation
from dlchapter.presets.run_configs import SweepRunConfig, TabularConfig, from_tabular  # noqa: F401  (re-exported)
from dlchapter.reporting import scores
from dlchapter.runs.sweep_report import (
    SweepReport,
    configuration_table,
    configurations,
    mean_std,
    rank_configurations,
    validation_curves,
    write_sweep,
)
from dlchapter.runs.tabular_prep import prepare


def _data(config: SweepRunConfig):
    """(SweepData, x_test, y_test, x_test is per fold, raw test labels) with preprocessing fitted on training
    rows only."""
    tabular = TabularConfig(
        dataset=config.dataset,
        task=config.task,
        test_size=config.test_size,
        stratify_test=config.stratify_test,
        scale_inputs=config.scale_inputs and not config.folds,
        max_target=config.max_target,
        seed=config.split_seed,
        data_dir=config.data_dir,
    )
    arrays = prepare(tabular)
    if not config.folds:
        fit = FitConfig(
            validation_split=config.validation_split, validation_mode=config.validation_mode, seed=config.split_seed
        )
        x_fit, y_fit, (x_val, y_val) = split_validation(
            arrays.x_train, arrays.y_train, fit, classification=config.task != "regression"
        )
        return SweepData.holdout(x_fit, y_fit, x_val, y_val), arrays.x_test, arrays.y_test, False, arrays.raw_y_test
    stratify = arrays.raw_y_train if config.task != "regression" else None
    splits = kfold_splits(len(arrays.y_train), config.folds, seed=config.split_seed, stratify=stratify)
    data = kfold_data(arrays.x_train, arrays.y_train, splits, scale=config.scale_inputs)
    if not config.scale_inputs:
        return data, arrays.x_test, arrays.y_test, False, arrays.raw_y_test
    x_test = np.stack([StandardScaler.fit(arrays.x_train, rows=train).transform(arrays.x_test) for train, _ in splits])
    return data, x_test, arrays.y_test, True, arrays.raw_y_test


def _auc(p: np.ndarray, labels: np.ndarray) -> float:
    return scores.binary_auc(labels, p)  # Undefined (NaN with a reason) when one class is absent


def run_sweep(config: SweepRunConfig, workdir: Path) -> SweepReport:
    """Train every (configuration, seed, fold) model together, rank configurations, test the best; write `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.task not in ("regression", "binary"):
        raise ValueError(
            f"run_sweep handles regression and binary tasks (one output), got {config.task!r}; use "
            "dlchapter.engine.sweep.SweepTrainer directly"
        )
    select = config.select_by or config.monitor or "val_loss"
    known = [
        "val_loss",
        *(f"val_{m}" for m in TASKS[config.task].metrics),
        *(["val_auc"] if config.task == "binary" else []),
    ]
    if select not in known:
        raise ValueError(f"select_by {select!r} is not a validation score of a {config.task} sweep; known: {known}")
    data, x_test, y_test, test_per_fold, raw_y_test = _data(config)
    configs = configurations(config)
    runs = len(config.seeds) * max(config.folds, 1)
    specs = [
        ModelSpec(seed, c.learning_rate, c.l2, c.dropout, config.decay, fold)
        for c in configs
        for seed in config.seeds
        for fold in range(max(config.folds, 1))
    ]
    trainer = SweepTrainer(
        SweepConfig(
            config.task,
            config.hidden,
            1,
            config.activation,
            tuple(config.dropout_layers),
            config.optimizer,
            epochs=config.epochs,
            batch_size=config.batch_size,
            monitor=config.monitor,
            patience=config.patience,
        )
    )
    result = trainer.fit(specs, data)
    at_best = np.clip(result.best_epoch - 1, 0, None)
    models = [
        {
            "configuration": i // runs + 1,
            "learning_rate": s.learning_rate,
            "l2": s.l2,
            "dropout": s.dropout,
            "seed": s.seed,
            "fold": s.fold + 1 if config.folds else "-",
            **{k: float(v[i, at_best[i]]) for k, v in result.history.items() if k.startswith("val_")},
            "best_epoch": int(result.best_epoch[i]),
            "epochs_run": int(result.epochs_run[i]),
            "stopped_early": bool(result.stopped_early[i]),
            "diverged": bool(result.diverged[i]),
        }
        for i, s in enumerate(specs)
    ]
    if config.task == "binary":
        _add_binary_scores(trainer, result, data, models)
    _add_test_scores(
        trainer, result, config.task, x_test, y_test, test_per_fold, raw_y_test, models
    )  # every model, for models.csv; only the best configuration is reported
    table = configuration_table(configs, models, select)
    best = rank_configurations(table, select)[0]
    test_rows = [
        {"seed": m["seed"], "fold": m["fold"], **{k: v for k, v in m.items() if k.startswith("test_")}}
        for m in models
        if m["configuration"] == best["configuration"]
    ]
    metrics: dict[str, Any] = {
        "n_models": len(specs),
        "n_configurations": len(configs),
        "select_by": select,
        "best_configuration": best,
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
    }
    for name in [k for k in test_rows[0] if k.startswith("test_")]:
        metrics[f"best_{name}_mean"], metrics[f"best_{name}_std"] = mean_std([r[name] for r in test_rows])
    reference = next(
        (
            r
            for r, c in zip(table, configs)
            if config.reference and np.allclose((c.learning_rate, c.l2, c.dropout), config.reference, rtol=1e-9, atol=0)
        ),
        None,
    )
    if reference is not None:
        ref_models = [m for m in models if m["configuration"] == reference["configuration"]]
        for name in [k for k in ref_models[0] if k.startswith("test_")]:
            reference = {
                **reference,
                **dict(zip((f"{name} mean", f"{name} std"), mean_std([m[name] for m in ref_models]))),
            }
        metrics["reference_configuration"] = reference
    files = {
        "validation curves": validation_curves(
            result, configs, table, select, workdir / "validation_curves.png", runs_per_configuration=runs
        ).name
    }
    write_sweep(config, workdir, result, models, table, test_rows, metrics, files, select)
    return SweepReport(result, configs, models, table, metrics, files)


def _add_test_scores(
    trainer: SweepTrainer,
    result: SweepResult,
    task: str,
    x_test: np.ndarray,
    y_test: np.ndarray,
    per_fold: bool,
    labels: np.ndarray,
    models: list[dict],
) -> None:
    """Every model's test loss (MSE for regression) and metrics, and AUC for a binary task."""
    test = trainer.evaluate(result, x_test, y_test, x_per_fold=per_fold)
    p_test = trainer.predict(result, x_test, x_per_fold=per_fold)[..., 0] if task == "binary" else None
    for i, row in enumerate(models):
        row.update(
            {f"test_{'mse' if k == 'loss' and task == 'regression' else k}": float(v[i]) for k, v in test.items()}
        )
        if p_test is not None:
            row["test_auc"] = _auc(p_test[i], labels)


def _add_binary_scores(trainer: SweepTrainer, result: SweepResult, data: SweepData, models: list[dict]) -> None:
    """Validation AUC of every model (its best weights, on its fold's validation rows)."""
    x_val = data.x if data.x_val is None else data.x_val
    y_val = (data.y if data.y_val is None else data.y_val)[0]
    p = trainer.predict(result, x_val, x_per_fold=True)[..., 0]
    for i, s in enumerate(result.specs):
        rows = data.val_rows[s.fold]
        models[i]["val_auc"] = _auc(p[i, rows], y_val[rows].astype(np.int64))
