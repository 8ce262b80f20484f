"""Streaming metrics that stay on the device.

A metric is a pair of functions: `stats(outputs, y, w)` gives weighted sums for
one batch (jit-friendly, added up across batches on the device) and `result`
turns the accumulated sums into a number on the host, once per epoch. Padded
rows have weight 0 and count for nothing. Because only sums travel, R2 and
RMSE over an epoch are exact, not averages of per-batch values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter import losses

Array = jax.Array
Stats = dict[str, Array]


@dataclass(frozen=True)
class Metric:
    """A streaming metric: per-batch sufficient statistics and how to finish them."""

    name: str
    stats: Callable[[Array, Array, Array], Stats]
    result: Callable[[Mapping[str, float]], float]


def predicted_classes(outputs: Array) -> Array:
    """Class indices from logits: z > 0 for a single binary output, else arg-max."""
    if outputs.shape[-1] == 1:
        return (outputs[..., 0] > 0).astype(jnp.int32)
    return jnp.argmax(outputs, axis=-1).astype(jnp.int32)


def target_classes(y: Array, n_outputs: int) -> Array:
    """Class indices from integer labels, 0/1 targets, or one-hot rows."""
    if y.ndim == 2 and y.shape[-1] == n_outputs and n_outputs > 1:
        return jnp.argmax(y, axis=-1).astype(jnp.int32)
    return y.reshape(y.shape[0]).astype(jnp.int32)


def _accuracy_stats(outputs: Array, y: Array, w: Array) -> Stats:
    correct = predicted_classes(outputs) == target_classes(y, outputs.shape[-1])
    return {"correct": jnp.sum(correct * w), "count": jnp.sum(w)}


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


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", _accuracy_stats, _ratio("correct")),
    "mse": Metric("mse", _error_stats, _ratio("sse")),
    "mae": Metric("mae", _error_stats, _ratio("sae")),
    "rmse": Metric("rmse", _error_stats, lambda s: float(np.sqrt(_ratio("sse")(s)))),
    "r2": Metric("r2", _error_stats, _r2),
}


def get_metrics(names: tuple[str, ...] | list[str]) -> tuple[Metric, ...]:
    """The metrics registered under `names`."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(sorted(METRICS))}")
    return tuple(METRICS[n] for n in names)


def batch_stats(metrics: tuple[Metric, ...], outputs: Array, y: Array, w: Array) -> dict[str, Stats]:
    """Every metric's sums for one batch, keyed by metric name (on the device)."""
    return {m.name: m.stats(outputs, y, w) for m in metrics}


def finish(metrics: tuple[Metric, ...], sums: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """Turn accumulated sums (fetched to the host) into metric values."""
    host = jax.device_get(sums)
    return {m.name: m.result({k: float(v) for k, v in host[m.name].items()}) for m in metrics}
