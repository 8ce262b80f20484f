"""Many models in one program: the California network's learning rate x L2 x dropout x 3 seeds, and Pima k-fold x seeds.

    python -m experiments.sweep_california --workdir runs/sweep [--only california|pima_kfold] [--epochs N]

Each preset trains every (configuration, seed[, fold]) model together in one
compiled program (`dlchapter.sweep`), ranks the configurations by mean
validation score at each model's best epoch, and scores the best one on the
test rows. `dlchapter sweep --config california|pima_kfold ...` runs one
preset with any field overridden.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

from dlchapter import report
from dlchapter.runs.sweep import SweepReport, SweepRunConfig, from_tabular, run_sweep, format_test_scores
from experiments import california, diabetes

DATASETS = ("california_housing", "diabetes")

CALIFORNIA = from_tabular(
    california.CHAPTER,
    learning_rates=(1e-3, 3e-3, 1e-2),
    l2s=(0.0, 1e-5, 1e-4),
    dropouts=(0.0, 0.1, 0.2),
    seeds=(0, 1, 2),
    note=(
        "The chapter's California network (8 -> 100 relu -> dropout -> 200 relu -> 1; Adam, batch 128, up to 100 epochs, "
        "EarlyStopping on validation MSE with patience 4, Keras's last-10% validation split) with its learning rate, "
        "L2 strength and dropout rate searched on a grid (by default 3 x 3 x 3), each configuration trained with every "
        "seed, all models in one program. The chapter's own configuration is lr 1e-3, L2 0, dropout 0.2 (test MSE 0.303 in the chapter)."
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


def main(argv: Sequence[str] | None = None) -> dict[str, SweepReport]:
    """Run both presets (or `--only` one) into WORKDIR/<preset>; print the headline numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--only", choices=sorted(PRESETS))
    parser.add_argument("--epochs", type=int, help="override every preset's maximum epochs (smoke runs)")
    parser.add_argument("--seeds", type=lambda t: tuple(int(s) for s in t.split(",")), help="override the seeds, e.g. 0,1")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"epochs": args.epochs, "seeds": args.seeds, "data_dir": args.data_dir}.items() if v is not None}
    reports, lines = {}, ["# Sweeps", "", "| preset | models | best configuration | test | report |", "|---|---|---|---|---|"]
    for name, preset in PRESETS.items():
        if args.only and name != args.only:
            continue
        out = run_sweep(dataclasses.replace(preset, **overrides), args.workdir / name)
        reports[name] = out
        m, best = out.metrics, out.metrics["best_configuration"]
        tests = format_test_scores(m)
        label = f"lr {best['learning_rate']:.3g}, L2 {best['l2']:.3g}, dropout {best['dropout']:.2g}"
        ref = m.get("reference_configuration")
        chapter = "" if ref is None else f"; the chapter's configuration: " + ", ".join(f"{k[:-5]} {v:.4f} +- {ref[k[:-5] + ' std']:.4f}" for k, v in ref.items() if k.startswith("test_") and k.endswith(" mean"))
        print(f"{name}: {m['n_models']} models in {m['compile_seconds'] + m['run_seconds']:.1f} s; best {label}: {tests}{chapter}")
        lines.append(f"| {name} | {m['n_models']} | {label} | {tests} | [summary]({name}/summary.md) |")
    report._atomic_write(args.workdir / "index.md", "\n".join(lines) + "\n")
    return reports


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
