"""A Keras-like model summary: each layer's output shape and parameter count.

The model is traced once with `jax.eval_shape` (no computation), recording
the output of every direct sub-layer in call order, so the table shows layers
the way Keras's `model.summary()` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import numpy as np


@dataclass(frozen=True)
class LayerRow:
    """One line of the summary; `output_shape` has None for the batch axis."""

    name: str
    kind: str
    output_shape: tuple
    params: int


def count_params(tree: Any) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def summarize(model: nn.Module, params: Any, sample_x: np.ndarray) -> list[LayerRow]:
    """The model's direct sub-layers in call order, with output shapes and parameter counts."""
    kinds: dict[str, str] = {}

    def record(module: nn.Module, method_name: str) -> bool:
        if method_name != "__call__" or len(module.path) != 1:
            return False
        kinds.setdefault(module.path[0], type(module).__name__)
        return True

    def run(p: Any, x: Any) -> Any:
        _, state = model.apply({"params": p}, x, train=False, capture_intermediates=record, mutable=["intermediates"])
        return state["intermediates"]

    captured = jax.eval_shape(run, params, np.asarray(sample_x[:1]))
    rows = []
    for name, kind in kinds.items():
        out = captured[name]["__call__"][0]
        shape = out[0].shape if isinstance(out, tuple) else out.shape
        rows.append(LayerRow(name, kind, (None, *shape[1:]), count_params(params.get(name, {}))))
    return rows


def summary_markdown(rows: list[LayerRow], total: int | None = None) -> str:
    """The summary as a Markdown table with a total line."""
    total = sum(r.params for r in rows) if total is None else total
    lines = ["| layer (type) | output shape | params |", "|---|---|---:|"]
    lines += [f"| {r.name} ({r.kind}) | {r.output_shape} | {r.params:,} |" for r in rows]
    lines.append(f"| **total** | | **{total:,}** |")
    return "\n".join(lines)
