"""Sequences for recurrent models: sliding windows over a series, images as row sequences.

Recurrent layers take input shaped (batch, timesteps, features); these
functions produce exactly that from a series (T,) / (T, F) or from images
(N, H, W), where each of the H rows is one time step of W features.
"""

from __future__ import annotations

import numpy as np


def sliding_windows(series: np.ndarray, window: int, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All windows of `window` steps and the value `horizon` steps after each window's last step.

    For a series of T steps there are N = T - window - horizon + 1 pairs:
    ``x[i] = series[i : i + window]`` (float32, (N, window, F)) and
    ``y[i] = series[i + window - 1 + horizon]`` (float32, (N,) for a 1-D
    series, (N, F) for a (T, F) one).
    """
    values = np.asarray(series, dtype=np.float32)
    if values.ndim not in (1, 2):
        raise ValueError(f"series must be (T,) or (T, F), got shape {values.shape}")
    if window < 1 or horizon < 1:
        raise ValueError(f"window and horizon must be at least 1, got window={window}, horizon={horizon}")
    steps = values.shape[0]
    n = steps - window - horizon + 1
    if n < 1:
        raise ValueError(
            f"a series of {steps} steps is too short for window={window} and horizon={horizon} "
            f"(needs at least {window + horizon})"
        )
    values_TxF = values[:, None] if values.ndim == 1 else values
    starts_N = np.arange(n)
    x_NxWxF = values_TxF[starts_N[:, None] + np.arange(window)[None, :]]
    y = values[starts_N + window - 1 + horizon]
    return x_NxWxF, y


def images_as_sequences(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 1) as float32 (N, H, W) sequences scaled to [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 1), got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    scaled = images.astype(np.float32)
    if scaled.size and (scaled.min() < 0.0 or scaled.max() > 1.0):
        raise ValueError("non-uint8 images must already lie in [0, 1]")
    return scaled
