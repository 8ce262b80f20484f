"""Recurrent networks on sequences: a temperature forecast and images as sequences.

    python -m experiments.sequences --task temperatures --workdir runs/temperatures
    python -m experiments.sequences --task images --dataset fashion_mnist --workdir runs/fashion_rnn
    python -m experiments.sequences --task images --dataset mnist --holdout-from-test --workdir runs/mnist_rnn

Every field of `SequenceConfig` is a flag (`--hidden 64`, `--models gru,lstm`,
`--epochs 5`); a boolean flag alone means true.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.sequence_presets import DATASETS, PRESETS  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run sequences`)."""
    return run_experiment("sequences", argv)


if __name__ == "__main__":
    exit_process(launch(main))
