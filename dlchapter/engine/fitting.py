"""One path from a model and an optimizer description to a fitted train state.

optimizer config -> `make_optimizer` -> `create_train_state` -> precision policy -> (optional compile) ->
`Trainer.fit`; the experiment runs call `fit_model` instead of repeating these steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax

from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.engine import precision as precision_lib
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.compilation_cache import cache_hits
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import FitConfig, History, Trainer, create_train_state

# `jax.random.split(key)` as one program: eagerly it is two (the split, then the unstacking into two keys),
# each traced, lowered and compiled or fetched from the persistent cache in every process.
_split_in_two = jax.jit(lambda key: tuple(jax.random.split(key)))


@dataclass
class Fitted:
    """A finished fit: the model for `precision` (use it outside `state.apply_fn`), its state, history and trainer.

    `train_seconds`: wall time of `Trainer.fit` alone (params ready); `compile_seconds`: of `compile_train`, or None.
    `history.epochs_trained` is 0 when the fit restored a finished run from its checkpoints and trained nothing:
    `train_seconds` then times the restore, not the training (`dlchapter.reporting.report.earlier_run_timing`).
    """

    model: Any
    state: Any
    history: History
    trainer: Trainer
    train_seconds: float
    compile_seconds: float | None = None
    compile_from_cache: bool | None = None  # `compile_first`'s program came from the persistent compilation cache


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Batches in one epoch of `n_rows` rows: ceil(n_rows / min(batch_size, n_rows))."""
    return -(-n_rows // max(1, min(batch_size, n_rows)))


def fit_model(
    model: Any,
    optimizer: OptimizerConfig | optax.GradientTransformation,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig,
    key: jax.Array,
    trainer: Trainer,
    *,
    precision: str = "fp32",
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoint: CheckpointConfig | None = None,
    on_epoch_end: Callable[..., Any] | None = None,
    compile_first: bool = False,
) -> Fitted:
    """Initialise `model` and train it with `trainer.fit`.

    `key` is split once into (init_key, dropout_key), as every run did before. `optimizer` is an `OptimizerConfig`
    (built for `steps_per_epoch(len(y), config.batch_size)` steps per epoch) or an already built optax
    transformation (reuse one instance to keep `trainer`'s compiled programs). `precision` names a
    `dlchapter.engine.precision` policy. `compile_first` compiles the train program before the timed fit.
    Raises what `make_optimizer`, `precision.apply_policy` and `Trainer.fit` raise.
    """
    if isinstance(optimizer, OptimizerConfig):
        optimizer = make_optimizer(optimizer, steps_per_epoch(len(y), config.batch_size))
    init_key, dropout_key = _split_in_two(key)
    state = create_train_state(model, optimizer, x, init_key)
    model, state = precision_lib.apply_policy(model, state, precision)
    compile_seconds, compile_from_cache = None, None
    if compile_first:
        hits = cache_hits()
        compile_seconds = trainer.compile_train(state, x, y, config.batch_size, dropout_key)
        compile_from_cache = cache_hits() > hits
    started = time.perf_counter()
    state, history = trainer.fit(
        state,
        x,
        y,
        config,
        dropout_key,
        validation_data=validation_data,
        early_stopping=early_stopping,
        checkpoint=checkpoint,
        on_epoch_end=on_epoch_end,
    )
    jax.block_until_ready(state.params)
    return Fitted(model, state, history, trainer, time.perf_counter() - started, compile_seconds, compile_from_cache)
