"""Recurrent networks on sequences: a temperature forecast and images as sequences.

    python -m experiments.sequences --task temperatures --workdir runs/temperatures
    python -m experiments.sequences --task images --dataset fashion_mnist --workdir runs/fashion_rnn
    python -m experiments.sequences --task images --dataset mnist --holdout-from-test --workdir runs/mnist_rnn

Every field of `SequenceConfig` is a flag (`--hidden 64`, `--models gru,lstm`,
`--epochs 5`); a boolean flag alone means true.
"""

from __future__ import annotations

from typing import Sequence

from dlchapter.config import parse_config
from dlchapter.runs.sequences import SequenceConfig, SequenceResult, run_sequences

DATASETS = ("daily_min_temperatures",)  # what the default (temperatures) run needs

PRESETS = {"default": SequenceConfig()}


def main(argv: Sequence[str] | None = None) -> SequenceResult:
    """Parse the command line, run, and print the headline numbers."""
    config, args = parse_config(SequenceConfig, argv, PRESETS, description=__doc__)
    result = run_sequences(config, args.workdir)
    m = result.metrics
    if config.task == "temperatures":
        parts = [f"{k[len('test_mae_'):]} {v:.3f}" for k, v in m.items() if k.startswith("test_mae_")]
        print(f"temperatures (seed {config.seed}): test MAE in °C: {', '.join(parts)}; report in {args.workdir}/summary.md")
    else:
        parts = [f"{k[len('test_accuracy_'):]} {v:.4f}" for k, v in m.items() if k.startswith("test_accuracy_")]
        print(f"images as sequences (seed {config.seed}): test accuracy: {', '.join(parts)}; report in {args.workdir}/summary.md")
    return result


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
