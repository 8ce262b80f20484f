"""What `Trainer.fit` learns and how it iterates: `Task` (loss, metrics, head, from_logits), the chapter's
`TASKS`, `FitConfig`, the `History` it returns, and the validation split it holds out."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlchapter.data.splits import holdout_split
from dlchapter.engine import losses
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.loop import num_rows, take_rows

PyTree = Any


HEADS = ("linear", "sigmoid", "softmax")


@dataclass(frozen=True)
class Task:
    """What is learned: the loss, the metrics, the output head and what the model outputs.

    `loss`: a registered name (losses.LOSSES) or a callable `(outputs, targets, weights_B) -> scalar`.
    `metrics`: registered names (metrics.METRICS) or objects with name/empty/update/merge/compute.
    `head`: "linear", "sigmoid" or "softmax", applied by `predict` to raw outputs.
    `from_logits`: True when the model outputs logits (the chapter's models); False for a model that
    ends in its own sigmoid/softmax (Keras's `from_logits=False`): losses and accuracy then take
    probabilities and `predict` returns the outputs as they are.
    """

    loss: str | losses.LossFn
    metrics: tuple[metrics_lib.MetricLike, ...] = ()
    head: str = "linear"
    from_logits: bool = True

    def __post_init__(self) -> None:
        """Raises ValueError for an unknown head, TypeError when `metrics` is not a tuple or list (a bare
        "mae" would be read as the names "m", "a", "e")."""
        if self.head not in HEADS:
            raise ValueError(f"Task head must be one of {HEADS}, got {self.head!r}")
        if not isinstance(self.metrics, tuple | list):
            raise TypeError(
                f"Task metrics must be a tuple of names or metric objects, got {type(self.metrics).__name__} "
                f"{self.metrics!r}; for one metric write ({self.metrics!r},)"
            )

    @property
    def is_classification(self) -> bool:
        return self.head != "linear"

    def identity(self, metrics: Sequence[Any]) -> dict[str, Any]:
        """What a checkpoint binds of this task (JSON): the loss (its name, or a callable's qualified name), the
        names of `metrics` (the resolved metric objects), the head and `from_logits`."""
        loss = self.loss if isinstance(self.loss, str) else getattr(self.loss, "__qualname__", "?")
        names = [m.name for m in metrics]
        return {"loss": loss, "metrics": names, "head": self.head, "from_logits": self.from_logits}


TASKS: dict[str, Task] = {
    "regression": Task("mse", ("mae", "rmse")),
    "binary": Task("binary_crossentropy", ("accuracy",), "sigmoid"),
    "multiclass": Task("categorical_crossentropy", ("accuracy",), "softmax"),
    "sparse_multiclass": Task("sparse_categorical_crossentropy", ("accuracy",), "softmax"),
}


@dataclass(frozen=True)
class FitConfig:
    """How `fit` iterates. `validation_split` holds out rows of the training data:
    `validation_mode` "stratified" (per class, seeded; regression falls back to
    "shuffled"), "shuffled", or "last" (Keras's last fraction, in order).
    How many steps run per compiled call is the `Trainer`'s choice."""

    epochs: int = 1
    batch_size: int = 32
    shuffle: bool = True
    validation_split: float = 0.0
    validation_mode: str = "stratified"
    seed: int = 0
    progress: bool | None = None  # None: a bar only when stderr is a terminal


@dataclass
class History:
    """Per-epoch values of every metric ("loss", "val_loss", "lr", ...) and the best epoch (1-based)."""

    values: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    best_epoch: int | None = None
    stopped_early: bool = False
    compile_seconds: float | None = None  # train (and validation) programs' ahead-of-time compile; not in epoch_seconds
    epochs_trained: int = 0  # epochs this `fit` call trained (a resumed run's restored epochs are not counted)

    @property
    def epochs_run(self) -> int:
        return len(self.values.get("loss", []))

    def as_rows(self) -> list[dict[str, float]]:
        """One dict per epoch, with its 1-based number."""
        return [{"epoch": i + 1, **{k: v[i] for k, v in self.values.items()}} for i in range(self.epochs_run)]


def split_validation(
    x: PyTree, y: np.ndarray, config: FitConfig, *, classification: bool
) -> tuple[PyTree, np.ndarray, tuple[PyTree, np.ndarray]]:
    """(x_fit, y_fit, (x_val, y_val)) as `config.validation_split`/`validation_mode` ask.

    `x` is an array or a pytree of arrays with a leading batch axis; every leaf is split alike.
    """
    mode = config.validation_mode
    if mode not in ("stratified", "shuffled", "last"):
        raise ValueError(f"validation_mode must be 'stratified', 'shuffled' or 'last', got {mode!r}")
    stratify = y if mode == "stratified" and classification else None
    kept, held = holdout_split(
        num_rows(x), config.validation_split, seed=config.seed, stratify=stratify, shuffle=mode != "last"
    )
    return take_rows(x, kept), take_rows(y, kept), (take_rows(x, held), take_rows(y, held))
