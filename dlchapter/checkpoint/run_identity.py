"""A run's identity: the part of its resolved config that decides what it trains.

Every checkpoint stores the run's resolved config (`dlchapter.configs.config.config_dict`,
a JSON dict; nested sections allowed). A rerun into the same checkpoint
directory resumes only when its identity equals the stored one, where the
identity is the config without the fields in `RESULT_NEUTRAL_FIELDS` (matched
by their last name, so `runtime.restart` and `restart` are both left out).
One difference is allowed: a larger `epochs` trains the extra epochs (the
README says when that equals one longer run). Any other difference raises
`RunMismatch`, which lists every differing field as `name: old -> new`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from dlchapter.checkpoint.checkpoint_errors import CheckpointError

# Fields that cannot change the trained weights or the history, and so may differ between a run and its resume:
# where the run and its data live and how it is restarted, how often it checkpoints, how many steps one compiled
# call runs, debugging and display switches, and what is computed from the trained network after training
# (the binary decision threshold, the XGBoost baseline beside it, the preset's note).
RESULT_NEUTRAL_FIELDS = frozenset(
    {
        "restart",
        "workdir",
        "data_dir",
        "steps_per_call",
        "checkpoint_every_epochs",
        "checkpoint_every_steps",
        "debug",
        "debug_nans",
        "progress",
        "note",
        "threshold",
        "xgboost",
    }
)
EXTENSIBLE_FIELDS = frozenset({"epochs"})  # may grow between a run and its resume (never shrink)


class RunMismatch(CheckpointError):
    """The checkpoints in a directory belong to a run with another config."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` flattened to dotted names (`optimizer.learning_rate`), without the result-neutral fields."""
    flat = _flatten(json.loads(json.dumps(config)))  # tuples -> lists, as stored
    return {name: value for name, value in flat.items() if name.rsplit(".", 1)[-1] not in RESULT_NEUTRAL_FIELDS}


def fit_identity(fit_config: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The identity `Trainer.fit` stores when its caller gives no run config: the FitConfig and the data's shapes."""
    fields = {f.name: getattr(fit_config, f.name) for f in dataclasses.fields(fit_config) if f.name != "progress"}
    return {"fit": fields, "data": {"x_shape": _shapes(x), "y_shape": _shapes(y)}}


def _shapes(tree: Any) -> Any:
    """An array's shape as a list; a pytree's as {path: shape} (so both fit in JSON meta)."""
    if hasattr(tree, "shape"):
        return list(np.shape(tree))
    return {jax.tree_util.keystr(p): list(np.shape(leaf)) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`name: old -> new` for every field of the identities that differs (a larger `epochs` is not a difference)."""
    old, new = identity(stored), identity(current)
    found = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, "(absent)"), new.get(name, "(absent)")
        if before == after:
            continue
        last = name.rsplit(".", 1)[-1]
        if last in EXTENSIBLE_FIELDS and isinstance(before, int) and isinstance(after, int) and after > before:
            continue
        note = " (fewer than the checkpointed run)" if last in EXTENSIBLE_FIELDS and before != "(absent)" else ""
        found.append(f"{name}: {json.dumps(before)} -> {json.dumps(after)}{note}")
    return found


def check_same_run(stored: Any, current: Mapping[str, Any], where: str) -> None:
    """Raises RunMismatch unless `current` may resume the checkpoint at `where` whose stored config is `stored`."""
    advice = "pass --restart to delete them and start over, or use another --workdir"
    if not isinstance(stored, Mapping):
        raise RunMismatch(
            f"the checkpoint {where} records no run config (written before runs were bound to "
            f"their checkpoints), so it cannot be resumed safely; {advice}"
        )
    found = differences(stored, current)
    if found:
        raise RunMismatch(
            f"the checkpoints in {where} belong to a run with another config ({'; '.join(found)}); {advice}"
        )
