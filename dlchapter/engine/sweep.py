"""Sweeps of the chapter's dense network (and of any linen module): configurations x seeds x folds in one program.

`SweepConfig` describes what all models of a sweep share; `SweepTrainer` is the many-models engine
(`dlchapter.engine.many_models.ManyModels`) for it: by default the chapter's MLP with a traced dropout rate
(`SweepMLP`), so dropout can differ per model; `SweepTrainer(config, model=module)` trains any linen
module instead (the chapter's CNN or RNNs, a user's own) with the config's task, optimizer, epochs and
early stopping. `SweepData`/`kfold_data` (`dlchapter.engine.sweep_data`) hold the data with a fold axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.many_models import ManyModels
from dlchapter.engine.member_programs import Member
from dlchapter.engine.optim import OptimizerConfig
from dlchapter.engine.precision import Policy
from dlchapter.engine.sweep_data import ModelSpec, SweepData, SweepResult, kfold_data
from dlchapter.engine.train import TASKS
from dlchapter.models.sweep_mlp import SweepMLP

__all__ = ["Member", "ModelSpec", "SweepConfig", "SweepData", "SweepResult", "SweepTrainer", "kfold_data"]


@dataclass(frozen=True)
class SweepConfig:
    """What all models share (and what a compiled program depends on)."""

    task: str = "regression"
    hidden: tuple[int, ...] = (100, 200)
    out_features: int = 1
    activation: str = "relu"
    dropout_layers: tuple[int, ...] = ()
    optimizer: str = "adam"
    momentum: float | None = None
    clip_global_norm: float | None = None
    epochs: int = 100
    batch_size: int = 128
    shuffle: bool = True
    monitor: str | None = "val_loss"  # early stopping per model; None: every model runs all epochs
    patience: int = 4
    min_delta: float = 0.0
    mode: str = "auto"
    eval_batch_size: int = 1024

    def model(self) -> SweepMLP:
        return SweepMLP(self.hidden, self.out_features, self.activation, self.dropout_layers, TASKS[self.task].head)


class SweepTrainer(ManyModels):
    """`ManyModels` configured by a `SweepConfig`: its task, optimizer, epochs, batch size and early stopping.

    `model`: any `flax.linen.Module` (default `config.model()`, the chapter's MLP with a traced dropout rate;
    `hidden`, `out_features`, `activation` and `dropout_layers` describe only that default).
    Raises ValueError when `config.monitor` is not a name the task logs.
    """

    def __init__(self, config: SweepConfig, model: Any = None, *, precision: str | Policy = "fp32"):
        self.config = config
        rule = EarlyStopping(config.monitor, config.patience, config.min_delta, config.mode) if config.monitor else None
        optimizer = OptimizerConfig(
            config.optimizer, clip_global_norm=config.clip_global_norm, momentum=config.momentum
        )
        super().__init__(
            config.model() if model is None else model,
            TASKS[config.task],
            optimizer,
            epochs=config.epochs,
            batch_size=config.batch_size,
            shuffle=config.shuffle,
            early_stopping=rule,
            eval_batch_size=config.eval_batch_size,
            precision=precision,
        )
