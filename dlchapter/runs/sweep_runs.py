"""A hyperparameter sweep as one library call: grid or random configurations x seeds (x folds), trained together.

source -> arrays -> train/test split -> validation split (or k folds, each
standardized by its own training rows) -> every (configuration, seed, fold)
model in one vmapped program (`dlchapter.engine.sweep`) -> per-configuration mean +-
std of the validation score at each model's best epoch -> the best
configuration, scored on the test rows -> run directory (summary.md,
metrics.json, models.csv, histories.npz, validation-curve figure).

The config (`SweepRunConfig`, `from_tabular`) lives in `dlchapter.presets.run_configs`, importable without JAX;
the `dlchapter sweep` command is `dlchapter.presets.sweep_california.sweep_command`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlchapter.concepts.concept_plots import MaxNLocator, plt, save_figure
from dlchapter.data.preprocessing import StandardScaler
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.crossval import kfold_splits
from dlchapter.engine.sweep import ModelSpec, SweepConfig, SweepData, SweepResult, SweepTrainer, kfold_data
from dlchapter.engine.train import TASKS, FitConfig, split_validation
from dlchapter.presets.run_configs import SweepRunConfig, TabularConfig, from_tabular  # noqa: F401  (re-exported)
from dlchapter.reporting import provenance, report, safe_write, scores
from dlchapter.runs.tabular_prep import prepare


@dataclass(frozen=True)
class Configuration:
    """One point of the search space (trained once per seed and fold)."""

    learning_rate: float
    l2: float
    dropout: float

    def label(self) -> str:
        return f"lr {self.learning_rate:.3g}, L2 {self.l2:.3g}, dropout {self.dropout:.2g}"


def configurations(config: SweepRunConfig) -> list[Configuration]:
    """The grid, or `samples` random draws within the grid's ranges (L2 = 0 drawn as often as each other grid value)."""
    if config.search == "grid":
        return [Configuration(lr, l2, d) for lr in config.learning_rates for l2 in config.l2s for d in config.dropouts]
    if config.search != "random":
        raise ValueError(f"search must be 'grid' or 'random', got {config.search!r}")
    rng = np.random.default_rng(config.sample_seed)

    def log_uniform(values: Sequence[float]) -> float:
        positive = [v for v in values if v > 0]
        if not positive or (0.0 in values and rng.random() < 1.0 / len(values)):
            return 0.0
        return float(np.exp(rng.uniform(np.log(min(positive)), np.log(max(positive)))))

    return [
        Configuration(
            log_uniform(config.learning_rates),
            log_uniform(config.l2s),
            float(rng.uniform(min(config.dropouts), max(config.dropouts))),
        )
        for _ in range(config.samples)
    ]


@dataclass
class SweepReport:
    """What a sweep produced: the models, their scores, the per-configuration summary and the files."""

    result: SweepResult
    configurations: list[Configuration]
    models: list[dict[str, Any]]
    table: list[dict[str, Any]]
    metrics: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


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


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    undefined = [v for v in values if scores.is_undefined(v)]
    if undefined:  # e.g. an AUC on a fold with one class: the configuration's mean is undefined too
        reason = scores.Undefined(f"undefined on {len(undefined)} of {len(values)} runs ({undefined[0].reason})")
        return reason, reason
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


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
    table = _configuration_table(configs, models, select)
    best = _ranked(table, select)[0]
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
        metrics[f"best_{name}_mean"], metrics[f"best_{name}_std"] = _mean_std([r[name] for r in test_rows])
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
                **dict(zip((f"{name} mean", f"{name} std"), _mean_std([m[name] for m in ref_models]))),
            }
        metrics["reference_configuration"] = reference
    files = {
        "validation curves": validation_curves(
            result, configs, table, select, workdir / "validation_curves.png", runs_per_configuration=runs
        ).name
    }
    _write(config, workdir, result, models, table, test_rows, metrics, files, select)
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


def _ranked(table: list[dict[str, Any]], select: str) -> list[dict[str, Any]]:
    """Configurations best first by mean `select` (non-finite last)."""
    sign = -1.0 if EarlyStopping(select).maximize else 1.0
    return sorted(table, key=lambda r: sign * r[f"{select} mean"] if np.isfinite(r[f"{select} mean"]) else np.inf)


def _configuration_table(configs: list[Configuration], models: list[dict], select: str) -> list[dict[str, Any]]:
    """One row per configuration: mean and std (ddof=1) of every validation score over its seeds and folds."""
    table = []
    for c, config in enumerate(configs, start=1):
        rows = [m for m in models if m["configuration"] == c]
        row: dict[str, Any] = {
            "configuration": c,
            "learning_rate": config.learning_rate,
            "l2": config.l2,
            "dropout": config.dropout,
            "runs": len(rows),
        }
        for name in [k for k in rows[0] if k.startswith("val_")]:
            row[f"{name} mean"], row[f"{name} std"] = _mean_std([m[name] for m in rows])
        row["best_epoch mean"] = float(np.mean([m["best_epoch"] for m in rows]))
        row["diverged"] = sum(m["diverged"] for m in rows)
        table.append(row)
    return table


def validation_curves(
    result: SweepResult,
    configs: list[Configuration],
    table: list[dict],
    select: str,
    path: Path,
    *,
    runs_per_configuration: int,
    top: int = 6,
) -> Path:
    """Mean +- std band of `select` per epoch over each configuration's runs still training, for the `top`
    configurations."""
    ranked = _ranked(table, select)[:top]
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    curves = result.history[select]
    for row in ranked:
        c = row["configuration"] - 1
        values = curves[c * runs_per_configuration : (c + 1) * runs_per_configuration]
        alive = np.isfinite(values).any(axis=0)
        epochs = np.arange(1, values.shape[1] + 1)[alive]
        with np.errstate(all="ignore"):
            mean, std = np.nanmean(values[:, alive], axis=0), np.nanstd(values[:, alive], axis=0)
        line = ax.plot(
            epochs,
            mean,
            linewidth=1.4,
            label=f"{configs[c].label()}: {row[f'{select} mean']:.4g} +- {row[f'{select} std']:.2g}",
        )[0]
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.18)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(select)
    ax.set_title(
        f"{select}: mean +- std over {runs_per_configuration} runs per configuration (runs still training)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(
        {k: "" if scores.is_undefined(v) else v for k, v in row.items()} for row in rows
    )  # undefined: empty
    return buffer.getvalue()


def _write(
    config: SweepRunConfig,
    workdir: Path,
    result: SweepResult,
    models: list[dict],
    table: list[dict],
    test_rows: list[dict],
    metrics: dict,
    files: dict,
    select: str,
) -> None:
    safe_write.write_text(workdir / "models.csv", _csv(models))
    with safe_write.atomic_open(workdir / "histories.npz") as handle:
        np.savez(handle, **result.history, best_epoch=result.best_epoch, epochs_run=result.epochs_run)
    best = metrics["best_configuration"]
    columns = [
        "configuration",
        "learning_rate",
        "l2",
        "dropout",
        "runs",
        f"{select} mean",
        f"{select} std",
        *[k for k in table[0] if k.endswith(" mean") and k != f"{select} mean" and k.startswith("val_")],
        "best_epoch mean",
        "diverged",
    ]
    ranked = _ranked(table, select)
    margin = _margin(ranked, select, "seeds and folds" if config.folds else "seeds")
    what = (
        f"{config.folds}-fold cross-validation of the training rows"
        if config.folds
        else f"a validation split of {config.validation_split:g} ({config.validation_mode})"
    )
    sections = [
        (
            "Setup",
            f"{metrics['n_models']} models ({metrics['n_configurations']} configurations x "
            f"{len(config.seeds)} seeds{f' x {config.folds} folds' if config.folds else ''}) of the "
            f"network {list(config.hidden)} on `{config.dataset}` ({config.task}), trained together in "
            f"one compiled program: {metrics['compile_seconds']:.1f} s compiling, "
            f"{metrics['run_seconds']:.1f} s running. Validation: {what}; early stopping on "
            f"{config.monitor} (patience {config.patience}) per model, best weights kept. Each model's "
            f"score is its {select} at its best epoch; std is over "
            f"seeds{' and folds' if config.folds else ''} (ddof=1).",
        ),
        (
            f"Best configuration by {select}",
            f"{Configuration(best['learning_rate'], best['l2'], best['dropout']).label()}: {select} "
            f"{best[f'{select} mean']:.4g} +- {best[f'{select} std']:.2g}.{margin}",
        ),
        (
            "Best configuration on the test rows",
            report.markdown_table(test_rows) + "\n\nMean +- std: " + format_test_scores(metrics) + ".",
        ),
        ("Every configuration (best first)", report.markdown_table(ranked, columns)),
    ]
    ref = metrics.get("reference_configuration")
    if ref:
        scores_text = ", ".join(
            f"{k.removesuffix(' mean')} {v:.4g} +- {ref[k.removesuffix(' mean') + ' std']:.2g}"
            for k, v in ref.items()
            if k.endswith(" mean") and k.startswith(("val_", "test_"))
        )
        sections.insert(
            3,
            (
                "Reference configuration (the base preset's)",
                f"{Configuration(ref['learning_rate'], ref['l2'], ref['dropout']).label()}: {scores_text}. "
                f"Ranked {[r['configuration'] for r in ranked].index(ref['configuration']) + 1} of "
                f"{len(ranked)} by {select}.",
            ),
        )
    if config.folds:
        best_rows = [m for m in models if m["configuration"] == best["configuration"]]
        sections.append(
            (
                "Best configuration: each fold x seed",
                report.markdown_table(
                    best_rows, ["fold", "seed", *[k for k in best_rows[0] if k.startswith("val_")], "best_epoch"]
                ),
            )
        )
    if config.note:
        sections.insert(0, ("About this sweep", config.note))
    report.write_run(
        workdir,
        config,
        {**metrics, "test_runs": test_rows, "provenance": provenance.collect()},
        f"Sweep: {config.dataset}",
        sections,
        files,
    )


def _margin(ranked: list[dict[str, Any]], select: str, spread: str) -> str:
    """Whether the best configuration beats the runner-up by more than two standard errors of its mean."""
    if len(ranked) < 2:
        return ""
    best, second = ranked[0], ranked[1]
    gap = abs(second[f"{select} mean"] - best[f"{select} mean"])
    se = best[f"{select} std"] / np.sqrt(best["runs"])
    verdict = (
        "a real margin"
        if gap > 2 * se
        else f"within the noise of the {spread}, so treat the top of the ranking as a tie"
    )
    return (
        f" The runner-up (configuration {second['configuration']}) is {gap:.3g} behind; the "
        f"standard error of the best mean is {se:.3g}: {verdict}."
    )


def format_test_scores(metrics: Mapping[str, Any]) -> str:
    """ "test_loss 0.2469 +- 0.0136, ..." from a sweep's metrics."""
    return ", ".join(
        f"{k[len('best_') : -len('_mean')]} {v:.4f} +- {metrics[k[: -len('_mean')] + '_std']:.4f}"
        for k, v in metrics.items()
        if k.startswith("best_test_") and k.endswith("_mean")
    )
