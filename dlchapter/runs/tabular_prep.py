"""Data preparation of a tabular run: load (or take) a data set, split train/test, preprocess.

Every preprocessing step (zero imputation, quantile clipping, scaling, one-hot categories, the target's
log/standardization) is fitted on the training rows only. `prepare` returns the model-ready arrays
(`TabularArrays`); `dlchapter.runs.tabular_runs` fits and reports on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlchapter.data import DataError, Dataset, load
from dlchapter.data.preprocessing import CategoricalEncoder, StandardScaler, ZeroImputer, filter_feature_range, one_hot
from dlchapter.data.splits import train_test_split
from dlchapter.data.tabular import PLAUSIBLE_RANGES
from dlchapter.presets.run_configs import TabularConfig
from dlchapter.reporting import helper_process

logger = logging.getLogger(__name__)


def _target_transform(config: TabularConfig, y_train: np.ndarray):
    """Forward and inverse maps for the regression target (log and/or standardize)."""
    forward = np.log if config.log_target else (lambda v: v)
    inverse = np.exp if config.log_target else (lambda v: v)
    if not config.scale_target:
        return forward, inverse
    scaler = StandardScaler.fit(forward(y_train).reshape(-1, 1))
    return (
        lambda v: scaler.transform(forward(v).reshape(-1, 1)).ravel(),
        lambda v: inverse(scaler.inverse_transform(np.asarray(v).reshape(-1, 1)).ravel()),
    )


def _training_targets(config: TabularConfig, ds: Dataset, y: np.ndarray, to_model) -> np.ndarray:
    if config.task == "multiclass":
        return one_hot(y, ds.n_classes)
    if config.task == "binary":
        return y.astype(np.float32)
    return to_model(y).astype(np.float32)


@dataclass
class TabularArrays:
    """The preprocessed split: model-ready arrays plus the raw test targets and the target's inverse map."""

    ds: Dataset
    x_train: np.ndarray
    y_train: np.ndarray
    raw_y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    raw_y_test: np.ndarray
    from_model: Any
    dropped_rows: int = 0  # rows removed by `drop_implausible` before the split
    categories: dict[str, list[str]] = field(default_factory=dict)  # one-hot categories from the training rows


def _given_dataset(config: TabularConfig, dataset: Dataset) -> Dataset:
    """Check a caller's `Dataset` (e.g. `dlchapter.data.load_csv`) against the config; apply max_target."""
    if dataset.task != config.task:
        where = dataset.source or dataset.name
        raise DataError(f"{where}: the data set's task is {dataset.task!r} but the run's is {config.task!r}")
    if config.max_target is not None:
        from dlchapter.data.preprocessing import filter_max_target

        dataset = filter_max_target(dataset, config.max_target)
    return dataset


def dataset_request(config: TabularConfig) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of `dlchapter.data.load` for `config`'s data set."""
    options = {"max_value": config.max_target} if config.max_target is not None else {}
    return (config.dataset,), {"data_dir": config.data_dir, "missing": config.missing, **options}


def prefetch_dataset(config: TabularConfig) -> None:
    """Start loading `config`'s data set in the run's helper process (`dlchapter.reporting.helper_process`), so
    the CSV is parsed while the training process imports JAX; `prepare` then takes the result. No-op without one."""
    args, kwargs = dataset_request(config)
    helper_process.prefetch(load, *args, **kwargs)


def prepare(config: TabularConfig, dataset: Dataset | None = None, handle_unknown: str = "error") -> TabularArrays:
    """Load (or take `dataset`), split train/test, and fit every preprocessing step on the training rows only.

    Numeric features go through the configured steps (zero imputation, quantile
    clipping, scaling); categorical columns (``dataset.categorical``) are then
    one-hot encoded with categories of the training rows (`CategoricalEncoder`;
    `handle_unknown` "error" or "ignore" for a category seen only in test rows).
    """
    if dataset is None:
        args, kwargs = dataset_request(config)
        ds = helper_process.fetch(load, *args, **kwargs)  # a prefetch's result, or loaded here
    else:
        ds = _given_dataset(config, dataset)
    dropped = 0
    if config.drop_implausible:
        if ds.name not in PLAUSIBLE_RANGES:
            raise ValueError(f"drop_implausible: no physically possible ranges are known for {ds.name}")
        ds, dropped = filter_feature_range(ds, PLAUSIBLE_RANGES[ds.name])
        logger.info("%s: dropped %d rows with physically impossible values", ds.name, dropped)
    stratify = ds.y if config.task != "regression" and config.stratify_test else None
    train_idx, test_idx = train_test_split(len(ds.y), config.test_size, seed=config.seed, stratify=stratify)
    x_train, x_test = ds.x[train_idx].astype(np.float32), ds.x[test_idx].astype(np.float32)
    if config.impute_zeros:
        imputer = ZeroImputer.fit(x_train, [_feature_index(ds, name) for name in config.impute_zeros])
        x_train, x_test = imputer.transform(x_train), imputer.transform(x_test)
    if config.clip_quantile is not None:
        low, high = np.quantile(x_train, [config.clip_quantile, 1.0 - config.clip_quantile], axis=0)
        x_train, x_test = np.clip(x_train, low, high), np.clip(x_test, low, high)
    if config.scale_inputs:
        scaler = StandardScaler.fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    categories: dict[str, list[str]] = {}
    if ds.categorical is not None:
        encoder = CategoricalEncoder.fit(ds.categorical[train_idx], ds.categorical_names, handle_unknown)
        test_lines = None if ds.index is None else ds.index[test_idx]
        x_train = np.hstack([x_train, encoder.transform(ds.categorical[train_idx])])
        x_test = np.hstack([x_test, encoder.transform(ds.categorical[test_idx], test_lines, ds.source)])
        categories = encoder.categories
    to_model, from_model = _target_transform(config, ds.y[train_idx])
    return TabularArrays(
        ds,
        x_train,
        _training_targets(config, ds, ds.y[train_idx], to_model),
        ds.y[train_idx],
        x_test,
        _training_targets(config, ds, ds.y[test_idx], to_model),
        ds.y[test_idx],
        from_model,
        dropped,
        categories,
    )


def _feature_index(ds: Dataset, name: str) -> int:
    if name not in ds.feature_names:
        raise DataError(f"{ds.name} has no feature {name!r}; its features are {list(ds.feature_names)}")
    return ds.feature_names.index(name)


__all__ = ["TabularArrays", "prepare"]
