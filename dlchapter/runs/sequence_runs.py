"""Recurrent networks on sequences, end to end: a temperature forecast and images as sequences.

Task "temperatures": next-day forecast of Melbourne's daily minimum
temperature from the previous `window` days. The split is chronological by
the *target's* date (training targets up to `train_until`, validation targets
up to `validation_until`, test targets after it); a window's inputs precede
its target, so no validation or test target is ever a training input or
target. The scaler is fitted on the training period's values only. SimpleRNN,
GRU, LSTM and a dense network on the flattened window are compared with the
persistence forecast (tomorrow = today), in °C.

Task "images": each 28x28 image is 28 time steps of 28 pixels, classified by
GRU and LSTM. Fashion-MNIST uses its train split (minus a stratified
validation share) and its test split; `holdout_from_test` trains on the first
`holdout_train` images of the test split and tests on the rest (for MNIST,
whose train split is not stored here); that smaller set trains for more epochs
by default (`HOLDOUT_DEFAULTS`).

Every model trains with early stopping on validation loss (best weights
restored). The run directory gets metrics.json, config.json, summary.md, a
history CSV and training curves per model, and the task's figures.
The data (`split_series`, `image_splits`) are `dlchapter.runs.sequence_data`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from dlchapter.data import load
from dlchapter.engine import fitting
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.optim import OptimizerConfig
from dlchapter.engine.train import TASKS, FitConfig, History, Trainer
from dlchapter.models.dense import MLP
from dlchapter.models.recurrent import CELLS, RecurrentNet
from dlchapter.presets.run_configs import SequenceConfig  # defined apart: `run NAME --help` needs no JAX
from dlchapter.reporting import plots, provenance, report, scores
from dlchapter.reporting.summary import count_params, summarize, summary_markdown
from dlchapter.runs.sequence_data import image_splits, split_series

MODEL_NAMES = {"simple_rnn": "SimpleRNN", "gru": "GRU", "lstm": "LSTM", "dense": "Dense", "persistence": "persistence"}


TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "temperatures": dict(
        dataset="daily_min_temperatures",
        models=("simple_rnn", "gru", "lstm", "dense"),
        hidden=32,
        epochs=150,
        batch_size=32,
        patience=15,
        learning_rate=1e-3,
    ),
    "images": dict(
        dataset="fashion_mnist",
        models=("gru", "lstm"),
        hidden=64,
        epochs=15,
        batch_size=128,
        patience=3,
        learning_rate=2e-3,
    ),
}
# The 8,000-image holdout gives 57 steps an epoch (Fashion-MNIST's train split 422): more epochs, more patience.
HOLDOUT_DEFAULTS: dict[str, Any] = dict(epochs=40, patience=5)


def resolve(config: SequenceConfig) -> SequenceConfig:
    """`config` with every unset field filled from its task's defaults, checked."""
    if config.task not in TASK_DEFAULTS:
        raise ValueError(f"task must be one of {sorted(TASK_DEFAULTS)}, got {config.task!r}")
    defaults = dict(TASK_DEFAULTS[config.task])
    if config.task == "images" and config.holdout_from_test:
        defaults.update(HOLDOUT_DEFAULTS)
    filled = {k: v for k, v in defaults.items() if getattr(config, k) in (None, ())}
    config = dataclasses.replace(config, **filled)
    allowed = ("simple_rnn", "gru", "lstm", "dense")
    unknown = [m for m in config.models if m not in allowed]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(allowed)}")
    return config


def build_model(name: str, config: SequenceConfig, out_features: int) -> nn.Module:
    """A recurrent net for a key of `CELLS`, or the dense baseline on the flattened window."""
    if name == "dense":
        return MLP(widths=config.dense_hidden, out_features=out_features)
    if name not in CELLS:
        raise ValueError(f"unknown model {name!r}")
    return RecurrentNet(cell=name, hidden=config.hidden, out_features=out_features, num_layers=config.num_layers)


@dataclass
class ModelRun:
    """One trained model: its final (best) state, history, trainer and timing."""

    model: nn.Module
    state: Any
    history: History
    trainer: Trainer
    train_seconds: float


def fit_model(
    model: nn.Module,
    task: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    config: SequenceConfig,
    key: jax.Array,
) -> ModelRun:
    """Train `model` on splits["train"] with early stopping on splits["validation"]'s loss."""
    x_train, y_train = splits["train"]
    optimizer = OptimizerConfig(
        config.optimizer, learning_rate=config.learning_rate, clip_global_norm=config.clip_global_norm
    )
    trainer = Trainer(
        TASKS[task],
        steps_per_call=config.steps_per_call,
        cpu_compiler_options=getattr(model, "cpu_compiler_options", lambda: None)(),
    )
    fit_config = FitConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed)
    fitted = fitting.fit_model(
        model,
        optimizer,
        x_train,
        y_train,
        fit_config,
        key,
        trainer,
        precision=config.precision,
        validation_data=splits["validation"],
        early_stopping=EarlyStopping("val_loss", config.patience),
    )
    return ModelRun(fitted.model, fitted.state, fitted.history, trainer, fitted.train_seconds)


@dataclass
class SequenceResult:
    """What a run produced, for callers that want more than the files."""

    metrics: dict[str, Any]
    histories: dict[str, History]
    files: dict[str, str] = field(default_factory=dict)


def run_sequences(config: SequenceConfig, workdir: Path) -> SequenceResult:
    """Run `config`'s task end to end and write the run directory `workdir`."""
    config = resolve(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runner = _run_temperatures if config.task == "temperatures" else _run_images
    metrics, histories, files, sections, title = runner(config, workdir)
    metrics["total_seconds"] = time.perf_counter() - started
    metrics["seed"] = config.seed
    report.write_run(workdir, config, {**metrics, "provenance": provenance.collect()}, title, sections, files)
    return SequenceResult(metrics, histories, files)


def _train_all(
    config: SequenceConfig, task: str, splits: dict, out_features: int, workdir: Path
) -> tuple[dict[str, ModelRun], dict[str, str], list[tuple[str, str]]]:
    """Fit every model of `config.models`; write its history CSV and curves; return runs, figures, summaries."""
    root = jax.random.key(config.seed)
    runs, files, sections = {}, {}, []
    for i, name in enumerate(config.models):
        run = fit_model(build_model(name, config, out_features), task, splits, config, jax.random.fold_in(root, i))
        runs[name] = run
        report.write_history(workdir / f"history_{name}.csv", run.history)
        label = MODEL_NAMES[name]
        files[f"{label}: training curves"] = plots.training_curves(
            run.history.values,
            workdir / f"training_curves_{name}.png",
            run.history.best_epoch,
            title=f"{label}: training history",
        ).name
        rows = summarize(run.model, run.state.params, splits["train"][0])
        sections.append((f"Model: {label}", summary_markdown(rows, count_params(run.state.params))))
    return runs, files, sections


def _run_facts(name: str, run: ModelRun) -> dict[str, Any]:
    """Size, epochs and training time of one model, for metrics.json and the table."""
    return {
        "params": count_params(run.state.params),
        "epochs_run": run.history.epochs_run,
        "best_epoch": run.history.best_epoch,
        "train_seconds": run.train_seconds,
    }


TaskOutput = tuple[dict[str, Any], dict[str, History], dict[str, str], list[tuple[str, str]], str]


def _run_temperatures(config: SequenceConfig, workdir: Path) -> TaskOutput:
    """Forecast the test period with every model and persistence; metrics in °C, figures, summary sections."""
    ds = load(config.dataset, config.data_dir)
    series, scaler = split_series(ds, config.window, config.train_until, config.validation_until)
    splits = {k: (s.x, s.y) for k, s in series.items()}
    runs, files, model_sections = _train_all(config, "regression", splits, 1, workdir)
    test = series["test"]
    forecasts = {"persistence": test.last_value}
    for name, run in runs.items():
        scaled = run.trainer.predict(run.state, test.x).reshape(-1, 1)
        forecasts[name] = scaler.inverse_transform(scaled.astype(np.float64))[:, 0]
    metrics: dict[str, Any] = {}
    for name, y_pred in forecasts.items():
        s = scores.regression_scores(test.y_true, y_pred)
        metrics[f"test_mae_{name}"], metrics[f"test_rmse_{name}"] = s["mae"], s["rmse"]
    rows = []
    for name in forecasts:
        ratio = metrics[f"test_mae_{name}"] / metrics["test_mae_persistence"]
        facts = _run_facts(name, runs[name]) if name in runs else {}
        if name in runs:
            metrics[f"mae_ratio_{name}_vs_persistence"] = ratio
            metrics.update({f"{k}_{name}": v for k, v in facts.items()})
        rows.append(
            {
                "model": MODEL_NAMES[name],
                "test MAE (°C)": metrics[f"test_mae_{name}"],
                "test RMSE (°C)": metrics[f"test_rmse_{name}"],
                "MAE / persistence": ratio,
                **facts,
            }
        )
    counts = {k: len(s.y) for k, s in series.items()}
    metrics.update({f"n_{k}": v for k, v in counts.items()})
    metrics["scaler_mean"], metrics["scaler_scale"] = float(scaler.mean[0]), float(scaler.scale[0])
    period = lambda s: f"{s.dates[0]} to {s.dates[-1]}"  # noqa: E731
    split_text = (
        f"Data: `{ds.source}`. Windows of {config.window} days predict the next day; the split is "
        "by the target's date: "
        f"training {period(series['train'])} ({counts['train']} windows), validation "
        f"{period(series['validation'])} ({counts['validation']}), "
        f"test {period(series['test'])} ({counts['test']}). Validation and test windows may start "
        "in the previous period (inputs only: "
        "no later target is ever seen in training). Standard scaling fitted on the training period "
        f"(mean {scaler.mean[0]:.3f} °C, "
        f"scale {scaler.scale[0]:.3f} °C). Loss MSE on scaled values, {config.optimizer} at "
        f"{config.learning_rate}, gradient norm clipped at "
        f"{config.clip_global_norm}, batch {config.batch_size}, up to {config.epochs} epochs, early "
        "stopping on validation loss (patience "
        f"{config.patience}, best weights restored). Persistence forecasts tomorrow = today."
    )
    columns = [
        "model",
        "test MAE (°C)",
        "test RMSE (°C)",
        "MAE / persistence",
        "params",
        "epochs_run",
        "best_epoch",
        "train_seconds",
    ]
    sections = [
        ("Test metrics (°C, test period)", report.markdown_table(rows, columns)),
        ("Setup", split_text),
        *model_sections,
    ]
    dates = test.dates
    lines = {"truth": (dates, test.y_true), **{MODEL_NAMES[n]: (dates, p) for n, p in forecasts.items()}}
    fig_files = {
        "forecasts vs truth (test period)": plots.lines(
            lines,
            workdir / "forecasts_test.png",
            xlabel="date",
            ylabel="daily minimum temperature (°C)",
            title="next-day forecasts on the test period",
        ).name
    }
    zoom = slice(0, min(90, len(dates)))
    zoomed = {k: (x[zoom], y[zoom]) for k, (x, y) in lines.items()}
    fig_files["forecasts vs truth (first 90 test days)"] = plots.lines(
        zoomed,
        workdir / "forecasts_test_90days.png",
        xlabel="date",
        ylabel="daily minimum temperature (°C)",
        title="next-day forecasts: first 90 days of the test period",
    ).name
    return (
        metrics,
        {n: r.history for n, r in runs.items()},
        {**fig_files, **files},
        sections,
        f"{ds.name}: next-day forecast (seed {config.seed})",
    )


def _run_images(config: SequenceConfig, workdir: Path) -> TaskOutput:
    """Classify the test images with every model; accuracies, confusion matrices, reports."""
    splits, class_names, source = image_splits(config)
    runs, files, model_sections = _train_all(config, "sparse_multiclass", splits, len(class_names), workdir)
    x_test, y_test = splits["test"]
    metrics: dict[str, Any] = {}
    rows, fig_files, reports = [], {}, []
    for name, run in runs.items():
        probs = run.trainer.predict(run.state, x_test)
        y_pred = probs.argmax(axis=-1)
        metrics[f"test_accuracy_{name}"] = float(np.mean(y_pred == y_test))
        metrics[f"test_loss_{name}"] = run.trainer.evaluate(run.state, x_test, y_test)["loss"]
        facts = _run_facts(name, run)
        metrics.update({f"{k}_{name}": v for k, v in facts.items()})
        label = MODEL_NAMES[name]
        rows.append(
            {
                "model": label,
                "test accuracy": metrics[f"test_accuracy_{name}"],
                "test loss": metrics[f"test_loss_{name}"],
                **facts,
            }
        )
        matrix = scores.confusion_matrix(y_test, y_pred, len(class_names))
        fig_files[f"{label}: confusion matrix (test)"] = plots.confusion_matrix(
            matrix, class_names, workdir / f"confusion_matrix_{name}.png", title=f"{label}: confusion matrix (test)"
        ).name
        reports.append(
            (
                f"Classification report: {label}",
                scores.report_markdown(scores.classification_report(y_test, y_pred, list(class_names))),
            )
        )
    if runs:
        last = list(runs)[-1]
        shown = min(16, len(y_test))
        pred = runs[last].trainer.predict(runs[last].state, x_test[:shown]).argmax(axis=-1)
        labels = [f"{class_names[t]} / {class_names[p]}" for t, p in zip(y_test[:shown], pred)]
        fig_files["test images (true / predicted)"] = plots.image_grid(
            x_test[:shown], labels, workdir / "sample_predictions.png", title=f"{MODEL_NAMES[last]}: true / predicted"
        ).name
    counts = {k: len(v[1]) for k, v in splits.items()}
    metrics.update({f"n_{k}": v for k, v in counts.items()})
    setup = (
        f"Data: `{source}`. Each 28x28 image is 28 time steps of 28 pixel values (scaled to [0, "
        f"1]). {counts['train']} training, "
        f"{counts['validation']} validation (stratified {config.validation_fraction:.0%} of the "
        f"training images) and {counts['test']} test images. "
        f"{config.hidden} units, {config.num_layers} layer(s), softmax head; sparse categorical "
        f"cross-entropy, {config.optimizer} at "
        f"{config.learning_rate}, gradient norm clipped at {config.clip_global_norm}, batch "
        f"{config.batch_size}, up to {config.epochs} epochs, "
        f"early stopping on validation loss (patience {config.patience}, best weights restored)."
    )
    sections = [("Test metrics", report.markdown_table(rows)), ("Setup", setup), *model_sections, *reports]
    return (
        metrics,
        {n: r.history for n, r in runs.items()},
        {**fig_files, **files},
        sections,
        f"{config.dataset}: images as sequences (seed {config.seed})",
    )
