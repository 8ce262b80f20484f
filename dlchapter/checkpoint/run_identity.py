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
import hashlib
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
# Added to a command line's run config in its checkpoints: a digest of the data it trains and validates on
# (`data_digest`), so other data under the same data set name (another --data-dir) is not resumed into.
DATA_DIGEST_FIELD = "data_content_digest"
EXTENSIBLE_FIELDS = frozenset({"epochs"})
_DATA_DIGEST_NAMES = frozenset(
    {DATA_DIGEST_FIELD, "data.content_digest"}
)  # listed only when nothing else differs  # may grow between a run and its resume (never shrink)


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


def fit_identity(
    fit_config: Any, x: Any, y: Any, state: Any = None, validation_data: tuple[Any, Any] | None = None
) -> dict[str, Any]:
    """The identity `Trainer.fit` stores when its caller gives no run config (the Python API).

    The FitConfig; the data's shapes and a digest of its bytes (`data_digest`: training rows and validation
    data); and, given the initial `state`, the weights' shapes by name (`dense_0/kernel`), a digest of their
    initial values (`weights_digest`) and one of what its optimizer does (`optimizer_probe`). So a rerun with
    other data of the same shape, another learning rate or optimizer, or another initialisation is refused
    (`RunMismatch`) instead of silently continuing the checkpointed run.
    """
    fields = {f.name: getattr(fit_config, f.name) for f in dataclasses.fields(fit_config) if f.name != "progress"}
    data = {"x_shape": _shapes(x), "y_shape": _shapes(y), "content_digest": data_digest(x, y, validation_data)}
    found = {"fit": fields, "data": data}
    if state is not None:
        shapes = {
            jax.tree_util.keystr(path, simple=True, separator="/"): list(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
        }
        found["initial_weights"] = {"shapes": shapes, "digest": weights_digest(state.params)}
        if getattr(state, "tx", None) is not None:
            found["optimizer_updates_digest"] = optimizer_probe(state.tx, state.params)
    return found


def _digest(parts: Any) -> str:
    hasher = hashlib.blake2b(digest_size=8)
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else str(part).encode())
    return hasher.hexdigest()


def data_digest(*trees: Any) -> str:
    """16 hex digits of BLAKE2b over every array's path, dtype, shape and bytes (None trees included as such).

    About 1 GB/s on one core: 0.2 s for MNIST's 188 MB of float32 images.
    """

    def parts() -> Any:
        for tree in trees:
            leaves = jax.tree_util.tree_leaves_with_path(tree)
            yield f"tree:{len(leaves)}"
            for path, leaf in leaves:
                array = np.ascontiguousarray(np.asarray(leaf))
                yield f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}"
                yield array.tobytes()

    return _digest(parts())


def weights_digest(params: Any) -> str:
    """A digest of each weight array's shape, sum and sum of squares to 6 significant digits.

    Rounded, so the same initialisation on another backend (whose last bits may differ) gives the same digest.
    """
    leaves = [
        (jax.tree_util.keystr(path), np.asarray(jax.device_get(leaf), np.float64))
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    ]
    return _digest(f"{path}|{array.shape}|{_sig(array.sum())}|{_sig(np.square(array).sum())}" for path, array in leaves)


def _sig(value: Any) -> str:
    return f"{float(value):.6g}"


def optimizer_probe(tx: Any, params: Any) -> str:
    """What the optimizer `tx` (an optax GradientTransformation) does, as a digest: its state's structure and
    the mean update per weight array over two probe steps (gradients 0.5, then -0.25, from `params`), to 5
    significant digits. Another optimizer, learning rate, momentum, schedule or L2 gives another digest.

    One small compiled program (the two updates), run once per checkpointing `fit` of the Python API.
    """
    import jax.numpy as jnp  # noqa: PLC0415 - only a checkpointing fit of the Python API probes

    def probe(weights: Any) -> list[jax.Array]:
        opt_state = tx.init(weights)
        first, opt_state = tx.update(jax.tree.map(lambda w: jnp.full_like(w, 0.5), weights), opt_state, weights)
        moved = jax.tree.map(lambda w, u: w + u, weights, first)
        second, _ = tx.update(jax.tree.map(lambda w: jnp.full_like(w, -0.25), weights), opt_state, moved)
        return [jnp.mean(u) for u in jax.tree.leaves(first) + jax.tree.leaves(second)]

    structure = jax.tree.structure(jax.eval_shape(tx.init, params))
    means = jax.device_get(jax.jit(probe)(params))
    return _digest([str(structure), *(f"{float(m):.5g}" for m in means)])


def _shapes(tree: Any) -> Any:
    """An array's shape as a list; a pytree's as {path: shape} (so both fit in JSON meta)."""
    if hasattr(tree, "shape"):
        return list(np.shape(tree))
    return {jax.tree_util.keystr(p): list(np.shape(leaf)) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`name: old -> new` for every field of the identities that differs (a larger `epochs` is not a difference).

    A data digest is listed only when no other field differs: another seed or validation split changes the rows
    trained on, and that field is the difference worth naming.
    """
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
    data_changes = [line for line in found if line.split(":", 1)[0] in _DATA_DIGEST_NAMES]
    if len(data_changes) < len(found):  # the data follows from the config (a seed, a split): its digest adds nothing
        found = [line for line in found if line not in data_changes]
    return found


CLI_ADVICE = "pass --restart to delete them and start over, or use another --workdir"
API_ADVICE = "pass CheckpointConfig(restart=True) to delete them and start over, or use another directory"


def check_same_run(stored: Any, current: Mapping[str, Any], where: str, advice: str = CLI_ADVICE) -> None:
    """Raises RunMismatch unless `current` may resume the checkpoint at `where` whose stored config is `stored`.

    `advice`: what the message tells the user to do (the command line's flags by default, `API_ADVICE` for `fit`).
    """
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
