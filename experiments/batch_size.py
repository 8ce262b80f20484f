"""Batch gradient descent (batch = m) vs mini-batch vs SGD (batch 1) on scaled California housing.

    python -m experiments.batch_size --workdir runs/batch_size [--epochs 30] [--train-rows 8000]

One network, one optimizer and learning rate, several batch sizes; writes
batch_size.png (training loss against epochs and against wall-clock seconds,
compilation excluded), metrics.json, config.json and summary.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run batch_size`)."""
    return run_experiment("batch_size", argv)


if __name__ == "__main__":
    exit_process(launch(main))
