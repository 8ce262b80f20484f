"""The chapter's tabular workflow as one library call: load, split, scale, fit,
evaluate, report. Each tabular experiment is a `TabularConfig` preset.

source -> arrays -> train/test split -> preprocessing fitted on the training
rows -> device -> fit (validation split, early stopping) -> test scores -> run
directory (metrics.json, history.csv, config.json, summary.md, figures).
The data preparation (`prepare`) is `dlchapter.runs.tabular_prep`, the test-set report
`dlchapter.runs.tabular_report`; this module fits and writes the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.configs import config_checks
from dlchapter.configs.config import config_dict
from dlchapter.data import Dataset
from dlchapter.engine import fitting, parallel
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.optim import DEFAULT_LEARNING_RATES, OptimizerConfig
from dlchapter.engine.train import TASKS, FitConfig, History, Trainer, TrainingDiverged, split_validation
from dlchapter.models.dense import MLP
from dlchapter.presets.run_configs import TabularConfig  # defined apart: `run NAME --help` needs no JAX
from dlchapter.reporting import plots, provenance, report
from dlchapter.reporting.summary import count_params, summarize, summary_markdown
from dlchapter.runs import tabular_report
from dlchapter.runs.tabular_prep import prepare

logger = logging.getLogger(__name__)


@dataclass
class TabularResult:
    """What a run produced, for callers that want more than the files."""

    metrics: dict[str, Any]
    history: History
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fitted:
    """A trained model (or ensemble) as the report needs it."""

    model: MLP
    params: Any  # the (first member's) weights, for the summary table
    history: History
    predict: Any  # x -> outputs through the head (an ensemble averages its members')
    train_seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # extra entries for metrics.json


def _fit_single(
    config: TabularConfig, task, model: MLP, x_fit, y_fit, validation, fit_config: FitConfig, placement, workdir: Path
) -> _Fitted:
    """One network through `Trainer.fit` (checkpoints, precision and data parallel apply)."""
    stopper = EarlyStopping(config.monitor, config.patience, config.min_delta) if config.monitor else None
    trainer = Trainer(task, steps_per_call=config.steps_per_call, debug_nans=config.debug_nans, placement=placement)
    checkpoint = (
        CheckpointConfig(
            workdir / "checkpoints",
            every_epochs=config.checkpoint_every_epochs,
            restart=config.restart,
            run_config=config_dict(config),
        )
        if config.checkpoint_every_epochs
        else None
    )
    optimizer = OptimizerConfig(config.optimizer, config.learning_rate, config.decay, config.l2)
    fitted = fitting.fit_model(
        model,
        optimizer,
        x_fit,
        y_fit,
        fit_config,
        jax.random.key(config.seed),
        trainer,
        precision=config.precision,
        validation_data=validation,
        early_stopping=stopper,
        checkpoint=checkpoint,
    )
    predict = lambda x: trainer.predict(fitted.state, x)  # noqa: E731
    seconds, details = fitted.train_seconds, {}
    if fitted.history.epochs_run and not fitted.history.epochs_trained:  # restored whole: keep the real timings
        details = {"epochs_trained_by_this_run": 0, **report.earlier_run_timing(workdir, config, fitted.history)}
        seconds = details.pop("train_seconds")
    return _Fitted(fitted.model, fitted.state.params, fitted.history, predict, seconds, details)


def ensemble_seeds(seed: int, size: int) -> list[int]:
    """Member seeds of an ensemble: the run's own seed first, so member 0 is the single-model run."""
    return [seed + 1000 * i for i in range(size)]


def _fit_ensemble(config: TabularConfig, task, model: MLP, x_fit, y_fit, validation, workdir: Path) -> _Fitted:
    """`config.ensemble` networks trained in one vmapped program (`dlchapter.engine.sweep`); outputs averaged.

    Member i is exactly `Trainer.fit` with seed `ensemble_seeds(...)[i]` (same
    split, initialisation, batch order, dropout and early stopping), so the
    ensemble costs one compiled program, not N runs. `checkpoint_every_epochs` saves the stacked members
    (`dlchapter.engine.sweep_progress`) and a rerun resumes them exactly. With `precision="bf16"` the members compute in
    bfloat16 (float32 parameters, loss and metrics), as single runs do, within bfloat16's rounding of them.
    """
    unsupported = {
        "data_parallel": config.data_parallel,
        "steps_per_call": config.steps_per_call,
        "debug_nans": config.debug_nans,
    }
    if any(unsupported.values()):
        raise ValueError(
            "ensemble > 1 trains in one vmapped program and does not support "
            f"{[k for k, v in unsupported.items() if v]}"
        )
    rates = {r for r in config.dropout if r}
    rate = max(rates, default=0.0)
    if len(rates) > 1:
        raise ValueError(f"an ensemble shares one dropout rate between its dropout layers, got {config.dropout}")
    from dlchapter.engine.sweep import (
        ModelSpec,
        SweepConfig,
        SweepData,
        SweepTrainer,
    )
    from dlchapter.engine.sweep_progress import SweepCheckpoint

    sweep_config = SweepConfig(
        task=config.task,
        hidden=config.hidden,
        out_features=model.out_features,
        activation=config.activation,
        dropout_layers=tuple(i for i, r in enumerate(config.dropout) if r),
        optimizer=config.optimizer,
        epochs=config.epochs,
        batch_size=config.batch_size,
        monitor=config.monitor,
        patience=config.patience,
        min_delta=config.min_delta,
    )
    learning_rate = DEFAULT_LEARNING_RATES[config.optimizer] if config.learning_rate is None else config.learning_rate
    specs = [
        ModelSpec(seed=s, learning_rate=learning_rate, l2=config.l2, dropout=rate, decay=config.decay)
        for s in ensemble_seeds(config.seed, config.ensemble)
    ]
    data = SweepData.holdout(x_fit, y_fit) if validation is None else SweepData.holdout(x_fit, y_fit, *validation)
    trainer = SweepTrainer(sweep_config, precision=config.precision)
    started = time.perf_counter()
    checkpoint = None
    if config.checkpoint_every_epochs:  # the stacked members, bound to this run's config; a rerun resumes exactly
        checkpoint = SweepCheckpoint(
            workdir / "checkpoints", config.checkpoint_every_epochs, config.restart, run_config=config_dict(config)
        )
    result = trainer.fit(specs, data, checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    if result.diverged.any():
        raise TrainingDiverged(
            f"ensemble members {np.flatnonzero(result.diverged).tolist()} diverged (loss NaN or Inf); "
            "lower the learning rate"
        )
    history = History(stopped_early=bool(result.stopped_early.all()))
    for name, values_NxE in result.history.items():  # the members' mean while any member is still training
        history.values[name] = [float(np.nanmean(column)) for column in values_NxE[:, : int(result.epochs_run.max())].T]
    details = {
        "ensemble": config.ensemble,
        "member_seeds": [s.seed for s in specs],
        "member_best_epochs": result.best_epoch.tolist(),
        "member_epochs_run": result.epochs_run.tolist(),
    }
    return _Fitted(
        model, result.model_params(0), history, lambda x: trainer.predict(result, x).mean(axis=0), seconds, details
    )


def _first(categories: list[str], shown: int = 20) -> str:
    """A column's categories for summary.md: the first `shown`, then how many more (metrics.json has all)."""
    if len(categories) <= shown + 1:
        return ", ".join(categories)
    return ", ".join(categories[:shown]) + f", ... and {len(categories) - shown} more (all in metrics.json)"


def _loss_of_average(task_name: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """The task's loss on an ensemble's averaged outputs (probabilities for classification)."""
    if task_name == "regression":
        return float(np.mean((outputs.ravel().astype(np.float64) - y.ravel()) ** 2))
    p = np.clip(outputs.astype(np.float64), 1e-7, 1 - 1e-7)  # Keras's epsilon
    if task_name == "binary":
        return float(-np.mean(y * np.log(p.ravel()) + (1 - y) * np.log(1 - p.ravel())))
    return float(-np.mean(np.sum(y * np.log(p), axis=-1)))


def run_tabular(
    config: TabularConfig, workdir: Path, dataset: Dataset | None = None, *, handle_unknown: str = "error"
) -> TabularResult:
    """Train and evaluate `config` end to end, writing the run directory `workdir`.

    `dataset` (e.g. from `dlchapter.data.load_csv`) replaces loading
    ``config.dataset``; its name is then recorded as the config's dataset. Its
    task must be ``config.task``; `handle_unknown` says what a categorical value
    seen only in the test rows does ("error", or "ignore": all zeros).
    """
    # ConfigError before anything loads; a dataset passed in replaces the registry's name and data directory
    config_checks.validate(config, ignore=("dataset", "data_dir") if dataset is not None else ())
    workdir = Path(workdir)
    if dataset is not None:
        config = replace(config, dataset=dataset.name, data_dir=None)  # config.json names the data really used
        if dataset.missing is not None:  # and the loader's missing-value policy that made it
            config = replace(config, missing=dataset.missing["policy"])
    workdir.mkdir(parents=True, exist_ok=True)
    placement = parallel.placement_for(config.data_parallel)  # before any other JAX call: may join other processes
    task = TASKS[config.task]
    data = prepare(config, dataset, handle_unknown)
    ds = data.ds
    fit_config = FitConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        validation_mode=config.validation_mode,
        seed=config.seed,
    )
    x_fit, y_fit, validation = data.x_train, data.y_train, None
    if config.validation_split:
        x_fit, y_fit, validation = split_validation(x_fit, y_fit, fit_config, classification=task.is_classification)
    out_features = ds.n_classes if config.task == "multiclass" else 1
    model = MLP(
        widths=config.hidden,
        out_features=out_features,
        activation=config.activation,
        dropout=config.dropout or 0.0,
        head=task.head,
    )
    if config.ensemble > 1:
        fitted = _fit_ensemble(config, task, model, x_fit, y_fit, validation, workdir)
    else:
        fitted = _fit_single(config, task, model, x_fit, y_fit, validation, fit_config, placement, workdir)
    history = fitted.history
    workdir = parallel.report_dir(workdir)  # only process 0 writes the report (checkpoints above are shared)
    members = f" (mean over the {config.ensemble} members still training)" if config.ensemble > 1 else ""
    curves = plots.training_curves(  # first: in a command-line run it is drawn (helper process) while we predict
        history.values,
        workdir / "training_curves.png",
        history.best_epoch,
        title=f"{ds.name}: training history{members}",
    ).name

    outputs = np.asarray(fitted.predict(data.x_test))
    metrics: dict[str, Any] = {"test_loss": _loss_of_average(config.task, outputs, data.y_test)}
    sections = [("Model", summary_markdown(summarize(fitted.model, fitted.params, x_fit), count_params(fitted.params)))]
    if config.task == "regression":
        files = tabular_report.regression_report(config, data, outputs, metrics, workdir)
    else:
        files = tabular_report.classification_report(config, ds, data.raw_y_test, outputs, metrics, sections, workdir)
    n_validation = 0 if validation is None else len(validation[1])
    metrics.update(
        {
            "seed": config.seed,
            "epochs_run": history.epochs_run,
            "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early,
            "params": count_params(fitted.params),
            "train_seconds": fitted.train_seconds,
            "n_train": len(y_fit),
            "n_validation": n_validation,
            "n_test": len(data.y_test),
            "dropped_rows": data.dropped_rows,
            **fitted.details,
        }
    )
    metrics["data_source"] = ds.source
    if ds.missing is not None:
        metrics["missing_values"] = ds.missing  # the loader's policy for empty cells: rows dropped, cells imputed
    if data.categories:
        metrics["categories"] = data.categories  # the training rows' categories, one one-hot column each
        metrics["unknown_categories"] = handle_unknown

    files["training curves"] = curves
    report.write_history(workdir / "history.csv", history)
    metric_rows = [{"metric": k, "value": v} for k, v in metrics.items() if k.startswith(("test_", "xgb_test_"))]
    sections.insert(0, ("Test metrics", report.markdown_table(metric_rows)))
    trained = (
        f"An ensemble of {config.ensemble} networks trained in one vmapped program (seeds "
        f"{fitted.details['member_seeds']}, best epochs {fitted.details['member_best_epochs']}); "
        "the test outputs are their mean"
        if config.ensemble > 1
        else f"{history.epochs_run} epochs run, "
        + (f"best epoch {history.best_epoch}" if history.best_epoch is not None else "nothing monitored")
        + f", stopped early: {history.stopped_early}"
    )
    if "timing_source" in fitted.details:  # a rerun that restored every epoch from the checkpoints
        source = fitted.details["timing_source"]
        trained += f" (all restored from the checkpoints: this rerun trained nothing; time from {source})"
    sections.insert(
        1,
        (
            "Training",
            f"{trained}, {fitted.train_seconds:.1f} s. Data: `{ds.source}`, {len(y_fit)} training rows, "
            f"{n_validation} validation rows, {len(data.y_test)} test rows"
            + (
                f", {data.dropped_rows} rows with impossible values dropped before the split."
                if data.dropped_rows
                else "."
            ),
        ),
    )
    if ds.missing and (ds.missing["rows_dropped"] or ds.missing["cells_imputed"]):
        done = f"{ds.missing['rows_dropped']} row(s) dropped, {ds.missing['cells_imputed']} cell(s) imputed"
        text = f"missing={ds.missing['policy']!r}: {done} (per column in metrics.json)."
        sections.insert(2, ("Missing values", text))
    if data.categories:
        listed = "; ".join(f"{name}: {_first(cats)}" for name, cats in data.categories.items())
        text = f"One-hot encoded with the training rows' categories ({listed}); unseen categories: {handle_unknown}."
        sections.insert(2, ("Categorical columns", text))
    if config.note:
        sections.insert(0, ("About this preset", config.note))
    report.write_run(
        workdir,
        config,
        {**metrics, "provenance": provenance.collect()},
        f"{ds.name}: {config.task} (seed {config.seed})",
        sections,
        files,
    )
    return TabularResult(metrics, history, files)
