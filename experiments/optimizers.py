"""SGD, momentum, RMSprop and Adam (and the chapter's learning-rate decay) on scaled California housing.

    python -m experiments.optimizers --workdir runs/optimizers [--epochs 20] [--decay 0.5]

Each optimizer at Keras's default learning rate, plus one run whose rate
follows a = a0 / (1 + decay * epoch); writes optimizers.png (training and
validation loss, learning rate per epoch), metrics.json, config.json and
summary.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run optimizers`)."""
    return run_experiment("optimizers", argv)


if __name__ == "__main__":
    exit_process(launch(main))
