"""`dlchapter compare DIR [DIR ...]`: a Markdown table and one figure comparing run directories.

Each DIR (or glob) is a run directory with config.json and metrics.json (and
history.csv for the curves). Runs whose configs are equal except for `seed`
form one group: the table shows, per group, the config fields that differ
between groups, the seeds, and every numeric `test_*` metric as the mean and
the sample standard deviation over the group's runs (ddof=1, the spread of
seeds; a group of one shows its value). The figure overlays every run's
validation curve (`--curve`, default val_loss, or loss when no run has
val_loss; one colour per group; log scale when the curves span more than two
decades). A `--curve` that no run's history.csv has, and an `--output` whose
directory does not exist, stop with one `error:` line before anything is written.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlchapter.reporting.events import read_history_csv
from dlchapter.reporting.figures import needs_log_scale

GROUP_IGNORES = ("seed",)  # runs that differ only in these are repeats of one config
HIDDEN_FIELDS = ("note",)  # prose, not a setting worth a column


class CompareError(ValueError):
    """A DIR argument that is not a run directory, or a glob that matches none."""


@dataclass
class Run:
    """One run directory as compare reads it."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, float]]

    @property
    def group_key(self) -> str:
        return json.dumps({k: v for k, v in self.config.items() if k not in GROUP_IGNORES}, sort_keys=True)


def expand(patterns: Sequence[str]) -> list[Path]:
    """The run directories `patterns` name (globs expanded, sorted, duplicates once); CompareError if one names none."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise CompareError(f"{pattern!r} matches no directory; give run directories (e.g. runs/iris_seed*)")
        paths += [Path(m) for m in matches if Path(m).is_dir() or not glob.has_magic(pattern)]
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    return unique


def load_run(path: Path) -> Run:
    """Read one run directory; CompareError naming the file when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise CompareError(f"{path} is not a directory; give run directories written by `dlchapter run`")
    loaded = {}
    for name in ("config.json", "metrics.json"):
        file = path / name
        if not file.is_file():
            raise CompareError(
                f"{path} is not a finished run directory: it has no {name} (run the experiment into it first)"
            )
        try:
            loaded[name] = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise CompareError(f"{file}: not valid JSON ({error}); rerun the experiment to rewrite it") from None
        if not isinstance(loaded[name], dict):
            raise CompareError(f"{file}: expected a JSON object, found {type(loaded[name]).__name__}")
    return Run(path, loaded["config.json"], loaded["metrics.json"], read_history_csv(path / "history.csv"))


def test_metric_names(runs: Sequence[Run]) -> list[str]:
    """Numeric `test_*` entries of any run's metrics.json, in first-seen order."""
    names: dict[str, None] = {}
    for run in runs:
        for key, value in run.metrics.items():
            if key.startswith("test_") and isinstance(value, (int, float)) and not isinstance(value, bool):
                names[key] = None
    return list(names)


def spread(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation with ddof=1, or None for one value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), (float(array.std(ddof=1)) if array.size > 1 else None)


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean, std = spread(values)
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.3g} (n={len(values)})"


def _value_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def groups_of(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs grouped by config minus `seed`, in the order groups first appear."""
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.group_key, []).append(run)
    return list(grouped.values())


def comparison_table(runs: Sequence[Run], relative_to: Path | None = None) -> str:
    """The Markdown table: one row per config group (see the module docstring)."""
    groups = groups_of(runs)
    fields = sorted({k for r in runs for k in r.config} - set(GROUP_IGNORES) - set(HIDDEN_FIELDS))
    differing = [f for f in fields if len({_value_text(g[0].config.get(f)) for g in groups}) > 1]
    metrics = test_metric_names(runs)
    header = ["runs", *differing, "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        names = ", ".join(_link(r.path, relative_to) for r in group)
        seeds = ", ".join(str(r.config.get("seed", r.metrics.get("seed", "?"))) for r in group)
        cells = [names, *(_value_text(group[0].config.get(f)) for f in differing), seeds]
        for metric in metrics:
            values = [float(r.metrics[metric]) for r in group if isinstance(r.metrics.get(metric), (int, float))]
            cells.append(_cell([v for v in values if math.isfinite(v)]))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _link(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return path.name
    target = os.path.relpath(Path(path).resolve(), Path(relative_to).resolve())
    return f"[{path.name}]({Path(target).as_posix()}/summary.md)"


def curve_names(runs: Sequence[Run]) -> list[str]:
    """The history.csv columns (but `epoch`) that any run has, in first-seen order."""
    return list(dict.fromkeys(k for r in runs for row in r.history for k in row if k != "epoch"))


def pick_curve(runs: Sequence[Run], curve: str | None) -> str:
    """`curve` when some run has it; None: val_loss, else loss. CompareError naming --curve and the runs' curves."""
    names = curve_names(runs)
    if curve is None:
        return "val_loss" if "val_loss" in names or "loss" not in names else "loss"
    if curve not in names:
        have = ", ".join(names) if names else "none (no run has a history.csv)"
        raise CompareError(f"--curve {curve!r}: no run's history.csv has it; the runs have: {have}")
    return curve


def check_output(output: Path) -> None:
    """CompareError naming --output unless it ends in .md and its directory exists."""
    if output.suffix != ".md":
        raise CompareError(f"--output {output} must end in .md (the figure is written beside it as .png)")
    parent = output.parent
    for folder in (parent, *parent.parents):
        if folder.exists() and not folder.is_dir():
            raise CompareError(f"--output {output}: {folder} is a file, not a directory; choose a path in a directory")
    if not parent.is_dir():
        raise CompareError(f"--output {output}: directory {parent} does not exist; create it (mkdir -p {parent}) first")


def curves_figure(runs: Sequence[Run], curve: str, path: Path) -> tuple[Path, str]:
    """Overlay every run's `curve` per epoch (see `pick_curve`); returns (path, the curve drawn)."""
    from dlchapter.reporting.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = []
    for g, group in enumerate(groups_of(runs)):
        for run in group:
            points = [(row["epoch"], row[curve]) for row in run.history if curve in row]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, color=colours[g % len(colours)], marker=".", linewidth=1.2, label=run.path.name)
                drawn.append(values)
    if drawn and needs_log_scale(*drawn):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(curve)
    ax.set_title(f"{curve} per epoch ({len(drawn)} of {len(runs)} runs have a history.csv)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return save_figure(fig, path), curve


def compare_command(argv: Sequence[str]) -> int:
    """`dlchapter compare`: write the table (Markdown) and the curves (PNG); exit 0, or 2 with one `error:` line."""
    parser = argparse.ArgumentParser(
        prog="dlchapter compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", help="run directories or globs (quote globs to keep them from the shell)")
    parser.add_argument(
        "--output", type=Path, default=Path("compare.md"), help="the Markdown file; the PNG goes beside it"
    )
    parser.add_argument(
        "--curve", default=None, help="the history.csv column to overlay (default val_loss, or loss when none has it)"
    )
    args = parser.parse_args(argv)
    try:
        check_output(args.output)
        runs = [load_run(p) for p in expand(args.dirs)]
        curve = pick_curve(runs, args.curve)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from dlchapter.reporting.report import _atomic_write

    figure, curve = curves_figure(runs, curve, args.output.with_suffix(".png"))
    table = comparison_table(runs, relative_to=args.output.parent)
    text = (
        f"# Comparison of {len(runs)} runs\n\nOne row per config; runs that differ only in `seed` share a row "
        "(mean ± sample standard deviation over seeds, ddof=1).\n\n"
        + table
        + f"\n\n![{curve} per epoch]({figure.name})\n"
    )
    _atomic_write(args.output, text)
    print(table)
    print(f"table: {args.output}; figure: {figure}")
    return 0
