"""Batch gradient descent (batch = m) vs mini-batch vs SGD (batch 1) on scaled California housing.

    python -m experiments.batch_size --workdir runs/batch_size [--epochs 30] [--train-rows 8000]

One network, one optimizer and learning rate, several batch sizes; writes
batch_size.png (training loss against epochs and against wall-clock seconds,
compilation excluded), metrics.json, config.json and summary.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from dlchapter.config import parse_config
from dlchapter.runs.dynamics import BatchSizeConfig, run_batch_size

DATASETS: tuple[str, ...] = ("california_housing",)

PRESETS = {"chapter": BatchSizeConfig()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, train once per batch size, print the final losses."""
    config, args = parse_config(BatchSizeConfig, argv, PRESETS, description=__doc__)
    metrics = run_batch_size(config, args.workdir)
    parts = "; ".join(f"batch {r['batch_size']}: MSE {r['final_train_mse']:.3f} in {r['train_seconds']:.1f} s" for r in metrics["runs"])
    print(f"batch_size ({config.epochs} epochs): {parts}; report in {args.workdir}/summary.md")
    return metrics


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
