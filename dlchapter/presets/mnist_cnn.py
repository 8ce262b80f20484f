"""The chapter's CNN on MNIST or Fashion-MNIST, in the compact or the functional style.

    dlchapter run mnist_cnn --workdir runs/mnist_cnn [--dataset mnist|fashion_mnist]
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

import dataclasses
from collections.abc import Sequence
from typing import Any

from dlchapter.configs.config import CommandLine
from dlchapter.presets.recipe import Recipe
from dlchapter.presets.run_configs import ImageConfig
from dlchapter.presets.runners import run_images

DATASETS = ("mnist",)
"""What the default run needs (the `dlchapter` command checks it); `--dataset` changes it."""

CHAPTER = ImageConfig(
    dataset="mnist",
    style="compact",
    optimizer="rmsprop",
    learning_rate=None,
    epochs=5,
    batch_size=64,
    validation_split=0.1,
    validation_mode="stratified",
    note=(
        "The chapter's model and recipe (RMSprop at 0.001, sparse categorical cross-entropy, 5 epochs, batch 64, "
        "pixels / 255), with one addition: a stratified 10% validation split of the training rows, so the "
        "training curves show generalisation while training. `--validation-split 0` trains on every row as the "
        "chapter does. The chapter reports test accuracy 0.9926 on MNIST."
    ),
)

FUNCTIONAL = dataclasses.replace(CHAPTER, style="functional")

PRESETS = {"chapter": CHAPTER, "functional": FUNCTIONAL}


def datasets_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The data sets a command line needs (the `--dataset` value, else the default)."""
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--dataset" and i + 1 < len(argv):
            return (argv[i + 1],)
        if token.startswith("--dataset="):
            return (token.split("=", 1)[1],)
    return DATASETS


def _run(config: ImageConfig, workdir: Any) -> dict[str, Any]:
    return run_images(config, workdir).metrics


def _headline(config: ImageConfig, cmd: CommandLine, m: dict[str, Any]) -> str:
    return (
        f"{config.dataset} CNN ({config.style}, seed {config.seed}): test accuracy {m['test_accuracy']:.4f}, "
        f"top-2 {m['test_top2_accuracy']:.4f}, {m['epochs_run']} epochs in {m['train_seconds']:.1f} s; "
        f"report in {cmd.workdir}/summary.md"
    )


RECIPE = Recipe(ImageConfig, PRESETS, _run, _headline, __doc__ or "")
