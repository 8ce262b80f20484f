"""Matplotlib figures for run reports (Agg backend: no screen needed).

Each function draws one figure, saves it as PNG at `path` and closes it. Inside a command-line run
(`dlchapter.reporting.helper_process`) the figures are drawn in the helper process: the call returns
`path` at once, and matplotlib is never imported by the training process.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlchapter.reporting import safe_write
from dlchapter.reporting.figures import needs_log_scale
from dlchapter.reporting.helper_process import drawn_in_helper

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def __getattr__(name: str) -> Any:
    """`plt` (matplotlib.pyplot) for callers that draw with it; imported on first use, not by this module."""
    if name == "plt":
        import matplotlib.pyplot as plt

        return plt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """pyplot's `subplots` without pyplot (its import and figure manager): a bare `Figure`, saved by `save_figure`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def save_figure(fig: Figure, path: Path, *, tight: bool = True) -> Path:
    """Lay out (`tight_layout`, unless `tight` is False: the caller placed the axes), save at `path` (PNG unless
    its suffix names another format) through the safe-write helper; close `fig`."""
    path = Path(path)
    try:
        if tight:
            fig.tight_layout()
        with safe_write.atomic_open(path) as handle:  # never through a link planted at `path`
            fig.savefig(handle, format=path.suffix.lstrip(".") or "png", dpi=DPI)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:  # a figure drawn with pyplot (concept_plots, compare) is closed there
            pyplot.close(fig)
    return path


# The training curves' margins in inches (matplotlib's defaults: 10 pt tick labels, 12 pt titles): left for the
# y label and tick labels of up to 8 characters (the widest ScalarFormatter writes before it switches to an offset
# or scientific notation shown above the axes: "-900000", "-0.00009"; tests/reporting/test_curves_layout.py),
# top for a title and a suptitle (the panels' titles alone: "top_untitled"), and the gap between panels for the
# next panel's y label and tick labels. Fixed instead of `tight_layout`, whose extra layout pass cost 0.07 s of
# the figure's 0.2 s on a 2-core CPU: the longest figure of a run, which the run waits for (benchmarks/NOTES.md).
CURVES_MARGINS_IN = {"left": 1.0, "right": 0.2, "bottom": 0.5, "top": 0.65, "top_untitled": 0.4, "gap": 1.2}


def curves_figure(history: Mapping[str, Sequence[float]], best_epoch: int | None = None, title: str = "") -> Figure:
    """The figure `training_curves` saves: one panel per metric with its training and validation curves, the best
    epoch marked, laid out with `CURVES_MARGINS_IN`."""
    from matplotlib.ticker import MaxNLocator

    names = [k for k in history if not k.startswith("val_") and k not in ("lr", "epoch_seconds")]
    width, height = 4.5 * len(names), 3.6
    fig, axes = _subplots(1, len(names), figsize=(width, height), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs, also in short runs
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker=".", label=f"training {name}")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker=".", label=f"validation {name}")
        if needs_log_scale(history[name], history.get(f"val_{name}", ())):  # curves spanning > 2 decades
            ax.set_yscale("log")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        if len(epochs) == 1:
            ax.set_xlim(0.5, 1.5)  # room for the whole-number tick of the one epoch
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lines = textwrap.wrap(title, max(20, int(width * 9)))  # ~9 characters of a 12 pt title per inch
    if lines:
        fig.suptitle("\n".join(lines))
    margins = CURVES_MARGINS_IN
    panel = (width - margins["left"] - margins["right"] - margins["gap"] * (len(names) - 1)) / len(names)
    fig.subplots_adjust(
        left=margins["left"] / width,
        right=1 - margins["right"] / width,
        bottom=margins["bottom"] / height,
        top=1 - (margins["top"] + 0.2 * (len(lines) - 1) if lines else margins["top_untitled"]) / height,
        wspace=margins["gap"] / panel,
    )
    return fig


@drawn_in_helper
def training_curves(
    history: Mapping[str, Sequence[float]], path: Path, best_epoch: int | None = None, title: str = ""
) -> Path:
    """One panel per metric with its training and validation curves; the best epoch marked (`curves_figure`)."""
    return save_figure(curves_figure(history, best_epoch, title), path, tight=False)


@drawn_in_helper
def actual_vs_predicted(
    y_true: np.ndarray, y_pred: np.ndarray, path: Path, *, r2: float, r2_corr: float, target: str, title: str = ""
) -> Path:
    """Scatter of predictions against targets with the identity line and both R2s."""
    fig, ax = _subplots(figsize=(5.5, 5.0))
    ax.scatter(y_true, y_pred, s=4, alpha=0.3, label="test rows")
    low, high = float(min(np.min(y_true), np.min(y_pred))), float(max(np.max(y_true), np.max(y_pred)))
    ax.plot([low, high], [low, high], color="red", linewidth=1, label="identity (perfect prediction)")
    ax.set_xlabel(f"actual {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(title or "actual vs predicted")
    ax.text(
        0.03,
        0.97,
        f"R2 = 1 - SSE/SST = {r2:.4f}\nR2 = corr^2 = {r2_corr:.4f}",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
        bbox={"facecolor": "white", "alpha": 0.8},
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


@drawn_in_helper
def confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str = "confusion matrix"
) -> Path:
    """A labelled heat map of counts (true classes in rows)."""
    size = max(4.5, 0.6 * len(class_names) + 2.5)
    fig, ax = _subplots(figsize=(size, size * 0.85))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if matrix[i, j] > threshold else "black",
                fontsize=9,
            )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return save_figure(fig, path)


@drawn_in_helper
def roc(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray, area: float, path: Path, every: int = 10) -> Path:
    """The ROC curve with every `every`-th threshold written beside its point."""
    fig, ax = _subplots(figsize=(5.5, 5.0))
    ax.plot(fpr, tpr, marker=".", markersize=3, label=f"model (AUC = {area:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    for k in range(1, len(thresholds), every):
        ax.annotate(
            f"{thresholds[k]:.2f}",
            (fpr[k], tpr[k]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
            color="darkred",
        )
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve (labels: decision thresholds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


@drawn_in_helper
def image_grid(images: np.ndarray, labels: Sequence[str], path: Path, columns: int = 8, title: str = "") -> Path:
    """Grey-scale images in a grid, each titled with its label."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = _subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, label in zip(axes.ravel(), images, labels):
        ax.imshow(np.asarray(image).squeeze(), cmap="gray_r")
        ax.set_title(str(label), fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


@drawn_in_helper
def lines(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
) -> Path:
    """Several labelled (x, y) curves on one axis."""
    fig, ax = _subplots(figsize=(7.0, 4.2))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, linewidth=1.2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@drawn_in_helper
def model_comparison(predictions: Mapping[str, np.ndarray], y_true: np.ndarray, path: Path, *, target: str) -> Path:
    """Side by side: each model's actual-vs-predicted scatter, titled with its test MSE."""
    fig, axes = _subplots(1, len(predictions), figsize=(5.0 * len(predictions), 4.6), squeeze=False, sharey=True)
    low, high = float(np.min(y_true)), float(np.max(y_true))
    for ax, (name, y_pred) in zip(axes[0], predictions.items()):
        mse = float(np.mean((np.asarray(y_pred) - y_true) ** 2))
        ax.scatter(y_true, y_pred, s=4, alpha=0.3)
        ax.plot([low, high], [low, high], color="red", linewidth=1, label="identity")
        ax.set_title(f"{name}: test MSE {mse:.4f}")
        ax.set_xlabel(f"actual {target}")
        ax.set_ylabel(f"predicted {target}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
