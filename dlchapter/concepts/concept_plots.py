"""Figures for the chapter's concept experiments (Agg backend: no screen needed).

`line_panels` draws any grid of labelled line plots (training curves, loss
against epochs or seconds, an activation and its derivative); the other
functions draw one special figure each: softmax vs hardmax bars, a decision
boundary over 2-feature data, and cross-validation fold scores. Each saves a
PNG at `path`, closes the figure and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dlchapter.reporting.plots import save_figure  # noqa: E402


@dataclass(frozen=True)
class Series:
    """One labelled curve; `style` is a matplotlib line style ("-", "--", ":")."""

    label: str
    x: np.ndarray
    y: np.ndarray
    style: str = "-"
    color: str | None = None
    marker: str | None = None


@dataclass(frozen=True)
class Panel:
    """One axis: its curves, labels, optional log scales and labelled horizontal lines."""

    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    logy: bool = False
    logx: bool = False
    hlines: Mapping[str, float] = field(default_factory=dict)
    zero_axes: bool = False  # draw the x = 0 and y = 0 axes (function plots)
    integer_x: bool = False  # whole-number ticks only (epochs, folds)


def line_panels(
    panels: Sequence[Panel],
    path: Path,
    *,
    title: str = "",
    columns: int | None = None,
    panel_size: tuple[float, float] = (4.8, 3.6),
) -> Path:
    """A grid of line plots, one `Panel` each, with a legend per panel."""
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows + (0.4 if title else 0)), squeeze=False
    )
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels):
        if panel.zero_axes:
            ax.axhline(0, color="black", linewidth=0.6)
            ax.axvline(0, color="black", linewidth=0.6)
        for s in panel.series:
            ax.plot(
                s.x, s.y, linestyle=s.style, color=s.color, marker=s.marker, markersize=3, linewidth=1.4, label=s.label
            )
        for label, value in panel.hlines.items():
            ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=label)
        if panel.logy:
            ax.set_yscale("log")
        if panel.logx:
            ax.set_xscale("log")
        if panel.integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def softmax_hardmax(inputs: Sequence[float], soft: Sequence[float], hard: Sequence[float], path: Path) -> Path:
    """Side-by-side bars of softmax and hardmax for the same inputs, each bar labelled."""
    labels = [f"z{i + 1} = {v:g}" for i, v in enumerate(inputs)]
    positions = np.arange(len(inputs))
    width = 0.38
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    bars_soft = ax.bar(positions - width / 2, soft, width, label=f"softmax (sum {float(np.sum(soft)):.4f})")
    bars_hard = ax.bar(positions + width / 2, hard, width, label="hardmax (one-hot of the arg-max)")
    ax.bar_label(bars_soft, fmt="%.3f", fontsize=8)
    ax.bar_label(bars_hard, fmt="%.0f", fontsize=8)
    ax.set_xticks(positions, labels=labels)
    ax.set_xlabel("input z")
    ax.set_ylabel("output probability")
    ax.set_ylim(0, 1.12)
    ax.set_title("softmax vs hardmax of z = (" + ", ".join(f"{v:g}" for v in inputs) + ")")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)


def decision_boundary(
    x_Nx2: np.ndarray,
    y_N: np.ndarray,
    boundaries: Mapping[str, tuple[np.ndarray, float]],
    path: Path,
    *,
    title: str,
    shade: tuple[np.ndarray, float] | None = None,
) -> Path:
    """The two classes as points and each model's line w . x + b = 0; `shade` colours sigmoid(w . x + b)."""
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    low, high = x_Nx2.min(axis=0) - 0.5, x_Nx2.max(axis=0) + 0.5
    if shade is not None:
        g0, g1 = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
        w, b = shade
        prob = 1.0 / (1.0 + np.exp(-(w[0] * g0 + w[1] * g1 + b)))
        image = ax.contourf(g0, g1, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="predicted P(y = 1)")
    for label, marker, color in ((0, "o", "tab:blue"), (1, "^", "tab:red")):
        rows = y_N == label
        ax.scatter(x_Nx2[rows, 0], x_Nx2[rows, 1], s=10, marker=marker, color=color, alpha=0.6, label=f"y = {label}")
    xs = np.linspace(low[0], high[0], 2)
    styles = (("-", "black", 2.6), ("--", "gold", 1.6), (":", "dimgray", 1.6), ("-.", "green", 1.4))
    for (name, (w, b)), (style, color, width) in zip(boundaries.items(), styles):
        label = f"{name}: w = ({w[0]:.3f}, {w[1]:.3f}), b = {b:.3f}"
        if abs(w[1]) > 1e-12:
            ax.plot(xs, -(w[0] * xs + b) / w[1], linestyle=style, color=color, linewidth=width, label=label)
        else:
            ax.axvline(-b / w[0], linestyle=style, color=color, linewidth=width, label=label)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel("feature x1")
    ax.set_ylabel("feature x2")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    return save_figure(fig, path)


def fold_scores(
    scores: Mapping[str, Sequence[float]], holdout: Mapping[str, Sequence[float]], path: Path, *, title: str
) -> Path:
    """One panel per score: a bar per fold, the mean and a mean +- std band, hold-out scores as points."""
    names = list(scores)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = np.asarray(scores[name], np.float64)  # NaN: a score undefined on that split (drawn as a label)
        folds = np.arange(1, values.size + 1)
        defined = values[~np.isnan(values)]
        bars = ax.bar(folds, np.nan_to_num(values), color="tab:blue", alpha=0.75, label="k-fold: validation fold")
        ax.bar_label(bars, labels=["undefined" if np.isnan(v) else f"{v:.3f}" for v in values], fontsize=8)
        if defined.size == values.size:
            mean, std = defined.mean(), defined.std(ddof=1) if defined.size > 1 else 0.0
            ax.axhline(mean, color="black", linewidth=1.2, label=f"k-fold mean {mean:.3f} +- {std:.3f}")
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.2)
        held = np.asarray(holdout.get(name, ()), np.float64)
        held = held[~np.isnan(held)]
        if held.size:
            xs = np.full(held.size, values.size + 1.0)
            ax.scatter(
                xs,
                held,
                color="tab:red",
                marker="D",
                zorder=3,
                label=f"hold-out ({held.size} split(s)): {held.mean():.3f}",
            )
        ax.set_xticks([*folds, values.size + 1], labels=[*(f"fold {f}" for f in folds), "hold-out"])
        low = min(defined.min() if defined.size else 1.0, held.min() if held.size else 1.0)
        ax.set_ylim(min(0.5, low - 0.05), 1.0)  # 0.5: chance for balanced accuracy and for AUC
        ax.set_ylabel(name)
        ax.set_title(f"{name} on each validation fold")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.suptitle(title)
    return save_figure(fig, path)
