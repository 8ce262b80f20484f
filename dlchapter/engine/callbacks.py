"""Early stopping with Keras's semantics, restoring the best weights.

`EarlyStopping` is an immutable description; `start()` gives the mutable
tracker a single `fit` uses, so one description can serve many runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def early_stopping_update(best, wait, value, *, mode: str, min_delta: float, patience: int, first=False):
    """Keras's early-stopping rule for one epoch, as a pure function.

    Improvement means better than `best` by more than `min_delta` (Keras's
    `EarlyStopping._is_improvement`); the first judged epoch (`first` true) always
    counts as one. On improvement `best` becomes `value` and `wait` 0, otherwise
    `wait` grows by one and training stops once `wait >= patience`.

    Args:
        best, wait, value, first: scalars or arrays of one shape (float, int, float, bool). Host scalars
            (Python/NumPy) are computed with NumPy in float64; `jax.Array`s (tracers included, so inside
            `jit`/`vmap`) with `jax.numpy`.
        mode: "min" or "max" (resolve Keras's "auto" with `EarlyStopping.maximize`).
    Returns:
        `(improved, best, wait, stop)`: bool, float, int, bool of the inputs' shape.
    Raises:
        ValueError: for any other `mode`.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    xp = jnp if any(isinstance(a, jax.Array) for a in (best, wait, value, first)) else np
    better = (value - min_delta > best) if mode == "max" else (value + min_delta < best)
    improved = xp.logical_or(first, better)
    new_best = xp.where(improved, value, best)
    new_wait = xp.where(improved, 0, wait + 1)
    stop = xp.logical_and(xp.logical_not(improved), new_wait >= patience)
    return improved, new_best, new_wait, stop


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

    def start(self) -> EarlyStoppingTracker:
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

    @property
    def mode(self) -> str:
        return "max" if self.rule.maximize else "min"

    def improved(self, value: float) -> bool:
        """Keras's test: better than the best by more than min_delta."""
        return bool(self._step(value, first=False)[0])

    def _step(self, value: float, first: bool):
        return early_stopping_update(
            self.best,
            self.wait,
            value,
            mode=self.mode,
            min_delta=self.rule.min_delta,
            patience=self.rule.patience,
            first=first,
        )

    def update(self, epoch: int, logs: Mapping[str, float], params: Any) -> bool:
        """Record an epoch's logs; returns True when training should stop."""
        if self.rule.monitor not in logs:
            raise KeyError(f"early stopping monitors {self.rule.monitor!r}, but the epoch logged only {sorted(logs)}")
        value = float(logs[self.rule.monitor])
        improved, best, wait, stop = self._step(value, first=self.best_epoch is None)
        self.best, self.wait = float(best), int(wait)
        if improved:
            self.best_epoch = epoch
            self.best_params = jax.tree.map(jnp.copy, params)  # the live buffers are donated next step
        return bool(stop)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able progress (without the weights), for checkpoints."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any], best_params: Any) -> None:
        """Continue from `state_dict()`'s output and the best weights saved beside it."""
        self.best, self.best_epoch, self.wait = float(state["best"]), state["best_epoch"], int(state["wait"])
        self.best_params = best_params if self.best_epoch is not None else None
