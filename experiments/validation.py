"""Hold-out and k-fold (k = 4) validation of the chapter's Pima diabetes network (100 relu, 8 relu, 1 sigmoid).

    python -m experiments.validation --workdir runs/validation [--k 4] [--epochs 30]

Scaling is fitted on each fold's training rows only. Writes fold_scores.png
(accuracy and AUC of each fold, mean +- std, hold-out scores), metrics.json,
config.json and summary.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from dlchapter.config import parse_config
from dlchapter.runs.validation import ValidationConfig, run_validation

DATASETS: tuple[str, ...] = ("diabetes",)

PRESETS = {"chapter": ValidationConfig()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, validate both ways, print mean +- std."""
    config, args = parse_config(ValidationConfig, argv, PRESETS, description=__doc__)
    m = run_validation(config, args.workdir)
    print(
        f"validation: {config.k}-fold accuracy {m['kfold_accuracy_mean']:.4f} +- {m['kfold_accuracy_std']:.4f}, AUC {m['kfold_auc_mean']:.4f} +- {m['kfold_auc_std']:.4f}; "
        f"hold-out accuracy {m['holdout_accuracy']:.4f}, AUC {m['holdout_auc']:.4f}; report in {args.workdir}/summary.md"
    )
    return m


if __name__ == "__main__":
    from dlchapter.cli import launch

    raise SystemExit(launch(main))
