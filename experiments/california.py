"""The chapter's regression example: California housing, 100 relu, dropout 0.2, 200 relu, 1, beside XGBoost.

python -m experiments.california --workdir runs/california [--seed N] [--config improved]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.california import CHAPTER, DATASETS, IMPROVED, PRESETS  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run california`)."""
    return run_experiment("california", argv)


if __name__ == "__main__":
    exit_process(launch(main))
