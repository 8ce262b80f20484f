"""The `dlchapter` command: list and run the chapter's experiments.

    dlchapter list
    dlchapter run iris --workdir runs/iris [--seed 3] [--config improved]
    dlchapter run all --workdir runs [--quick]
    dlchapter compare runs/a runs/b 'runs/seed*' [--output compare.md] [--curve val_loss]
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
from dlchapter.data import DataError, load
from dlchapter.resume import TrainingInterrupted
from dlchapter.train import TrainingDiverged
from dlchapter.report import _atomic_write
from dlchapter.reporting import run_all as run_all_lib
from dlchapter.reporting.verbosity import VERBOSITIES, VerbosityError, cli_run, configure
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


def launch(
    main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None, *, verbosity: str | None = None
) -> int:
    """Run an experiment's main(): exit status 0, or an actionable message on stderr and non-zero.

    3: interrupted by SIGTERM/SIGINT after saving a checkpoint (run again to resume);
    2: bad data, a diverged loss or an unusable checkpoint.
    `--verbosity quiet|epoch|bar` (in argv or as `verbosity`) sets what stderr shows;
    the run's TensorBoard events go to WORKDIR/tb/.
    """
    try:
        with cli_run(sys.argv[1:] if argv is None else argv, verbosity) as run_argv:
            main(run_argv)
    except TrainingInterrupted as error:
        print(error, file=sys.stderr)
        return 3
    except (DataError, TrainingDiverged, CheckpointError, VerbosityError) as error:
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


def _run_all(workdir: Path, extra: Sequence[str], quick: bool = False, verbosity: str | None = None) -> int:
    progress = configure(verbosity)
    mains = {name: experiment.module.main for name, experiment in EXPERIMENTS.items()}
    status, _ = run_all_lib.run_all(
        mains, workdir, extra, quick=quick, data_missing=_data_available, progress=progress, write=_atomic_write
    )
    print(f"index: {workdir / 'index.md'}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dlchapter` command."""
    parser = argparse.ArgumentParser(prog="dlchapter", description="The deep-learning chapter in JAX/Flax.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="name every experiment")
    sweep_help = "many models in one program: a hyperparameter grid or random sample x seeds (x folds)"
    commands.add_parser("sweep", help=f"{sweep_help}; compare sweeps with `dlchapter compare`", add_help=False)
    run = commands.add_parser("run", help="run one experiment (or all) with its own flags")
    run.add_argument("name", choices=[*EXPERIMENTS, "all"])
    run.add_argument("--workdir", required=True, type=Path)
    verbosity_help = "stderr: quiet, one line per epoch, or a progress bar (default: bar on a terminal, else epoch)"
    run.add_argument("--verbosity", choices=VERBOSITIES, help=verbosity_help)
    quick_help = "with `all`: every experiment at a smoke size (under 3 minutes on 2 cores)"
    run.add_argument("--quick", action="store_true", help=quick_help)
    compare_help = "a Markdown table and a validation-curve figure of several run directories"
    commands.add_parser("compare", help=compare_help, add_help=False)
    args, extra = parser.parse_known_args(argv)
    if args.command == "sweep":
        from dlchapter.runs.sweep import sweep_command  # its presets import experiments; keep start-up light

        status = sweep_command(extra)
        if status == 0:
            print("compare sweeps and runs: dlchapter compare DIR [DIR ...]", file=sys.stderr)
        return status
    if args.command == "compare":
        from dlchapter.reporting.compare import compare_command

        return compare_command(extra)
    if args.command == "list":
        return _list()
    if args.quick and args.name != "all":
        print("error: --quick applies to `dlchapter run all` only; give the experiment's size flags", file=sys.stderr)
        return 2
    if args.name == "all":
        return _run_all(args.workdir, extra, args.quick, args.verbosity)
    argv = ["--workdir", str(args.workdir), *extra]
    return launch(EXPERIMENTS[args.name].module.main, argv, verbosity=args.verbosity)


if __name__ == "__main__":
    sys.exit(main())
