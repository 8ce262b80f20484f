"""Recurrent networks on sequences: a temperature forecast and images as sequences.

    dlchapter run sequences --task temperatures --workdir runs/temperatures
    dlchapter run sequences --task images --dataset fashion_mnist --workdir runs/fashion_rnn
    dlchapter run sequences --task images --dataset mnist --holdout-from-test --workdir runs/mnist_rnn

Every field of `SequenceConfig` is a flag (`--hidden 64`, `--models gru,lstm`,
`--epochs 5`); a boolean flag alone means true. Unset fields (none) take the
task's defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlchapter.configs.config import CommandLine
from dlchapter.presets.recipe import Recipe
from dlchapter.presets.run_configs import SequenceConfig
from dlchapter.presets.runners import run_sequences

if TYPE_CHECKING:
    from dlchapter.runs.sequence_runs import SequenceResult

DATASETS = ("daily_min_temperatures",)  # what the default (temperatures) run needs

PRESETS = {"default": SequenceConfig()}


def _headline(config: SequenceConfig, cmd: CommandLine, result: SequenceResult) -> str:
    m = result.metrics
    if config.task == "temperatures":
        parts = [f"{k[len('test_mae_') :]} {v:.3f}" for k, v in m.items() if k.startswith("test_mae_")]
        return (
            f"temperatures (seed {config.seed}): test MAE in °C: {', '.join(parts)}; report in {cmd.workdir}/summary.md"
        )
    parts = [f"{k[len('test_accuracy_') :]} {v:.4f}" for k, v in m.items() if k.startswith("test_accuracy_")]
    return (
        f"images as sequences (seed {config.seed}): test accuracy: {', '.join(parts)}; "
        f"report in {cmd.workdir}/summary.md"
    )


RECIPE = Recipe(SequenceConfig, PRESETS, run_sequences, _headline, __doc__ or "")
