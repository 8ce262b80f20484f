"""Your own CSV through the chapter's tabular workflow.

python -m experiments.tabular --data-path houses.csv --target price --categorical region --task regression \
    --workdir runs/houses
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.own_csv_preset import DEFAULT, PRESETS  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run tabular`)."""
    return run_experiment("tabular", argv)


if __name__ == "__main__":
    exit_process(launch(main))
