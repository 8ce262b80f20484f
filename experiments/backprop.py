"""Backpropagation by hand: the chapter's 2-feature logistic regression.

    python -m experiments.backprop --workdir runs/backprop [--rows 500] [--steps 3000]

Gradient descent on the chain-rule gradients of dlchapter.backprop, on
synthetic 2-feature data; the weights are compared with jax.grad and with
scikit-learn's unpenalized LogisticRegression. Writes loss_curve.png,
decision_boundary.png, metrics.json, config.json and summary.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from dlchapter.config import parse_config
from dlchapter.runs.concepts import BackpropConfig, run_backprop

DATASETS: tuple[str, ...] = ()

PRESETS = {"chapter": BackpropConfig()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, fit, compare, print the agreement."""
    config, args = parse_config(BackpropConfig, argv, PRESETS, description=__doc__)
    m = run_backprop(config, args.workdir)
    print(f"backprop: w = ({m['w'][0]:.4f}, {m['w'][1]:.4f}), b = {m['b']:.4f}; max |hand - jax.grad| gradient {m['max_gradient_difference_hand_vs_jax_grad']:.2e}; max weight difference to sklearn {m['max_weight_difference_to_sklearn']:.2e}; report in {args.workdir}/summary.md")
    return m


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
