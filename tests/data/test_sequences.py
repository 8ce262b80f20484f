"""Sliding windows over a series and images as row sequences, against plain loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlchapter.data import load
from dlchapter.data.sequences import images_as_sequences, sliding_windows


@pytest.mark.parametrize(("window", "horizon"), [(1, 1), (3, 1), (5, 3), (9, 1)])
def test_sliding_windows_match_a_loop(window: int, horizon: int) -> None:
    series = np.arange(10, dtype=np.float64) ** 2
    x, y = sliding_windows(series, window, horizon)
    n = len(series) - window - horizon + 1
    assert x.shape == (n, window, 1) and y.shape == (n,) and x.dtype == y.dtype == np.float32
    for i in range(n):
        np.testing.assert_array_equal(x[i, :, 0], series[i : i + window])
        assert y[i] == series[i + window - 1 + horizon]  # `horizon` steps after the window's last step


def test_sliding_windows_multivariate() -> None:
    series = np.stack([np.arange(8), -np.arange(8)], axis=1)
    x, y = sliding_windows(series, window=3, horizon=2)
    assert x.shape == (4, 3, 2) and y.shape == (4, 2)
    np.testing.assert_array_equal(x[1], series[1:4])
    np.testing.assert_array_equal(y[1], series[5])


def test_sliding_windows_errors() -> None:
    with pytest.raises(ValueError, match="too short for window=4 and horizon=2"):
        sliding_windows(np.arange(5), window=4, horizon=2)
    with pytest.raises(ValueError, match="at least 1"):
        sliding_windows(np.arange(5), window=0)
    with pytest.raises(ValueError, match=r"\(T,\) or \(T, F\)"):
        sliding_windows(np.zeros((2, 2, 2)), window=1)


def test_windows_over_a_loaded_series(shared_data: Path) -> None:
    ds = load("airline_passengers", shared_data)
    x, y = sliding_windows(ds.x, window=12, horizon=1)
    assert x.shape == (132, 12, 1) and y.shape == (132, 1)
    assert y[0, 0] == ds.y[12] and y[-1, 0] == ds.y[-1] == 432


def test_images_as_sequences() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    seq = images_as_sequences(images)
    assert seq.shape == (4, 28, 28) and seq.dtype == np.float32
    np.testing.assert_allclose(seq, images / 255.0, rtol=1e-6)
    assert seq.max() <= 1.0 and seq.min() >= 0.0
    np.testing.assert_array_equal(images_as_sequences(images[..., None]), seq)
    np.testing.assert_array_equal(images_as_sequences(seq), seq)  # already scaled floats pass through
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        images_as_sequences(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        images_as_sequences(images[0])
