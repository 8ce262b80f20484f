"""dlchapter: a deep-learning textbook chapter as pure-functional JAX/Flax code.

The public API (README, "Bring your own model"), loaded on first use so `import dlchapter` stays light:

- `Trainer(task)`: compiled fit / evaluate / predict for any `flax.linen.Module` or `flax.nnx.Module`;
- `Task`, `TASKS`: the loss (a name or a callable), metrics, output head and `from_logits`;
- `FitConfig`, `History`, `EarlyStopping`: how `fit` iterates, what it returns, when it stops;
- `TrainState`, `create_train_state`: params, the model's collections (batch_stats) and the optimizer;
  `nnx_model`: the trained `flax.nnx.Module` of a state made from one;
- `Callback`, `FitRun`, `LambdaCallback`: `fit`'s hooks (on_train_begin / on_train_batch_end / on_epoch_end /
  on_train_end) and the run they see; `EarlyStoppingHook`, `CheckpointHook`: the built-in ones;
- `save_model`, `restore_model`: a trained state on disk and back, in two calls;
- `Metric`, `SumMetric`, `MaxAbsoluteError`: the metric protocol (empty / update / merge / compute),
  the registered kind, and a metric that is not a sum;
- `ManyModels`, `ModelSpec`, `SweepData`: N models of any linen module trained in one vmapped program
  (seeds, learning rates, L2, decay, folds), each exactly as `Trainer.fit` would train it alone;
- `TrainingDiverged`: raised when the loss becomes NaN or infinite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Trainer": "dlchapter.engine.train",
    "Task": "dlchapter.engine.task",
    "TASKS": "dlchapter.engine.task",
    "FitConfig": "dlchapter.engine.task",
    "History": "dlchapter.engine.task",
    "TrainState": "dlchapter.engine.train_state",
    "TrainingDiverged": "dlchapter.engine.train",
    "create_train_state": "dlchapter.engine.train_state",
    "nnx_model": "dlchapter.engine.train_state",
    "Callback": "dlchapter.engine.fit_hooks",
    "FitRun": "dlchapter.engine.fit_hooks",
    "LambdaCallback": "dlchapter.engine.fit_hooks",
    "EarlyStoppingHook": "dlchapter.engine.fit_hooks",
    "CheckpointHook": "dlchapter.engine.fit_hooks",
    "EarlyStopping": "dlchapter.engine.callbacks",
    "save_model": "dlchapter.checkpoint.model_io",
    "restore_model": "dlchapter.checkpoint.model_io",
    "Metric": "dlchapter.engine.metrics",
    "SumMetric": "dlchapter.engine.metrics",
    "MaxAbsoluteError": "dlchapter.engine.metrics",
    "ManyModels": "dlchapter.engine.many_models",
    "ModelSpec": "dlchapter.engine.sweep_data",
    "SweepData": "dlchapter.engine.sweep_data",
}

__all__ = [
    "TASKS",
    "Callback",
    "CheckpointHook",
    "EarlyStopping",
    "EarlyStoppingHook",
    "FitConfig",
    "FitRun",
    "History",
    "LambdaCallback",
    "ManyModels",
    "MaxAbsoluteError",
    "ModelSpec",
    "Metric",
    "SumMetric",
    "SweepData",
    "Task",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "__version__",
    "create_train_state",
    "nnx_model",
    "restore_model",
    "save_model",
]

if TYPE_CHECKING:
    from dlchapter.checkpoint.model_io import restore_model, save_model
    from dlchapter.engine.callbacks import EarlyStopping
    from dlchapter.engine.fit_hooks import Callback, CheckpointHook, EarlyStoppingHook, FitRun, LambdaCallback
    from dlchapter.engine.many_models import ManyModels
    from dlchapter.engine.metrics import MaxAbsoluteError, Metric, SumMetric
    from dlchapter.engine.sweep_data import ModelSpec, SweepData
    from dlchapter.engine.task import TASKS, FitConfig, History, Task
    from dlchapter.engine.train import Trainer, TrainingDiverged
    from dlchapter.engine.train_state import TrainState, create_train_state, nnx_model


def __getattr__(name: str) -> Any:
    """Import the public name `name` from its module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlchapter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
