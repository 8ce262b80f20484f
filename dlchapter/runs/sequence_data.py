"""The data of a sequence run: a series' windows split chronologically, and images as sequences.

`split_series` cuts a daily series into windows split by the target's date (train, validation, test), the
scaler fitted on the training period only (`SeriesSplit`); `image_splits` loads an image data set as
sequences of rows with a stratified validation share. `dlchapter.runs.sequence_runs` trains and reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlchapter.data import Dataset, load
from dlchapter.data.preprocessing import StandardScaler
from dlchapter.data.sequences import images_as_sequences, sliding_windows
from dlchapter.data.splits import holdout_split
from dlchapter.presets.run_configs import SequenceConfig


@dataclass(frozen=True)
class SeriesSplit:
    """The windows of one period: scaled inputs/targets, targets in the data's units and their dates."""

    x: np.ndarray  # (N, window, 1) float32, scaled
    y: np.ndarray  # (N,) float32, scaled
    y_true: np.ndarray  # (N,) float64, in °C
    last_value: np.ndarray  # (N,) float64, each window's last value in °C: the persistence forecast
    dates: np.ndarray  # (N,) datetime64[D] of the targets


def split_series(
    ds: Dataset, window: int, train_until: str, validation_until: str
) -> tuple[dict[str, SeriesSplit], StandardScaler]:
    """Windows split chronologically by target date; the scaler is fitted on the training period only."""
    dates = ds.index.astype("datetime64[D]")
    train_end, validation_end = np.datetime64(train_until, "D"), np.datetime64(validation_until, "D")
    if not train_end < validation_end < dates[-1]:
        raise ValueError(
            f"need train_until < validation_until < the last date {dates[-1]}, got {train_until}, {validation_until}"
        )
    scaler = StandardScaler.fit(ds.x, rows=np.flatnonzero(dates <= train_end))
    x_raw, y_raw = sliding_windows(ds.x[:, 0].astype(np.float64), window)
    x_scaled, y_scaled = sliding_windows(scaler.transform(ds.x)[:, 0], window)
    target_dates = dates[window:]
    periods = {
        "train": target_dates <= train_end,
        "validation": (target_dates > train_end) & (target_dates <= validation_end),
        "test": target_dates > validation_end,
    }
    splits = {}
    for name, rows in periods.items():
        if not rows.any():
            raise ValueError(f"the {name} period of {ds.name} has no windows (window={window})")
        splits[name] = SeriesSplit(
            x_scaled[rows],
            y_scaled[rows],
            y_raw[rows].astype(np.float64),
            x_raw[rows, -1, 0].astype(np.float64),
            target_dates[rows],
        )
    return splits, scaler


def image_splits(config: SequenceConfig) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...], str]:
    """(x, y) sequences for train/validation/test, the class names, and the data's source."""
    if config.holdout_from_test:
        ds = load(config.dataset, config.data_dir, split="test")
        if not 0 < config.holdout_train < len(ds):
            raise ValueError(f"holdout_train={config.holdout_train} must lie inside the {len(ds)} test images")
        train = (ds.x[: config.holdout_train], ds.y[: config.holdout_train])
        test = (ds.x[config.holdout_train :], ds.y[config.holdout_train :])
        source = (
            f"{ds.source} (first {config.holdout_train} images to train, last {len(ds) - config.holdout_train} to test)"
        )
    else:
        ds = load(config.dataset, config.data_dir, split="train")
        test_ds = load(config.dataset, config.data_dir, split="test")
        train, test, source = (ds.x, ds.y), (test_ds.x, test_ds.y), f"{ds.source} and {test_ds.source}"
    if config.max_train is not None:
        train = (train[0][: config.max_train], train[1][: config.max_train])
    if config.max_test is not None:
        test = (test[0][: config.max_test], test[1][: config.max_test])
    kept, held = holdout_split(len(train[1]), config.validation_fraction, seed=config.seed, stratify=train[1])
    x_train = images_as_sequences(train[0])
    splits = {
        "train": (x_train[kept], train[1][kept]),
        "validation": (x_train[held], train[1][held]),
        "test": (images_as_sequences(test[0]), test[1]),
    }
    return splits, ds.class_names, source


__all__ = ["SeriesSplit", "image_splits", "split_series"]
