"""The `dlchapter` command: list and run the chapter's experiments.

    dlchapter list
    dlchapter run iris --workdir runs/iris [--seed 3] [--config improved]
    dlchapter run all --workdir runs
    dlchapter sweep --workdir runs/sweep [--config pima_kfold] [--learning-rates 1e-3,3e-3 ...]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from dlchapter.checkpoint import CheckpointError
from dlchapter.compilation_cache import CompilationCacheError, enable_compilation_cache
from dlchapter.data import DataError, load
from dlchapter.resume import TrainingInterrupted
from dlchapter.train import TrainingDiverged
from dlchapter.report import _atomic_write
from experiments import activations, backprop, batch_size, california, diabetes, diamonds, iris, mnist_cnn, optimizers, overfitting, sequences, sweep_california, validation


@dataclass(frozen=True)
class Experiment:
    """A runnable chapter section: its launcher module and the data it needs."""

    module: ModuleType
    summary: str

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.module.DATASETS


EXPERIMENTS: dict[str, Experiment] = {
    "diamonds": Experiment(diamonds, "first net: diamond prices, one-hot features, MLP 4 x 200 relu (chapter and improved presets)"),
    "california": Experiment(california, "regression: California housing, 100 relu, dropout 0.2, 200 relu, beside XGBoost"),
    "diabetes": Experiment(diabetes, "binary: Pima diabetes, 100 relu, 8 relu, 1 sigmoid; ROC, AUC, classification report"),
    "iris": Experiment(iris, "multiclass: iris, 12-8-3 softmax (chapter and improved presets)"),
    "mnist_cnn": Experiment(mnist_cnn, "CNN: Conv32-64-128 on MNIST, rmsprop, 5 epochs (--dataset fashion_mnist, --style functional, --holdout-from-test)"),
    "sequences": Experiment(sequences, "recurrent nets: temperature forecast vs persistence; images as sequences (--task temperatures|images)"),
    "sweep_california": Experiment(sweep_california, "many models in one program: California lr x L2 x dropout x 3 seeds; Pima k-fold x seeds"),
    "activations": Experiment(activations, "concepts: relu, leaky relu, sigmoid, tanh, GELU with derivatives; softmax vs hardmax"),
    "backprop": Experiment(backprop, "concepts: 2-feature logistic regression by hand-written backprop vs jax.grad and scikit-learn"),
    "batch_size": Experiment(batch_size, "concepts: batch GD vs mini-batch vs SGD on California housing, loss per epoch and per second"),
    "optimizers": Experiment(optimizers, "concepts: SGD, momentum, RMSprop, Adam and learning-rate decay on California housing"),
    "overfitting": Experiment(overfitting, "concepts: 4x512 net on 400 Pima rows: no regularization, L2, dropout, both"),
    "validation": Experiment(validation, "concepts: hold-out vs 4-fold validation of the Pima network (accuracy, AUC)"),
}


def launch(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run an experiment's main(): exit status 0, or an actionable message on stderr and non-zero.

    3: interrupted by SIGTERM/SIGINT after saving a checkpoint (run again to resume);
    2: bad data, a diverged loss or an unusable checkpoint.
    """
    try:
        enable_compilation_cache()  # DLCHAPTER_COMPILATION_CACHE=0 turns it off (dlchapter/compilation_cache.py)
        main(argv)
    except TrainingInterrupted as error:
        print(error, file=sys.stderr)
        return 3
    except (DataError, TrainingDiverged, CheckpointError, CompilationCacheError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _data_available(name: str) -> str | None:
    """None when every data set the experiment needs loads offline, else the reason."""
    for dataset in EXPERIMENTS[name].datasets:
        try:
            load(dataset, download=False)
        except DataError as error:
            return str(error).splitlines()[0]
    return None


def _list() -> int:
    width = max(map(len, EXPERIMENTS))
    for name, experiment in EXPERIMENTS.items():
        print(f"{name:<{width}}  {experiment.summary}")
    return 0


def _run_all(workdir: Path, extra: Sequence[str]) -> int:
    lines = ["# dlchapter: every chapter experiment", "", "| experiment | result |", "|---|---|"]
    failed = False
    for name, experiment in EXPERIMENTS.items():
        missing = _data_available(name)
        if missing:
            print(f"skipping {name}: {missing}", file=sys.stderr)
            lines.append(f"| {name} | skipped: {missing} |")
            continue
        run_dir = workdir / name
        try:
            experiment.module.main(["--workdir", str(run_dir), *extra])
            lines.append(f"| {name} | [summary]({name}/summary.md) |")
        except Exception as error:  # one failing experiment must not hide the others' reports
            failed = True
            print(f"{name} failed: {error!r}", file=sys.stderr)
            lines.append(f"| {name} | failed: {type(error).__name__}: {error} |")
    _atomic_write(workdir / "index.md", "\n".join(lines) + "\n")
    print(f"index: {workdir / 'index.md'}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dlchapter` command."""
    parser = argparse.ArgumentParser(prog="dlchapter", description="The deep-learning chapter in JAX/Flax.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="name every experiment")
    commands.add_parser("sweep", help="many models in one program: a hyperparameter grid or random sample x seeds (x folds)", add_help=False)
    run = commands.add_parser("run", help="run one experiment (or all) with its own flags")
    run.add_argument("name", choices=[*EXPERIMENTS, "all"])
    run.add_argument("--workdir", required=True, type=Path)
    args, extra = parser.parse_known_args(argv)
    if args.command != "list" and launch(lambda _argv: None) != 0:  # the compilation cache, or its error: line
        return 2
    if args.command == "sweep":
        from dlchapter.runs.sweep import sweep_command  # its presets import experiments; keep start-up light

        return sweep_command(extra)
    if args.command == "list":
        return _list()
    if args.name == "all":
        return _run_all(args.workdir, extra)
    return launch(EXPERIMENTS[args.name].module.main, ["--workdir", str(args.workdir), *extra])


if __name__ == "__main__":
    sys.exit(main())
