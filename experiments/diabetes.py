"""The chapter's binary classifier: Pima diabetes, 100 relu, 8 relu, 1 sigmoid, with ROC and AUC.

python -m experiments.diabetes --workdir runs/diabetes [--seed N] [--config improved] [--threshold 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.diabetes import CHAPTER, DATASETS, IMPROVED, PRESETS  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run diabetes`)."""
    return run_experiment("diabetes", argv)


if __name__ == "__main__":
    exit_process(launch(main))
