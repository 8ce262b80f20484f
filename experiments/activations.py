"""The chapter's activation functions: each with its derivative, and softmax vs hardmax.

    python -m experiments.activations --workdir runs/activations [--leaky-alpha 0.3]

Writes activations.png (relu, leaky relu, sigmoid, tanh, GELU exact and tanh
approximation, each with its derivative), softmax_hardmax.png for the
chapter's inputs (1, -1, 0, 3), metrics.json, config.json and summary.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from dlchapter.config import parse_config
from dlchapter.runs.concepts import ActivationsConfig, run_activations

DATASETS: tuple[str, ...] = ()

PRESETS = {"chapter": ActivationsConfig()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, draw the figures, print the softmax example."""
    config, args = parse_config(ActivationsConfig, argv, PRESETS, description=__doc__)
    metrics = run_activations(config, args.workdir)
    probs = ", ".join(f"{p:.4f}" for p in metrics["softmax"])
    print(f"activations: softmax{tuple(config.softmax_inputs)} = ({probs}), sum {metrics['softmax_sum']:.6f}; max |GELU - tanh GELU| {metrics['max_abs_gelu_minus_gelu_tanh']:.2e}; report in {args.workdir}/summary.md")
    return metrics


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
