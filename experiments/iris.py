"""The chapter's multiclass example: iris with 12 relu, 8 relu, 3 softmax.

python -m experiments.iris --workdir runs/iris [--seed N] [--config improved]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.iris import CHAPTER, DATASETS, IMPROVED, PRESETS  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run iris`)."""
    return run_experiment("iris", argv)


if __name__ == "__main__":
    exit_process(launch(main))
