"""Many models in one program: the California network's learning rate x L2 x dropout x 3 seeds, and Pima k-fold x seeds.

    dlchapter run sweep_california --workdir runs/sweep [--only california|pima_kfold] [--epochs N] [--seeds 0,1]

Each preset trains every (configuration, seed[, fold]) model together in one
compiled program (`dlchapter.engine.sweep`), ranks the configurations by mean
validation score at each model's best epoch, and scores the best one on the
test rows. `dlchapter sweep --config california|pima_kfold ...` (`sweep_command`) runs one
preset with any field overridden. The presets, and `--help` of both commands, import no JAX: the run module
(`dlchapter.runs.sweep_runs`) is imported when a sweep starts.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlchapter.configs.config import CommandLine
from dlchapter.presets import california, diabetes
from dlchapter.presets.recipe import Recipe
from dlchapter.presets.run_configs import SweepRunConfig, from_tabular

if TYPE_CHECKING:
    from dlchapter.runs.sweep_report import SweepReport

DATASETS = ("california_housing", "diabetes")

CALIFORNIA = from_tabular(
    california.CHAPTER,
    learning_rates=(1e-3, 3e-3, 1e-2),
    l2s=(0.0, 1e-5, 1e-4),
    dropouts=(0.0, 0.1, 0.2),
    seeds=(0, 1, 2),
    note=(
        "The chapter's California network (8 -> 100 relu -> dropout -> 200 relu -> 1; Adam, batch 128, "
        "up to 100 epochs, "
        "EarlyStopping on validation MSE with patience 4, Keras's last-10% validation split) with its learning rate, "
        "L2 strength and dropout rate searched on a grid (by default 3 x 3 x 3), each configuration trained with every "
        "seed, all models in one program. The chapter's own configuration is lr 1e-3, L2 0, dropout 0.2 "
        "(test MSE 0.303 in the chapter)."
    ),
)

PIMA_KFOLD = from_tabular(
    diabetes.CHAPTER,
    folds=4,
    monitor="val_loss",
    patience=10,
    select_by="val_loss",
    dropout_layers=(0,),
    learning_rates=(1e-3, 3e-3),
    l2s=(0.0, 1e-2),
    dropouts=(0.0, 0.3),
    seeds=(0, 1, 2),
    note=(
        "The chapter's Pima network (8 -> 100 relu -> 8 relu -> 1 sigmoid; binary cross-entropy, Adam, batch 32) under "
        "k-fold cross-validation of the training rows (stratified; each fold standardized by its own training rows) x "
        "seeds, over learning rate x L2 x dropout after the first layer, all models in one program. "
        "Early stopping on each fold's validation loss (patience 10, best weights kept); the test rows are never seen."
    ),
)

PRESETS: dict[str, SweepRunConfig] = {"california": CALIFORNIA, "pima_kfold": PIMA_KFOLD}


@dataclass(frozen=True)
class SweepPresetsConfig:
    """Both sweep presets (or one), with the fields a quick run changes."""

    only: str | None = None  # california | pima_kfold; none: both
    epochs: int | None = None  # override every preset's maximum epochs (smoke runs)
    seeds: tuple[int, ...] | None = None  # override every preset's model seeds, e.g. 0,1
    data_dir: str | None = None


def _label(best: dict) -> str:
    return f"lr {best['learning_rate']:.3g}, L2 {best['l2']:.3g}, dropout {best['dropout']:.2g}"


def run_presets(config: SweepPresetsConfig, workdir: Path) -> dict[str, SweepReport]:
    """Run each preset (or `config.only`) into WORKDIR/<preset>, and an index.md of their headline numbers."""
    from dlchapter.reporting import report
    from dlchapter.runs.sweep_report import format_test_scores
    from dlchapter.runs.sweep_runs import run_sweep

    overrides = {
        k: v
        for k, v in {"epochs": config.epochs, "seeds": config.seeds, "data_dir": config.data_dir}.items()
        if v is not None
    }
    reports, lines = (
        {},
        ["# Sweeps", "", "| preset | models | best configuration | test | report |", "|---|---|---|---|---|"],
    )
    for name, preset in PRESETS.items():
        if config.only and name != config.only:
            continue
        out = run_sweep(dataclasses.replace(preset, **overrides), Path(workdir) / name)
        reports[name] = out
        lines.append(
            f"| {name} | {out.metrics['n_models']} | {_label(out.metrics['best_configuration'])} | "
            f"{format_test_scores(out.metrics)} | [summary]({name}/summary.md) |"
        )
    report._atomic_write(Path(workdir) / "index.md", "\n".join(lines) + "\n")
    return reports


def _headline(config: SweepPresetsConfig, cmd: CommandLine, reports: dict[str, SweepReport]) -> str:
    from dlchapter.runs.sweep_report import format_test_scores

    lines = []
    for name, out in reports.items():
        m = out.metrics
        ref = m.get("reference_configuration")
        chapter = (
            ""
            if ref is None
            else "; the chapter's configuration: "
            + ", ".join(
                f"{k[:-5]} {v:.4f} +- {ref[k[:-5] + ' std']:.4f}"
                for k, v in ref.items()
                if k.startswith("test_") and k.endswith(" mean")
            )
        )
        lines.append(
            f"{name}: {m['n_models']} models in {m['compile_seconds'] + m['run_seconds']:.1f} s; "
            f"best {_label(m['best_configuration'])}: {format_test_scores(m)}{chapter}"
        )
    return "\n".join(lines)


RECIPE = Recipe(SweepPresetsConfig, {"chapter": SweepPresetsConfig()}, run_presets, _headline, __doc__ or "")


def sweep_command(argv: Sequence[str] | None, presets: Mapping[str, SweepRunConfig] | None = None) -> int:
    """`dlchapter sweep --workdir DIR [--config NAME] [--learning-rates 1e-3,3e-3] [--l2s 0,1e-4]
    [--dropouts 0,0.2] [--seeds 0,1,2] [--search random --samples 12] [--folds 4] ...`; returns the exit status.

    `presets` are the `--config` choices (default: this module's `PRESETS`). The flags are parsed and checked
    without importing JAX (so `--help` is quick); the work directory is then held for the whole sweep
    (`dlchapter.reporting.workdir_lock.exclusive_workdir`: `WorkdirBusy` when another live process holds it,
    which `dlchapter.cli` reports as one `error:` line, exit 2). Bad data or values: one `error:` line, 2.
    """
    from dlchapter.configs import config_checks, directory_checks
    from dlchapter.configs.config import parse_config
    from dlchapter.reporting.workdir_lock import exclusive_workdir

    try:
        config, args = parse_config(
            SweepRunConfig,
            argv,
            PRESETS if presets is None else presets,
            prog="dlchapter sweep",
            description=(
                "Train a grid or random sample of configurations x seeds (x folds) together; report mean "
                "+- std per configuration and test the best."
            ),
        )
        config_checks.validate(config)
        directory_checks.check_workdir(args.workdir)
        with exclusive_workdir(args.workdir):
            from dlchapter.data import DataError
            from dlchapter.runs.sweep_runs import run_sweep

            try:
                out = run_sweep(config, args.workdir)
            except DataError as error:
                raise ValueError(str(error)) from None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from dlchapter.runs.sweep_report import Configuration, format_test_scores

    m, best = out.metrics, out.metrics["best_configuration"]
    print(
        f"{m['n_models']} models in {m['compile_seconds'] + m['run_seconds']:.1f} s; best by "
        f"{m['select_by']}: "
        f"{Configuration(best['learning_rate'], best['l2'], best['dropout']).label()}; "
        f"{format_test_scores(m)}; report in {args.workdir}/summary.md"
    )
    return 0
