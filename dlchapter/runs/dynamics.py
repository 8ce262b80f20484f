"""How training moves: batch size (batch, mini-batch, SGD) and optimizers (SGD, momentum, RMSprop, Adam, decay).

Both experiments train the same dense regression network on a scaled tabular
data set (California housing by default) with the library's `Trainer`, one
compiled call per epoch, and compare curves. The shared pieces (`tabular_split`, a seeded
scaled train/validation split, and `train_mlp`, which records the loss and
metrics on all training and validation rows after every epoch with dropout
off) are used by `dlchapter.runs.regularization` too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dlchapter.concepts.concept_plots import Panel, Series, line_panels
from dlchapter.data import load
from dlchapter.data.preprocessing import StandardScaler
from dlchapter.engine import fitting
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, History, Trainer
from dlchapter.models.dense import MLP
from dlchapter.presets.run_configs import (  # defined apart: `run NAME --help` needs no JAX
    BatchSizeConfig,
    OptimizersConfig,
)
from dlchapter.reporting import provenance, report


@dataclass(frozen=True)
class SplitData:
    """Scaled training and validation rows of one data set (scaler fitted on the training rows)."""

    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def tabular_split(
    dataset: str,
    *,
    seed: int,
    train_rows: int | None = None,
    validation_rows: int | None = None,
    validation_fraction: float = 0.2,
    max_target: float | None = None,
    clip_features: float | None = None,
    data_dir: str | None = None,
) -> SplitData:
    """A seeded random split: `validation_rows` (or the fraction) for validation, `train_rows` (or the rest)
    for training.

    Targets are float32 (regression values or 0/1 labels). Inputs are standard-scaled with statistics of the
    training rows only, then clipped to +-`clip_features` if given (California's AveOccup reaches 88
    standard deviations: one such row blows up batch-1 SGD); the target is
    left in its own units.
    """
    ds = load(dataset, data_dir=data_dir, **({"max_value": max_target} if max_target is not None else {}))
    n_rows = len(ds.y)
    n_val = validation_rows if validation_rows is not None else int(round(validation_fraction * n_rows))
    n_train = train_rows if train_rows is not None else n_rows - n_val
    if n_val < 1 or n_train < 1 or n_val + n_train > n_rows:
        raise ValueError(f"{dataset} has {n_rows} rows; cannot take {n_train} training and {n_val} validation rows")
    order = np.random.default_rng(seed).permutation(n_rows)
    val_idx, train_idx = order[:n_val], order[n_val : n_val + n_train]
    scaler = StandardScaler.fit(ds.x, rows=train_idx)
    limit = np.inf if clip_features is None else clip_features
    scaled = lambda idx: np.clip(scaler.transform(ds.x[idx].astype(np.float32)), -limit, limit)  # noqa: E731
    return SplitData(
        name=ds.name,
        source=str(ds.source),
        x_train=scaled(train_idx),
        y_train=ds.y[train_idx].astype(np.float32),
        x_val=scaled(val_idx),
        y_val=ds.y[val_idx].astype(np.float32),
    )


@dataclass
class TrainResult:
    """One training run: the history, per-epoch dropout-off evaluations, compile time and trace count."""

    history: History
    train_logs: list[dict[str, float]] = field(default_factory=list)  # all training rows, dropout off, after each epoch
    val_logs: list[dict[str, float]] = field(default_factory=list)
    compile_seconds: float | None = None
    traces: int = 0
    steps_per_epoch: int = 0

    @property
    def epoch_seconds(self) -> list[float]:
        return list(self.history.values["epoch_seconds"])

    @property
    def train_loss(self) -> list[float]:
        return [logs["loss"] for logs in self.train_logs]

    @property
    def val_loss(self) -> list[float]:
        return [logs["loss"] for logs in self.val_logs]


def train_mlp(
    data: SplitData,
    *,
    hidden: tuple[int, ...],
    optimizer: OptimizerConfig,
    batch_size: int,
    epochs: int,
    seed: int,
    dropout: float = 0.0,
    task: str = "regression",
    warmup: bool = False,
) -> TrainResult:
    """Train an MLP on `data`; the epoch's loss on every training and validation row is recorded after each epoch.

    The evaluations run in the `on_epoch_end` callback, after `epoch_seconds`
    is taken, so the history's epoch times are training alone. With `warmup`
    a throw-away one-epoch fit compiles the programs first: the recorded
    epochs then contain no compilation, and `compile_seconds` is the warm-up's
    time minus the median epoch.
    """
    trainer = Trainer(TASKS[task])
    n_rows = len(data.y_train)
    batch_size = min(batch_size, n_rows)
    steps_per_epoch = -(-n_rows // batch_size)
    model = MLP(widths=hidden, out_features=1, dropout=dropout, head=TASKS[task].head)
    fit = FitConfig(epochs=epochs, batch_size=batch_size, seed=seed, progress=False)
    tx = make_optimizer(
        optimizer, steps_per_epoch
    )  # one instance: the optimizer is static in the state, a new one retraces
    warm_seconds = None
    if warmup:
        started = time.perf_counter()
        warm = FitConfig(epochs=1, batch_size=batch_size, seed=seed, progress=False)
        fitting.fit_model(model, tx, data.x_train, data.y_train, warm, jax.random.key(seed), trainer)
        warm_seconds = time.perf_counter() - started
    result = TrainResult(History(), steps_per_epoch=steps_per_epoch)

    def record(epoch: int, logs: Any, state: Any) -> None:
        result.train_logs.append(trainer.evaluate(state, data.x_train, data.y_train))
        result.val_logs.append(trainer.evaluate(state, data.x_val, data.y_val))

    result.history = fitting.fit_model(
        model, tx, data.x_train, data.y_train, fit, jax.random.key(seed), trainer, on_epoch_end=record
    ).history
    result.traces = trainer.traces["train"]
    if warm_seconds is not None:
        result.compile_seconds = max(0.0, warm_seconds - float(np.median(result.epoch_seconds)))
    return result


def _epochs(n: int) -> np.ndarray:
    return np.arange(1, n + 1)


# ---------------------------------------------------------------- batch size


def run_batch_size(config: BatchSizeConfig, workdir: Path) -> dict[str, Any]:
    """Train once per batch size; plot loss against epochs and against seconds; returns the metrics."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = tabular_split(
        config.dataset,
        seed=config.seed,
        train_rows=config.train_rows,
        validation_rows=config.validation_rows,
        max_target=config.max_target,
        clip_features=config.clip_features,
        data_dir=config.data_dir,
    )
    m = len(data.y_train)
    sizes = [b for b in config.batch_sizes if b < m] + ([m] if config.full_batch else [])
    if not sizes:
        raise ValueError(
            f"no batch size to run: batch_sizes {config.batch_sizes} are all >= the {m} training rows "
            "and full_batch is off"
        )
    optimizer = OptimizerConfig(config.optimizer, config.learning_rate)
    rows, by_epoch, by_time = [], [], []
    for size in sizes:
        label = f"batch GD (batch = m = {m})" if size == m else ("SGD (batch 1)" if size == 1 else f"mini-batch {size}")
        run = train_mlp(
            data,
            hidden=config.hidden,
            optimizer=optimizer,
            batch_size=size,
            epochs=config.epochs,
            seed=config.seed,
            warmup=True,
        )
        seconds = np.cumsum(run.epoch_seconds)
        by_epoch.append(Series(label, _epochs(len(run.train_loss)), np.asarray(run.train_loss), marker="."))
        by_time.append(Series(label, seconds, np.asarray(run.train_loss), marker="."))
        rows.append(
            {
                "method": label,
                "batch_size": size,
                "steps_per_epoch": run.steps_per_epoch,
                "compile_seconds": run.compile_seconds,
                "mean_epoch_seconds": float(np.mean(run.epoch_seconds)),
                "ms_per_step": 1e3 * float(np.mean(run.epoch_seconds)) / run.steps_per_epoch,
                "train_seconds": float(seconds[-1]),
                "final_train_mse": run.train_loss[-1],
                "final_val_mse": run.val_loss[-1],
                "train_traces": run.traces,
            }
        )
    title = f"{data.name}: {config.optimizer} at lr {config.learning_rate:g}, {m} training rows"
    files = {
        "loss against epochs and seconds": line_panels(
            [
                Panel(
                    "training MSE after each epoch",
                    "epoch",
                    "training MSE (all rows, end of epoch)",
                    by_epoch,
                    logy=True,
                    integer_x=True,
                ),
                Panel(
                    "the same against training time",
                    "wall-clock seconds (compilation excluded)",
                    "training MSE",
                    by_time,
                    logy=True,
                    logx=True,
                ),
            ],
            workdir / "batch_size.png",
            title=title,
            panel_size=(6.0, 4.4),
        ).name
    }
    metrics: dict[str, Any] = {"n_train": m, "n_validation": len(data.y_val), "runs": rows}
    best = min(rows, key=lambda r: r["final_train_mse"])
    metrics["best_method"] = best["method"]
    columns = [
        "method",
        "steps_per_epoch",
        "compile_seconds",
        "mean_epoch_seconds",
        "ms_per_step",
        "final_train_mse",
        "final_val_mse",
    ]
    sections = [
        (
            "Setup",
            f"{config.epochs} epochs of {config.optimizer} (lr {config.learning_rate:g}) on {m} scaled "
            f"training rows of `{data.source}` (inputs clipped to +-{config.clip_features}), network "
            f"{list(config.hidden)}. Each epoch is one compiled call; a one-epoch warm-up compiles "
            "first, so epoch times are training only. MSE is measured on every row after each epoch, "
            "dropout off.",
        ),
        ("Results", report.markdown_table(rows, columns)),
        (
            "Reading",
            "Per epoch, small batches take many more steps and reach a lower loss; per step, a big "
            "batch uses the CPU's vector units better, so an epoch of batch GD is cheap but moves the "
            "weights only once. SGD's steps are noisy and cannot be vectorised.",
        ),
    ]
    report.write_run(
        workdir,
        config,
        {**metrics, "provenance": provenance.collect()},
        "Batch vs mini-batch vs stochastic gradient descent",
        sections,
        files,
    )
    return metrics


# ---------------------------------------------------------------- optimizers


def run_optimizers(config: OptimizersConfig, workdir: Path) -> dict[str, Any]:
    """Train once per optimizer (and once with decay); plot losses and the learning rate; returns the metrics."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = tabular_split(
        config.dataset,
        seed=config.seed,
        train_rows=config.train_rows,
        validation_rows=config.validation_rows,
        validation_fraction=config.validation_fraction,
        max_target=config.max_target,
        clip_features=config.clip_features,
        data_dir=config.data_dir,
    )
    runs = {name: OptimizerConfig(name) for name in config.optimizers}
    if config.decay:
        runs[f"{config.decay_optimizer} + decay"] = OptimizerConfig(
            config.decay_optimizer, config.decay_learning_rate, decay=config.decay
        )
    train_curves, val_curves, lr_curves, rows = [], [], [], []
    decay_error = None
    for label, optimizer in runs.items():
        run = train_mlp(
            data,
            hidden=config.hidden,
            optimizer=optimizer,
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=config.seed,
        )
        lrs = np.asarray(run.history.values["lr"])
        epochs = _epochs(len(lrs))
        rate = lrs[0] if not optimizer.decay else optimizer.learning_rate
        name = f"{label} (a0 = {rate:g}, decay {optimizer.decay:g})" if optimizer.decay else f"{label} (lr {rate:g})"
        train_curves.append(Series(name, epochs, np.asarray(run.history.values["loss"])))
        val_curves.append(Series(name, epochs, np.asarray(run.val_loss)))
        lr_curves.append(
            Series(name, epochs, lrs, style=("-", "--")[len(lr_curves) % 2])
        )  # equal rates overlap: alternate styles
        if optimizer.decay:
            formula = optimizer.learning_rate / (1.0 + optimizer.decay * (epochs - 1))
            decay_error = float(np.max(np.abs(lrs - formula) / formula))
        rows.append(
            {
                "optimizer": label,
                "lr_first_epoch": float(lrs[0]),
                "lr_last_epoch": float(lrs[-1]),
                "final_train_loss": run.train_loss[-1],
                "final_val_loss": run.val_loss[-1],
                "best_val_loss": float(np.min(run.val_loss)),
                "train_seconds": float(np.sum(run.epoch_seconds)),
            }
        )
    files = {
        "training and validation loss, learning rate": line_panels(
            [
                Panel(
                    "training loss (running mean over the epoch)",
                    "epoch",
                    "training MSE",
                    train_curves,
                    logy=True,
                    integer_x=True,
                ),
                Panel(
                    "validation loss (end of epoch)", "epoch", "validation MSE", val_curves, logy=True, integer_x=True
                ),
                Panel("learning rate per epoch", "epoch", "learning rate", lr_curves, logy=True, integer_x=True),
            ],
            workdir / "optimizers.png",
            title=f"{data.name}: optimizers, batch {config.batch_size}, {len(data.y_train)} training rows",
            panel_size=(5.2, 4.2),
        ).name
    }
    metrics: dict[str, Any] = {
        "n_train": len(data.y_train),
        "n_validation": len(data.y_val),
        "runs": rows,
        "best_optimizer": min(rows, key=lambda r: r["final_val_loss"])["optimizer"],
    }
    if decay_error is not None:
        metrics["decay_lr_max_relative_error"] = decay_error
    sections = [
        (
            "Setup",
            f"{config.epochs} epochs, batch {config.batch_size}, network {list(config.hidden)}, MSE on "
            f"scaled `{data.source}`. Keras's default rates (SGD 0.01, momentum 0.01 with 0.9, RMSprop "
            "0.001, Adam 0.001)"
            + (
                f"; the decay run uses a = {config.decay_learning_rate:g} / (1 + {config.decay:g} * epoch), "
                f"which its logged rates follow to a relative error of {decay_error:.1e}."
                if decay_error is not None
                else "."
            ),
        ),
        ("Results", report.markdown_table(rows)),
    ]
    report.write_run(
        workdir,
        config,
        {**metrics, "provenance": provenance.collect()},
        "Optimizers: SGD, momentum, RMSprop, Adam and learning-rate decay",
        sections,
        files,
    )
    return metrics
