"""Overfitting and its cures: a too-large network on a few hundred rows, with and without L2 and dropout.

The default is a 4 x 512 network on 400 rows of the Pima diabetes data (binary
cross-entropy): without regularization the validation loss climbs as the
network grows confident on rows it memorised.

Four runs of the same network and data differ only in regularization: none,
Keras's L2 (penalty l2 * sum of squared kernel weights, `OptimizerConfig(l2=...)`),
dropout (`MLP(dropout=rate)`, the chapter's keep-prob = 1 - rate), and both.
After every epoch the loss on all training and validation rows is measured
with dropout off, so the train/validation gap is not blurred by dropout noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlchapter.concepts.concept_plots import Panel, Series, line_panels
from dlchapter.engine.optim import OptimizerConfig
from dlchapter.engine.train import TASKS
from dlchapter.presets.run_configs import OverfittingConfig  # defined apart: `run NAME --help` needs no JAX
from dlchapter.reporting import provenance, report
from dlchapter.runs.dynamics import tabular_split, train_mlp


def variants(config: OverfittingConfig) -> dict[str, tuple[float, float]]:
    """Run name -> (l2, dropout rate)."""
    return {
        "no regularization": (0.0, 0.0),
        f"L2 {config.l2:g}": (config.l2, 0.0),
        f"dropout {config.dropout:g}": (0.0, config.dropout),
        f"L2 {config.l2:g} + dropout {config.dropout:g}": (config.l2, config.dropout),
    }


def run_overfitting(config: OverfittingConfig, workdir: Path) -> dict[str, Any]:
    """Train the four variants; plot training vs validation loss; returns the metrics with each final gap."""
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
    panels, rows = [], []
    loss_name = TASKS[config.task].loss
    for label, (l2, rate) in variants(config).items():
        optimizer = OptimizerConfig(config.optimizer, config.learning_rate, l2=l2)
        run = train_mlp(
            data,
            hidden=config.hidden,
            optimizer=optimizer,
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=config.seed,
            dropout=rate,
            task=config.task,
        )
        epochs = np.arange(1, len(run.train_loss) + 1)
        train, val = np.asarray(run.train_loss), np.asarray(run.val_loss)
        panels.append(
            Panel(
                label,
                "epoch",
                loss_name,
                [
                    Series("training rows (dropout off)", epochs, train),
                    Series("validation rows", epochs, val, style="--"),
                ],
                logy=True,
                integer_x=True,
            )
        )
        best = int(np.argmin(val))
        rows.append(
            {
                "variant": label,
                "l2": l2,
                "dropout": rate,
                "final_train_loss": float(train[-1]),
                "final_val_loss": float(val[-1]),
                "final_gap": float(val[-1] - train[-1]),
                "best_val_loss": float(val[best]),
                "best_epoch": best + 1,
                **{f"final_val_{k}": v for k, v in run.val_logs[-1].items() if k != "loss"},
                "train_seconds": float(np.sum(run.epoch_seconds)),
            }
        )
    title = (
        f"{data.name}: {len(config.hidden)} x {config.hidden[0]} network on {config.train_rows} "
        f"training rows ({config.optimizer}, batch {config.batch_size})"
    )
    files = {
        "training vs validation loss": line_panels(
            panels, workdir / "overfitting.png", title=title, columns=2, panel_size=(5.4, 3.8)
        ).name
    }
    metrics: dict[str, Any] = {"n_train": config.train_rows, "n_validation": config.validation_rows, "runs": rows}
    metrics.update({f"final_gap[{r['variant']}]": r["final_gap"] for r in rows})
    columns = [
        "variant",
        "final_train_loss",
        "final_val_loss",
        "final_gap",
        "best_val_loss",
        "best_epoch",
        *(k for k in rows[0] if k.startswith("final_val_") and k != "final_val_loss"),
    ]
    sections = [
        (
            "Setup",
            f"{config.epochs} epochs, batch {config.batch_size}, {config.optimizer}, {loss_name}; "
            f"{config.train_rows} training and {config.validation_rows} validation rows of scaled "
            f"`{data.source}`. L2 is Keras's: l2 * sum of squared kernel weights added to the loss "
            f"(biases excluded). Dropout rate {config.dropout:g} after every hidden layer (keep-prob "
            f"{1 - config.dropout:g}). Losses are measured on all rows after each epoch with dropout "
            "off, and are the data loss alone (the L2 penalty is not added).",
        ),
        ("Final train/validation gap", report.markdown_table(rows, columns)),
        (
            "Reading",
            "Without regularization the training loss goes towards zero while the validation loss "
            "stalls or rises: the network memorises its few rows. L2 and dropout trade a higher "
            "training loss for a smaller gap.",
        ),
    ]
    report.write_run(
        workdir, config, {**metrics, "provenance": provenance.collect()}, "Overfitting, L2 and dropout", sections, files
    )
    return metrics
