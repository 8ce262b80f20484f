"""Streaming metrics that stay on the device.

A metric is a registered name or any object with a `name` and four pure functions, the shape of
CLU's `Metric` (clu.metrics):

- `empty() -> state`: the state of no rows, a pytree of arrays (the identity of `merge`);
- `update(state, outputs, targets, weights_B) -> state`: fold in one batch (jit-traced; padded rows
  have weight 0 and must count for nothing);
- `merge(a, b) -> state`: combine two states (jit-traced; associative), so an epoch is exact;
- `compute(state) -> float`: the value, on the host, from the fetched state (numpy arrays).

The registered metrics are `SumMetric`s: weighted sums added across batches and finished once
per epoch, so R2 and RMSE over an epoch are exact, not averages of per-batch values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter.engine import losses

Array = jax.Array
Stats = dict[str, Array]


@runtime_checkable
class Metric(Protocol):
    """What the engine needs of a metric (see the module docstring)."""

    name: str

    def empty(self) -> Any: ...

    def update(self, state: Any, outputs: Array, targets: Array, weights: Array) -> Any: ...

    def merge(self, a: Any, b: Any) -> Any: ...

    def compute(self, state: Any) -> float: ...


@dataclass(frozen=True)
class SumMetric:
    """A metric from per-batch weighted sums (`stats`, float32 scalars named `keys`) and a host `result`."""

    name: str
    stats: Callable[[Array, Array, Array], Stats]
    result: Callable[[Mapping[str, float]], float]
    keys: tuple[str, ...] = ()

    def empty(self) -> Stats:
        return {k: jnp.zeros((), jnp.float32) for k in self.keys}

    def update(self, state: Stats, outputs: Array, targets: Array, weights: Array) -> Stats:
        return self.merge(state, self.stats(outputs, targets, weights))

    def merge(self, a: Stats, b: Stats) -> Stats:
        return jax.tree.map(jnp.add, a, b)

    def compute(self, state: Mapping[str, Any]) -> float:
        return self.result({k: float(v) for k, v in state.items()})


MetricLike = str | Metric


@dataclass(frozen=True)
class MaxAbsoluteError:
    """The largest |output - target| over real rows (padded rows ignored), in the targets' units.

    Not a sum: batches merge by `max`, so the epoch's value is exact. Outputs (B, 1) or (B,), targets (B,).
    `compute` of no rows gives -inf.
    """

    name: str = "max_abs_error"

    def empty(self) -> Array:
        return jnp.asarray(-jnp.inf, jnp.float32)

    def update(self, state: Array, outputs: Array, targets: Array, weights: Array) -> Array:
        err = jnp.max(jnp.abs(outputs.reshape(outputs.shape[0], -1) - targets.reshape(targets.shape[0], -1)), axis=-1)
        return jnp.maximum(state, jnp.max(jnp.where(weights > 0, err, -jnp.inf)).astype(jnp.float32))

    def merge(self, a: Array, b: Array) -> Array:
        return jnp.maximum(a, b)

    def compute(self, state: Any) -> float:
        return float(state)


def predicted_classes(outputs: Array, threshold: float = 0.0) -> Array:
    """Class indices: `output > threshold` for a single binary output (0 for logits, 0.5 for probabilities),
    else arg-max."""
    if outputs.shape[-1] == 1:
        return (outputs[..., 0] > threshold).astype(jnp.int32)
    return jnp.argmax(outputs, axis=-1).astype(jnp.int32)


def target_classes(y: Array, n_outputs: int) -> Array:
    """Class indices from integer labels, 0/1 targets, or one-hot rows."""
    if y.ndim == 2 and y.shape[-1] == n_outputs and n_outputs > 1:
        return jnp.argmax(y, axis=-1).astype(jnp.int32)
    return y.reshape(y.shape[0]).astype(jnp.int32)


def _accuracy_stats(outputs: Array, y: Array, w: Array, threshold: float = 0.0) -> Stats:
    correct = predicted_classes(outputs, threshold) == target_classes(y, outputs.shape[-1])
    return {"correct": jnp.sum(correct * w), "count": jnp.sum(w)}


def _probability_accuracy_stats(outputs: Array, y: Array, w: Array) -> Stats:
    return _accuracy_stats(outputs, y, w, threshold=0.5)


def _error_stats(outputs: Array, y: Array, w: Array) -> Stats:
    y_col = y.reshape(y.shape[0], -1).astype(jnp.float32)
    return {
        "sse": jnp.sum(losses.squared_error(outputs, y) * w),
        "sae": jnp.sum(losses.absolute_error(outputs, y) * w),
        "sum_y": jnp.sum(jnp.mean(y_col, axis=-1) * w),
        "sum_y2": jnp.sum(jnp.mean(y_col**2, axis=-1) * w),
        "count": jnp.sum(w),
    }


def _ratio(numerator: str) -> Callable[[Mapping[str, float]], float]:
    return lambda s: float(s[numerator] / max(s["count"], 1e-12))


def _r2(s: Mapping[str, float]) -> float:
    """1 - SSE/SST, with SST from the streamed sums of y and y²."""
    n = max(s["count"], 1e-12)
    sst = s["sum_y2"] - s["sum_y"] ** 2 / n
    return float(1.0 - s["sse"] / sst) if sst > 0 else float("nan")


_ERROR_KEYS = ("sse", "sae", "sum_y", "sum_y2", "count")
METRICS: dict[str, SumMetric] = {
    "accuracy": SumMetric("accuracy", _accuracy_stats, _ratio("correct"), ("correct", "count")),
    "mse": SumMetric("mse", _error_stats, _ratio("sse"), _ERROR_KEYS),
    "mae": SumMetric("mae", _error_stats, _ratio("sae"), _ERROR_KEYS),
    "rmse": SumMetric("rmse", _error_stats, lambda s: float(np.sqrt(_ratio("sse")(s))), _ERROR_KEYS),
    "r2": SumMetric("r2", _error_stats, _r2, _ERROR_KEYS),
}
PROBABILITY_METRICS = {
    "accuracy": SumMetric("accuracy", _probability_accuracy_stats, _ratio("correct"), ("correct", "count")),
}


def get_metrics(metrics: tuple[MetricLike, ...] | list[MetricLike], from_logits: bool = True) -> tuple[Metric, ...]:
    """The metrics named in `metrics` (registered names, or objects with empty/update/merge/compute).

    With `from_logits=False` accuracy thresholds a single output at 0.5 instead of 0.
    Raises ValueError for an unknown name, TypeError for an object without the four functions and a name.
    """
    unknown = [m for m in metrics if isinstance(m, str) and m not in METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {unknown}; known: {', '.join(sorted(METRICS))}, "
            "or pass an object with name, empty, update, merge and compute"
        )
    found = []
    for m in metrics:
        if isinstance(m, str):
            m = (METRICS if from_logits else {**METRICS, **PROBABILITY_METRICS})[m]
        elif not isinstance(m, Metric):
            raise TypeError(f"metric {m!r} needs a name and empty/update/merge/compute (CLU's Metric shape)")
        found.append(m)
    names = [m.name for m in found]
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"metric names must be unique and not 'loss', got {names}")
    return tuple(found)


def batch_stats(metrics: tuple[Metric, ...], outputs: Array, y: Array, w: Array) -> dict[str, Any]:
    """Every metric's state for one batch, keyed by metric name (on the device)."""
    return {
        m.name: m.stats(outputs, y, w) if isinstance(m, SumMetric) else m.update(m.empty(), outputs, y, w)
        for m in metrics
    }


def empty_states(metrics: tuple[Metric, ...]) -> dict[str, Any]:
    """Every metric's state of no rows."""
    return {m.name: m.empty() for m in metrics}


def merge_states(metrics: tuple[Metric, ...], a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's running sums `a` merged with one batch's `b`: "loss" added, each metric by its `merge`."""
    merged = {m.name: m.merge(a[m.name], b[m.name]) for m in metrics}
    return {"loss": jax.tree.map(jnp.add, a["loss"], b["loss"]), **merged}


def finish(metrics: tuple[Metric, ...], sums: Mapping[str, Any]) -> dict[str, float]:
    """Turn accumulated states (fetched to the host) into metric values."""
    host = jax.device_get(sums)
    return {m.name: float(m.compute(host[m.name])) for m in metrics}
