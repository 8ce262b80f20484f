"""Many models in one program: the California network's learning rate x L2 x dropout x 3 seeds, and Pima k-fold x seeds.

    python -m experiments.sweep_california --workdir runs/sweep [--only california|pima_kfold] [--epochs N]

Each preset trains every (configuration, seed[, fold]) model together in one
compiled program (`dlchapter.engine.sweep`), ranks the configurations by mean
validation score at each model's best epoch, and scores the best one on the
test rows. `dlchapter sweep --config california|pima_kfold ...` runs one
preset with any field overridden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.sweep_california import CALIFORNIA, DATASETS, PIMA_KFOLD, PRESETS  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run sweep_california`)."""
    return run_experiment("sweep_california", argv)


if __name__ == "__main__":
    exit_process(launch(main))
