"""Save a trained model and restore it, in two calls, through the orbax store of `dlchapter.checkpoint.store`.

    save_model("runs/my_model", state)                 # after Trainer.fit
    state = restore_model("runs/my_model", like=create_train_state(model, tx, x, key))

What is saved is the whole `TrainState` as arrays: params, the model's collections (`model_state`,
e.g. BatchNorm's batch_stats), the optimizer state and the step, so training can also continue from it.
The functions (`apply_fn`, the optimizer) are not saved: `like` supplies them, and its arrays give
the structure, shapes and dtypes the stored arrays must fit. Every leaf is checksummed at save time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
from flax.training import train_state as flax_train_state

from dlchapter.checkpoint.checkpoint_errors import CheckpointError

FORMAT = "dlchapter.model/1"


def save_model(path: str | os.PathLike[str], state: Any) -> Path:
    """Write `state` (a TrainState: params, model_state, opt_state, step) to the new directory `path`.

    Returns the absolute path. Raises FileExistsError when `path` exists and is not an empty
    directory (nothing is overwritten), CheckpointWriteError on disk-full or permission failures.
    """
    path = Path(path).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(
            f"{path} already exists; save_model writes a new directory (choose another path or delete it)"
        )
    has_collections = bool(getattr(state, "model_state", None))
    from dlchapter.checkpoint.store import CheckpointStore  # orbax, imported on first use

    with CheckpointStore(path, keep_last=1) as store:
        meta = {"format": FORMAT, "model_state": has_collections}
        store.save(int(jax.device_get(state.step)), stored_state(state), meta)
    return path


def restore_model(path: str | os.PathLike[str], *, like: Any) -> Any:
    """The state saved in `path` by `save_model`, with `like`'s functions (apply_fn, tx).

    `like`: a TrainState of the same model and optimizer (e.g. fresh from `create_train_state`); its
    arrays are only a template. Raises CheckpointError when `path` holds no model saved by
    `save_model`, when its arrays are damaged, or when they do not fit `like` (the message names
    the first parameter that differs, e.g. a model with BatchNorm restored into one without).
    """
    from dlchapter.checkpoint.store import CheckpointStore  # orbax, imported on first use

    store = CheckpointStore(path, read_only=True)
    try:
        stored, meta, _ = store.restore(stored_state(like), quarantine=False)
    finally:
        store.close()
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a model saved by save_model (format {meta.get('format')!r})")
    return from_stored(like, stored)


def stored_state(state: Any) -> Any:
    """What a checkpoint holds of `state`: the state itself, or, when it has no model collections,
    flax's TrainState without the empty `model_state` field, so such checkpoints keep the layout they
    had before `model_state` existed (older checkpoints of params-only models load unchanged)."""
    if getattr(state, "model_state", None) or not hasattr(state, "model_state"):
        return state
    return flax_train_state.TrainState(
        step=state.step, apply_fn=state.apply_fn, params=state.params, tx=state.tx, opt_state=state.opt_state
    )


def from_stored(like: Any, stored: Any) -> Any:
    """`like` with the arrays of `stored` (the inverse of `stored_state`)."""
    if stored is like or type(stored) is type(like):
        return stored
    return like.replace(step=stored.step, params=stored.params, opt_state=stored.opt_state)
