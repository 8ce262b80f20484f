"""Hold-out vs k-fold validation of the chapter's Pima diabetes network.

The network is the chapter's (100 relu, 8 relu, 1 sigmoid; binary
cross-entropy; Adam). Each split standardizes the inputs with its own
training rows (`dlchapter.engine.crossval`), trains a fresh network for a fixed
number of epochs with the same seed, and scores accuracy and ROC AUC on its
validation rows, so the spread across splits comes from the data alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from dlchapter.concepts.concept_plots import fold_scores
from dlchapter.data import load
from dlchapter.engine import fitting
from dlchapter.engine.crossval import FitAndScore, cross_validate, holdout_splits, kfold_splits, summarize
from dlchapter.engine.optim import OptimizerConfig
from dlchapter.engine.train import TASKS, FitConfig, Trainer
from dlchapter.models.dense import MLP
from dlchapter.presets.run_configs import ValidationConfig  # defined apart: `run NAME --help` needs no JAX
from dlchapter.reporting import provenance, report, scores

SCORES = ("accuracy", "auc")


def binary_mlp_scorer(config: ValidationConfig) -> FitAndScore:
    """fit_and_score for `cross_validate`: train the configured network, return loss, accuracy and AUC."""
    trainer = Trainer(TASKS["binary"])
    model = MLP(widths=config.hidden, out_features=1, head="sigmoid")

    def fit_and_score(
        x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, index: int
    ) -> dict[str, float]:
        fit = FitConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed, progress=False)
        state = fitting.fit_model(
            model,
            OptimizerConfig(config.optimizer, config.learning_rate),
            x_train,
            y_train.astype(np.float32),
            fit,
            jax.random.key(config.seed),
            trainer,
        ).state
        p_val = trainer.predict(state, x_val).ravel()
        loss = trainer.evaluate(state, x_val, y_val.astype(np.float32))["loss"]
        auc = scores.binary_auc(y_val, p_val, f"the validation labels of split {index + 1}")  # Undefined with one class
        return {"loss": loss, "accuracy": float(np.mean((p_val > config.threshold) == (y_val == 1))), "auc": auc}

    return fit_and_score


def _holdout_note(config: ValidationConfig) -> str:
    repeats = (
        ""
        if config.holdout_repeats == 1
        else (
            " The other splits (seeds "
            f"{', '.join(str(config.seed + r) for r in range(1, config.holdout_repeats))}) show how "
            "that number moves with the rows held out."
        )
    )
    return (
        f"A hold-out user reports split 1 alone.{repeats} k-fold validates every row exactly once "
        "and reports the mean, with the fold-to-fold spread as its uncertainty."
    )


def run_validation(config: ValidationConfig, workdir: Path) -> dict[str, Any]:
    """Hold-out and k-fold scores of the chapter's network; returns the metrics."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ds = load(config.dataset, data_dir=config.data_dir)
    x, y = ds.x.astype(np.float32), np.asarray(ds.y)
    stratify = y if config.stratify else None
    scorer = binary_mlp_scorer(config)
    folds = cross_validate(x, y, kfold_splits(len(y), config.k, seed=config.seed, stratify=stratify), scorer)
    holdouts = cross_validate(
        x,
        y,
        holdout_splits(
            len(y), config.holdout_fraction, repeats=config.holdout_repeats, seed=config.seed, stratify=stratify
        ),
        scorer,
    )
    fold_summary, holdout_summary = summarize(folds), summarize(holdouts)
    metrics: dict[str, Any] = {"n_rows": int(len(y)), "k": config.k, "folds": folds, "holdout_splits": holdouts}
    for name in SCORES:
        metrics[f"kfold_{name}_mean"] = fold_summary[name]["mean"]
        metrics[f"kfold_{name}_std"] = fold_summary[name]["std"]
        metrics[f"holdout_{name}"] = holdouts[0][name]  # the single split a hold-out user would report
        metrics[f"holdout_{name}_mean"] = holdout_summary[name]["mean"]
        metrics[f"holdout_{name}_std"] = holdout_summary[name]["std"]
    labels = {"accuracy": "accuracy", "auc": "AUC"}
    files = {
        "fold scores": fold_scores(
            {labels[n]: [row[n] for row in folds] for n in SCORES},
            {labels[n]: [row[n] for row in holdouts] for n in SCORES},
            workdir / "fold_scores.png",
            title=(
                f"{ds.name}: {config.k}-fold vs hold-out ({config.holdout_fraction:g} held out), network "
                f"{list(config.hidden)}, {config.epochs} epochs"
            ),
        ).name
    }
    summary_rows = [
        {
            "method": f"{config.k}-fold",
            **{f"{labels[n]} mean": fold_summary[n]["mean"] for n in SCORES},
            **{f"{labels[n]} std": fold_summary[n]["std"] for n in SCORES},
        },
        {
            "method": f"hold-out x{config.holdout_repeats}",
            **{f"{labels[n]} mean": holdout_summary[n]["mean"] for n in SCORES},
            **{f"{labels[n]} std": holdout_summary[n]["std"] for n in SCORES},
        },
    ]
    columns = ["split", "n_train", "n_val", "loss", *SCORES]
    sections = [
        (
            "Setup",
            f"{len(y)} rows of `{ds.source}`; network {list(config.hidden)} -> 1 sigmoid, binary "
            f"cross-entropy, {config.optimizer}, {config.epochs} epochs, batch {config.batch_size}, "
            "same seed in every split. Inputs standardized on each split's training rows only. "
            f"Accuracy at threshold {config.threshold}; AUC from the ROC curve. std is the sample "
            "standard deviation (ddof=1).",
        ),
        ("Mean +- std", report.markdown_table(summary_rows)),
        (f"{config.k}-fold: each validation fold", report.markdown_table(folds, columns)),
        ("Hold-out splits", report.markdown_table(holdouts, columns) + "\n\n" + _holdout_note(config)),
    ]
    report.write_run(
        workdir,
        config,
        {**metrics, "provenance": provenance.collect()},
        "Hold-out and k-fold validation",
        sections,
        files,
    )
    return metrics
