"""Overfitting: a 4 x 512 network on 400 rows of the Pima diabetes data, with no regularization, L2, dropout, and both.

    python -m experiments.overfitting --workdir runs/overfitting [--l2 1e-2] [--dropout 0.5]

Writes overfitting.png (training vs validation loss of each variant),
metrics.json (each variant's final train/validation gap), config.json and
summary.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from dlchapter.config import parse_config
from dlchapter.runs.regularization import OverfittingConfig, run_overfitting

DATASETS: tuple[str, ...] = ("diabetes",)

PRESETS = {"chapter": OverfittingConfig()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, train the four variants, print each final gap."""
    config, args = parse_config(OverfittingConfig, argv, PRESETS, description=__doc__)
    metrics = run_overfitting(config, args.workdir)
    parts = "; ".join(f"{r['variant']}: train {r['final_train_loss']:.3f}, val {r['final_val_loss']:.3f}" for r in metrics["runs"])
    print(f"overfitting ({config.epochs} epochs) final loss: {parts}; report in {args.workdir}/summary.md")
    return metrics


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
