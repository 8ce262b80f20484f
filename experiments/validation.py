"""Hold-out and k-fold (k = 4) validation of the chapter's Pima diabetes network (100 relu, 8 relu, 1 sigmoid).

    python -m experiments.validation --workdir runs/validation [--k 4] [--epochs 30]

Scaling is fitted on each fold's training rows only. Writes fold_scores.png
(accuracy and AUC of each fold, mean +- std, hold-out scores), metrics.json,
config.json and summary.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run validation`)."""
    return run_experiment("validation", argv)


if __name__ == "__main__":
    exit_process(launch(main))
