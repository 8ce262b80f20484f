"""dlchapter: a deep-learning textbook chapter as pure-functional JAX/Flax code.

The public API (README, "Bring your own model"), loaded on first use so `import dlchapter` stays light:

- `Trainer(task)`: compiled fit / evaluate / predict for any `flax.linen.Module`;
- `Task`, `TASKS`: the loss (a name or a callable), metrics, output head and `from_logits`;
- `FitConfig`, `History`, `EarlyStopping`: how `fit` iterates, what it returns, when it stops;
- `TrainState`, `create_train_state`: params, the model's collections (batch_stats) and the optimizer;
- `save_model`, `restore_model`: a trained state on disk and back, in two calls;
- `Metric`, `SumMetric`, `MaxAbsoluteError`: the metric protocol (empty / update / merge / compute),
  the registered kind, and a metric that is not a sum;
- `TrainingDiverged`: raised when the loss becomes NaN or infinite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Trainer": "dlchapter.engine.train",
    "Task": "dlchapter.engine.train",
    "TASKS": "dlchapter.engine.train",
    "FitConfig": "dlchapter.engine.train",
    "History": "dlchapter.engine.train",
    "TrainState": "dlchapter.engine.train",
    "TrainingDiverged": "dlchapter.engine.train",
    "create_train_state": "dlchapter.engine.train",
    "EarlyStopping": "dlchapter.engine.callbacks",
    "save_model": "dlchapter.checkpoint.model_io",
    "restore_model": "dlchapter.checkpoint.model_io",
    "Metric": "dlchapter.engine.metrics",
    "SumMetric": "dlchapter.engine.metrics",
    "MaxAbsoluteError": "dlchapter.engine.metrics",
}

__all__ = [
    "TASKS",
    "EarlyStopping",
    "FitConfig",
    "History",
    "MaxAbsoluteError",
    "Metric",
    "SumMetric",
    "Task",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "__version__",
    "create_train_state",
    "restore_model",
    "save_model",
]

if TYPE_CHECKING:
    from dlchapter.checkpoint.model_io import restore_model, save_model
    from dlchapter.engine.callbacks import EarlyStopping
    from dlchapter.engine.metrics import MaxAbsoluteError, Metric, SumMetric
    from dlchapter.engine.train import (
        TASKS,
        FitConfig,
        History,
        Task,
        Trainer,
        TrainingDiverged,
        TrainState,
        create_train_state,
    )


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
