"""SGD, momentum, RMSprop and Adam (and the chapter's learning-rate decay) on scaled California housing.

    python -m experiments.optimizers --workdir runs/optimizers [--epochs 20] [--decay 0.5]

Each optimizer at Keras's default learning rate, plus one run whose rate
follows a = a0 / (1 + decay * epoch); writes optimizers.png (training and
validation loss, learning rate per epoch), metrics.json, config.json and
summary.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from dlchapter.config import parse_config
from dlchapter.runs.dynamics import OptimizersConfig, run_optimizers

DATASETS: tuple[str, ...] = ("california_housing",)

PRESETS = {"chapter": OptimizersConfig()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, train once per optimizer, print the validation losses."""
    config, args = parse_config(OptimizersConfig, argv, PRESETS, description=__doc__)
    metrics = run_optimizers(config, args.workdir)
    parts = ", ".join(f"{r['optimizer']} {r['final_val_loss']:.3f}" for r in metrics["runs"])
    print(f"optimizers ({config.epochs} epochs), final validation MSE: {parts}; report in {args.workdir}/summary.md")
    return metrics


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
