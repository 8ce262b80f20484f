"""Backpropagation by hand: the chapter's 2-feature logistic regression.

    python -m experiments.backprop --workdir runs/backprop [--rows 500] [--steps 3000]

Gradient descent on the chain-rule gradients of dlchapter.concepts.backprop, on
synthetic 2-feature data; the weights are compared with jax.grad and with
scikit-learn's unpenalized LogisticRegression. Writes loss_curve.png,
decision_boundary.png, metrics.json, config.json and summary.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run backprop`)."""
    return run_experiment("backprop", argv)


if __name__ == "__main__":
    exit_process(launch(main))
