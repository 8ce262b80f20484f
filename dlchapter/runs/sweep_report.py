"""The configurations of a sweep and its report: the search space, per-configuration scores, files.

`configurations` draws the grid or random points (`Configuration`); after the models have trained
(`dlchapter.runs.sweep_runs.run_sweep`), `configuration_table` summarizes each configuration's validation
scores (mean and std over seeds and folds), `rank_configurations` orders them, `validation_curves` draws the figure and
`write_sweep` writes the run directory (summary.md, metrics.json, models.csv, histories.npz).
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
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.sweep import SweepResult
from dlchapter.presets.run_configs import SweepRunConfig
from dlchapter.reporting import provenance, report, safe_write, scores


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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    undefined = [v for v in values if scores.is_undefined(v)]
    if undefined:  # e.g. an AUC on a fold with one class: the configuration's mean is undefined too
        reason = scores.Undefined(f"undefined on {len(undefined)} of {len(values)} runs ({undefined[0].reason})")
        return reason, reason
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def rank_configurations(table: list[dict[str, Any]], select: str) -> list[dict[str, Any]]:
    """Configurations best first by mean `select` (non-finite last)."""
    sign = -1.0 if EarlyStopping(select).maximize else 1.0
    return sorted(table, key=lambda r: sign * r[f"{select} mean"] if np.isfinite(r[f"{select} mean"]) else np.inf)


def configuration_table(configs: list[Configuration], models: list[dict], select: str) -> list[dict[str, Any]]:
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
            row[f"{name} mean"], row[f"{name} std"] = mean_std([m[name] for m in rows])
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
    ranked = rank_configurations(table, select)[:top]
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


def write_sweep(
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
    ranked = rank_configurations(table, select)
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
