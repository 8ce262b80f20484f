"""The chapter's activation functions: each with its derivative, and softmax vs hardmax.

    python -m experiments.activations --workdir runs/activations [--leaky-alpha 0.3]

Writes activations.png (relu, leaky relu, sigmoid, tanh, GELU exact and tanh
approximation, each with its derivative), softmax_hardmax.png for the
chapter's inputs (1, -1, 0, 3), metrics.json, config.json and summary.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run activations`)."""
    return run_experiment("activations", argv)


if __name__ == "__main__":
    exit_process(launch(main))
