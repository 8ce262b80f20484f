"""The chapter's CNN on MNIST or Fashion-MNIST, in the compact or the functional style.

    python -m experiments.mnist_cnn --workdir runs/mnist_cnn [--dataset mnist|fashion_mnist]
        [--style compact|functional] [--holdout-from-test] [--steps-per-call N] [--seed N]

Conv32-3, MaxPool2, Conv64-3, MaxPool2, Conv128-3, Flatten, Dense10 softmax
(104,202 parameters), RMSprop at Keras's default rate, sparse categorical
cross-entropy, 5 epochs of batch 64, pixels / 255. `--holdout-from-test`
trains on the first 8,000 images of the test split and tests on its last
2,000, for when only MNIST's test split is present. Every config field is a
flag (`--validation-split 0`, `--max-train 1000`, ...); booleans also work
bare (`--holdout-from-test` means `--holdout-from-test true`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlchapter.cli import exit_process, launch, run_experiment
from dlchapter.presets.mnist_cnn import CHAPTER, DATASETS, FUNCTIONAL, PRESETS, datasets_for  # noqa: F401  (re-exported for notebooks and tests)


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse the command line, check it, run, and print the headline numbers (`dlchapter run mnist_cnn`)."""
    return run_experiment("mnist_cnn", argv)


if __name__ == "__main__":
    exit_process(launch(main))
