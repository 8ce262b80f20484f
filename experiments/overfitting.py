"""Overfitting: a 4 x 512 network on 400 rows of the Pima diabetes data, with no regularization, L2, dropout, and both.

    python -m experiments.overfitting --workdir runs/overfitting [--l2 1e-2] [--dropout 0.5]

Writes overfitting.png (training vs validation loss of each variant),
metrics.json (each variant's final train/validation gap), config.json and
summary.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run overfitting`)."""
    return run_experiment("overfitting", argv)


if __name__ == "__main__":
    exit_process(launch(main))
