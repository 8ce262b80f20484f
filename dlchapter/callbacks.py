"""Early stopping with Keras's semantics, restoring the best weights.

`EarlyStopping` is an immutable description; `start()` gives the mutable
tracker a single `fit` uses, so one description can serve many runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    `mode="auto"` maximises names containing "acc" or "auc" and minimises the rest.
    Whatever ends training, the best epoch's weights are the ones returned.
    """

    monitor: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0
    mode: str = "auto"

    @property
    def maximize(self) -> bool:
        if self.mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {self.mode!r}")
        if self.mode == "auto":
            return "acc" in self.monitor or "auc" in self.monitor
        return self.mode == "max"

    def start(self) -> "EarlyStoppingTracker":
        """A fresh tracker for one training run."""
        return EarlyStoppingTracker(self)


class EarlyStoppingTracker:
    """The running state of one early-stopping rule: best value, its epoch and weights."""

    def __init__(self, rule: EarlyStopping):
        self.rule = rule
        self.best: float = -np.inf if rule.maximize else np.inf
        self.best_epoch: int | None = None
        self.best_params: Any = None
        self.wait = 0

    def improved(self, value: float) -> bool:
        """Keras's test: better than the best by more than min_delta."""
        if self.rule.maximize:
            return value - self.rule.min_delta > self.best
        return value + self.rule.min_delta < self.best

    def update(self, epoch: int, logs: Mapping[str, float], params: Any) -> bool:
        """Record an epoch's logs; returns True when training should stop."""
        if self.rule.monitor not in logs:
            raise KeyError(f"early stopping monitors {self.rule.monitor!r}, but the epoch logged only {sorted(logs)}")
        value = float(logs[self.rule.monitor])
        if self.best_epoch is None or self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_params = jax.tree.map(jnp.copy, params)  # the live buffers are donated next step
            return False
        self.wait += 1
        return self.wait >= self.rule.patience

    def state_dict(self) -> dict[str, Any]:
        """JSON-able progress (without the weights), for checkpoints."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any], best_params: Any) -> None:
        """Continue from `state_dict()`'s output and the best weights saved beside it."""
        self.best, self.best_epoch, self.wait = float(state["best"]), state["best_epoch"], int(state["wait"])
        self.best_params = best_params if self.best_epoch is not None else None
