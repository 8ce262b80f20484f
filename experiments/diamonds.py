"""The chapter's first network: diamond prices from one-hot features, an MLP of 4 x 200 relu.

python -m experiments.diamonds --workdir runs/diamonds [--seed N] [--config improved]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.diamonds import CHAPTER, DATASETS, IMPROVED, PRESETS  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run diamonds`)."""
    return run_experiment("diamonds", argv)


if __name__ == "__main__":
    exit_process(launch(main))
