"""Checks of a run's config and directories before anything loads or trains.

`validate(config)` checks every field an experiment config may have, by its
name (so one rule covers `--batch-size` in every experiment): ranges, allowed
values and the combinations that cannot work together (an explicitly given
data directory through `dlchapter.configs.directory_checks.check_data_dir`, where
the run directory's checks are too). Each problem raises one `ConfigError`
whose message names the flag and says what is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from dlchapter.configs.config_errors import ConfigError
from dlchapter.configs.directory_checks import check_data_dir
from dlchapter.presets.datasets import TARGET_KINDS, datasets_of_kind

SEED_LIMIT = 2**32
VALIDATION_MODES = ("stratified", "shuffled", "last")
SEQUENCE_MODELS = ("simple_rnn", "gru", "lstm", "dense")
SEQUENCE_DATASETS = {"temperatures": ("daily_min_temperatures",), "images": ("mnist", "fashion_mnist")}

AT_LEAST_ONE = (
    "epochs",
    "batch_size",
    "ensemble",
    "k",
    "rows",
    "steps",
    "points",
    "num_layers",
    "window",
    "holdout_train",
    "holdout_test",
    "eval_batch_size",
    "holdout_repeats",
    "samples",
    "train_rows",
    "validation_rows",
    "max_train",
    "max_test",
)
AT_LEAST_ZERO = ("patience", "steps_per_call", "checkpoint_every_epochs", "checkpoint_every_steps")
SEEDS = ("seed", "split_seed", "sample_seed", "seeds")
POSITIVE = ("learning_rate", "decay_learning_rate", "learning_rates", "clip_global_norm", "clip_features", "max_target")
NON_NEGATIVE = ("decay", "l2", "l2s", "min_delta")
RATES = ("dropout", "dropouts")  # 0 <= rate < 1
WIDTHS = ("hidden", "dense_hidden")  # each >= 1
OPEN_FRACTIONS = ("test_size", "validation_fraction", "holdout_fraction", "threshold")  # strictly inside (0, 1)

TASKS_BY_CLASS = {
    "TabularConfig": ("regression", "binary", "multiclass"),
    "CsvConfig": ("regression", "binary", "multiclass"),
    "SweepRunConfig": ("regression", "binary"),  # one output per model
    "OverfittingConfig": ("regression", "binary"),
    "SequenceConfig": ("temperatures", "images"),
}
KINDS_BY_CLASS = {
    "TabularConfig": ("regression", "binary", "multiclass"),
    "SweepRunConfig": ("regression", "binary", "multiclass"),
    "OverfittingConfig": ("regression", "binary"),
    "BatchSizeConfig": ("regression",),
    "OptimizersConfig": ("regression",),
    "ValidationConfig": ("binary",),
    "ImageConfig": ("images",),
    "SequenceConfig": ("series", "images"),
}
NEEDS_HIDDEN = (
    "TabularConfig",
    "CsvConfig",
    "SweepRunConfig",
    "OverfittingConfig",
    "BatchSizeConfig",
    "OptimizersConfig",
    "ValidationConfig",
)


def flag(name: str) -> str:
    """The command-line flag of a config field: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


# The names of dlchapter.engine.optim.OPTIMIZERS, dlchapter.concepts.activations.ELEMENTWISE (sorted) and
# dlchapter.engine.precision.POLICIES, written out so that `--help` and config checks import no JAX;
# tests/test_cli.py checks that they equal the registries.
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "momentum", "rmsprop", "adam")
ACTIVATION_NAMES: tuple[str, ...] = ("gelu", "gelu_tanh", "leaky_relu", "linear", "relu", "sigmoid", "tanh")
PRECISION_NAMES: tuple[str, ...] = ("fp32", "bf16")


def _optimizers() -> tuple[str, ...]:
    return OPTIMIZER_NAMES


def _activations() -> tuple[str, ...]:
    return ACTIVATION_NAMES


def _precisions() -> tuple[str, ...]:
    return PRECISION_NAMES


CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {
    "optimizer": _optimizers,
    "optimizers": _optimizers,
    "decay_optimizer": _optimizers,
    "activation": _activations,
    "precision": _precisions,
    "validation_mode": lambda: VALIDATION_MODES,
    "style": lambda: ("compact", "functional"),
    "models": lambda: SEQUENCE_MODELS,
    "search": lambda: ("grid", "random"),
    "only": lambda: ("california", "pima_kfold"),
    "missing": lambda: ("error", "drop", "impute"),
    "handle_unknown": lambda: ("error", "ignore"),
}
"""Allowed values of a field, or of each item of a tuple field, whatever the config class."""


def choices_for(cls: type, name: str) -> tuple[str, ...] | None:
    """The allowed values of field `name` of config class `cls` (None: not a fixed set)."""
    if name == "task" and cls.__name__ in TASKS_BY_CLASS:
        return TASKS_BY_CLASS[cls.__name__]
    if name == "dataset" and cls.__name__ in KINDS_BY_CLASS:
        return datasets_of_kind(*KINDS_BY_CLASS[cls.__name__])
    return CHOICES[name]() if name in CHOICES else None


def _items(value: Any) -> Iterable[Any]:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)


def _number(name: str, value: Any, ok: Callable[[float], bool], allowed: str) -> None:
    for item in _items(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item) or not ok(item):
            raise ConfigError(f"{flag(name)} {_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "''"
    return str(value)


SEARCHED_LISTS = ("learning_rates", "l2s", "dropouts", "seeds")  # a sweep's grid axes


def _check_ranges(values: dict[str, Any]) -> None:
    rules: list[tuple[tuple[str, ...], Callable[[float], bool], str]] = [
        (AT_LEAST_ONE, lambda v: v >= 1 and v == int(v), "must be a whole number >= 1"),
        (AT_LEAST_ZERO, lambda v: v >= 0 and v == int(v), "must be a whole number >= 0"),
        (SEEDS, lambda v: 0 <= v < SEED_LIMIT and v == int(v), "seeds must be whole numbers in [0, 2**32)"),
        (POSITIVE, lambda v: v > 0, "must be a finite number > 0 (or none where the default applies)"),
        (NON_NEGATIVE, lambda v: v >= 0, "must be a finite number >= 0"),
        (RATES, lambda v: 0 <= v < 1, "a dropout rate must be in [0, 1)"),
        (WIDTHS, lambda v: v >= 1 and v == int(v), "each width must be a whole number >= 1"),
        (("batch_sizes",), lambda v: v >= 1 and v == int(v), "each batch size must be a whole number >= 1"),
        (OPEN_FRACTIONS, lambda v: 0 < v < 1, "must be strictly between 0 and 1"),
        (("validation_split",), lambda v: 0 <= v < 1, "must be in [0, 1) (0: no validation split)"),
        (("clip_quantile",), lambda v: 0 <= v < 0.5, "must be in [0, 0.5) (or none for no clipping)"),
        (("true_w", "true_b"), lambda v: True, "must be finite numbers"),
        (
            ("folds",),
            lambda v: v == 0 or (v >= 2 and v == int(v)),
            "must be 0 (one validation split) or a whole number >= 2",
        ),
    ]
    for names, ok, allowed in rules:
        for name in names:
            if name in values:
                _number(name, values[name], ok, allowed)
    if "true_w" in values and len(values["true_w"]) != 2:  # the backprop example's two features
        weights = _show(values["true_w"])
        raise ConfigError(f"{flag('true_w')} {weights}: give two weights, one per feature (e.g. 2,-1.5)")
    for name in SEARCHED_LISTS:  # an empty list would train no model at all
        if values.get(name) == ():
            raise ConfigError(f"{flag(name)} '': give at least one value (comma-separated)")


def _check_choices(cls: type, values: dict[str, Any]) -> None:
    for name, value in values.items():
        allowed = choices_for(cls, name)
        if allowed is None:
            continue
        for item in _items(value):
            if item not in allowed:
                raise ConfigError(f"{flag(name)} {item!r} is not allowed; choose one of {', '.join(allowed)}")


def _logged(cls: type, values: dict[str, Any]) -> list[str]:
    """The history names a tabular or sweep run logs: loss, the task's metrics, val_ ones with a validation split."""
    from dlchapter.engine.train import TASKS

    names = ["loss", *TASKS[values["task"]].metrics]
    has_validation = values.get("validation_split", 0) > 0 or values.get("folds", 0) >= 2
    logged = names + [f"val_{n}" for n in names] if has_validation else names
    if cls.__name__ == "SweepRunConfig" and values["task"] == "binary" and has_validation:
        logged.append("val_auc")  # a sweep scores each model's validation AUC too
    return logged


def _check_dense(cls: type, values: dict[str, Any]) -> None:
    hidden = values.get("hidden")
    if cls.__name__ in NEEDS_HIDDEN and not hidden:
        raise ConfigError("--hidden is empty: give at least one hidden-layer width, e.g. --hidden 100,200")
    dropout = values.get("dropout")
    if isinstance(dropout, tuple) and dropout and len(dropout) != len(hidden):
        raise ConfigError(
            f"--dropout {_show(dropout)} gives {len(dropout)} rates for {len(hidden)} hidden layers "
            f"(--hidden {_show(hidden)}): "
            "give one rate per hidden layer, or '' for none"
        )
    for layer in values.get("dropout_layers", ()):
        if not 0 <= layer < len(hidden):
            raise ConfigError(
                f"--dropout-layers {layer}: a hidden layer index in [0, {len(hidden)}) for --hidden {_show(hidden)}"
            )


def _check_task(cls: type, values: dict[str, Any]) -> None:
    task, dataset = values.get("task"), values.get("dataset")
    if cls.__name__ == "SequenceConfig":
        if dataset is not None and dataset not in SEQUENCE_DATASETS[task]:
            raise ConfigError(
                f"--dataset {dataset!r} does not fit --task {task}; choose one of {', '.join(SEQUENCE_DATASETS[task])}"
            )
        return
    if task is None or dataset is None or dataset not in TARGET_KINDS:
        return
    if TARGET_KINDS[dataset] != task:
        raise ConfigError(
            f"--task {task} does not fit --dataset {dataset}, whose target is {TARGET_KINDS[dataset]}: "
            f"use --task {TARGET_KINDS[dataset]}"
        )


REGRESSION_ONLY = ("max_target", "log_target", "scale_target", "xgboost")  # fields with no effect on classification


def _check_task_options(values: dict[str, Any]) -> None:
    """Options that act on a regression target only, and `--drop-implausible` on a data set without known ranges."""
    task = values.get("task")
    if task in ("binary", "multiclass"):
        for name in REGRESSION_ONLY:
            if values.get(name) not in (None, False):
                raise ConfigError(
                    f"{flag(name)} {_show(values[name])} acts on a regression target, and --task is {task}: "
                    f"leave {flag(name)} out (or use a regression data set)"
                )
    dataset = values.get("dataset")
    if values.get("drop_implausible") and dataset is not None and "data_path" not in values:
        from dlchapter.data.tabular import PLAUSIBLE_RANGES

        if dataset not in PLAUSIBLE_RANGES:
            raise ConfigError(
                f"--drop-implausible: no physically possible ranges are known for --dataset {dataset} "
                f"(known: {', '.join(sorted(PLAUSIBLE_RANGES))}); leave it out"
            )


def _check_monitor(cls: type, values: dict[str, Any]) -> None:
    if "task" not in values or values["task"] not in TASKS_BY_CLASS["TabularConfig"]:
        return
    for name in ("monitor", "select_by"):
        wanted = values.get(name)
        if wanted is None or name not in values:
            continue
        logged = _logged(cls, values)
        if wanted not in logged:
            hint = " (val_ names need --validation-split > 0)" if wanted.startswith("val_") else ""
            raise ConfigError(
                f"{flag(name)} {wanted!r} is never logged by this run{hint}; choose one of {', '.join(logged)} or none"
            )


def _check_ensemble(values: dict[str, Any]) -> None:
    if values.get("ensemble", 1) <= 1:
        return
    clashes = {
        "--data-parallel": values.get("data_parallel", False),
        "--steps-per-call": values.get("steps_per_call") is not None,
        "--debug-nans": values.get("debug_nans", False),
    }
    given = [name for name, on in clashes.items() if on]
    if given:
        raise ConfigError(
            f"--ensemble {values['ensemble']} trains in one vmapped program and cannot go with {', '.join(given)}; "
            "use --ensemble 1 for those"
        )
    rates = {r for r in _items(values.get("dropout")) if r}
    if len(rates) > 1:
        raise ConfigError(
            f"--ensemble {values['ensemble']} shares one dropout rate between layers; "
            f"--dropout {_show(values['dropout'])} has {len(rates)}"
        )


def _check_csv(values: dict[str, Any]) -> None:
    """A generic run on a file given by path: the file, the target and its role (before anything loads)."""
    if "data_path" not in values:
        return
    path = str(values["data_path"])
    if not path.strip():
        raise ConfigError("--data-path is required: give the CSV file to train on (e.g. --data-path houses.csv)")
    if not Path(path).exists():
        raise ConfigError(f"--data-path {path}: no such file")
    if not Path(path).is_file():
        raise ConfigError(f"--data-path {path}: not a file")
    target = values.get("target", "")
    if not str(target).strip():
        raise ConfigError("--target is required: name the column to predict, as the CSV's header spells it")
    if target in values.get("categorical", ()):
        raise ConfigError(
            f"--target {target!r} is also listed in --categorical: the target cannot be a categorical feature; "
            "remove it from --categorical (use --task binary or multiclass for class labels)"
        )
    if len(values.get("sep", ",")) != 1:
        raise ConfigError(f"--sep {values['sep']!r}: give one character, e.g. --sep ';' or --sep $'\\t'")
    if values.get("drop_implausible"):
        raise ConfigError("drop_implausible knows only the built-in data sets' ranges, not a file given by path")


def _check_packages(values: dict[str, Any]) -> None:
    if values.get("xgboost") and importlib.util.find_spec("xgboost") is None:
        raise ConfigError(
            "--xgboost needs the xgboost package, which is not installed: pip install xgboost (or --xgboost false)"
        )


def validate(config: Any, *, ignore: Collection[str] = ()) -> None:
    """Raise ConfigError for the first field of `config` (an experiment config dataclass) that cannot work.

    Fields named in `ignore` are not checked (e.g. ``dataset`` when the caller passes its own `Dataset`).
    """
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in ignore}
    cls = type(config)
    _check_choices(cls, values)
    _check_ranges(values)
    _check_dense(cls, values)
    _check_task(cls, values)
    _check_task_options(values)
    _check_monitor(cls, values)
    _check_ensemble(values)
    _check_csv(values)
    if values.get("data_dir") is not None:
        check_data_dir(values["data_dir"])
    _check_packages(values)
