"""The training curves' fixed margins (`plots.CURVES_MARGINS_IN`, no `tight_layout`): nothing is cut off at the
figure's edges and no panel's labels run into the next panel or the title, for the values runs produce."""

from __future__ import annotations

import numpy as np
import pytest

from dlchapter.reporting import plots


def _history(names: list[str], curve: np.ndarray) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {}
    for i, name in enumerate(names):
        history[name] = list(curve * (1 + 0.1 * i))
        history[f"val_{name}"] = list(curve * (1.2 + 0.1 * i))
    history["lr"] = [1e-3] * len(curve)
    return history


EPOCHS = np.arange(1, 31)
HISTORIES = {
    "diamonds (log axis, 1e7)": _history(["loss", "mae", "rmse"], 1.8e7 / EPOCHS**2),
    "tiny losses (1e-6)": _history(["loss"], 3e-6 / EPOCHS),
    "accuracy near one": _history(["loss", "accuracy", "auc"], 0.98765 + 0.00001 * EPOCHS),
    "negative values": _history(["loss", "r2"], -1500.0 + 10 * EPOCHS),
    "six-digit values": _history(["loss", "mse"], 250_000.0 - 1000 * EPOCHS),
    "widest labels (-900000)": _history(["loss", "r2"], -990_000.0 + 30_000 * EPOCHS),
    "widest labels (-0.00009)": _history(["loss", "r2"], -0.00009 + 0.000003 * EPOCHS),
    "long names": _history(["sparse_categorical_crossentropy", "top_5_accuracy", "mean_absolute_error"], 1 / EPOCHS),
    "one epoch": _history(["loss"], np.array([0.5])),
    "five panels": _history(["loss", "accuracy", "precision", "recall", "auc"], 0.5 + 0.01 * EPOCHS),
}


LONG_TITLE = "tabular: " + "a_very_long_file_name_of_the_users_own_csv_" * 3 + "data (regression, seed 0)"


@pytest.mark.parametrize("title", ["", "diamonds: the chapter's network, improved", LONG_TITLE])
@pytest.mark.parametrize("case", sorted(HISTORIES))
def test_curves_fit_the_figure_and_panels_do_not_overlap(case, title):
    fig = plots.curves_figure(HISTORIES[case], best_epoch=1, title=title)
    fig.canvas.draw()  # Agg: lays out every text
    whole = fig.bbox
    panels = [ax.get_tightbbox() for ax in fig.axes]  # each panel with its drawn tick labels, labels, title, legend
    titles = [fig._suptitle.get_window_extent()] if title else []
    for box in panels + titles:
        assert whole.x0 - 0.5 <= box.x0 and box.x1 <= whole.x1 + 0.5, (case, box, whole)
        assert whole.y0 - 0.5 <= box.y0 and box.y1 <= whole.y1 + 0.5, (case, box, whole)
    for ax, panel in zip(fig.axes, panels):
        assert panel.width > ax.bbox.width + 20 and panel.height > ax.bbox.height + 20  # labels counted
    for left, right in zip(panels, panels[1:]):
        assert left.x1 < right.x0, (case, "a panel's labels reach into the next panel")
    for top in titles:
        assert all(top.y0 > panel.y1 for panel in panels), (case, "the title overlaps a panel")


def test_the_fixed_margins_leave_less_than_an_inch_unused_beside_the_labels():
    fig = plots.curves_figure(HISTORIES["diamonds (log axis, 1e7)"], best_epoch=1, title="t")
    fig.canvas.draw()
    left_edge = min(ax.get_tightbbox().x0 for ax in fig.axes) / fig.dpi
    assert left_edge < 0.5  # inches of blank margin on the left: the margins are not just made huge


@pytest.mark.parametrize("epochs", [1, 2, 3, 30])
def test_the_epoch_axis_has_whole_numbers_only(epochs):
    fig = plots.curves_figure(_history(["loss"], 1.0 / np.arange(1, epochs + 1)), best_epoch=1)
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
