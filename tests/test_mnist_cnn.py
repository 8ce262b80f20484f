"""The CNN image workflow (dlchapter.runs.image_runs) and its launcher (experiments.mnist_cnn).

End-to-end runs use small synthetic IDX files in a temporary data directory,
so they need neither the real data sets nor the network and stay fast.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dlchapter.configs.config import parse_config
from dlchapter.data import DataError
from dlchapter.presets import mnist_cnn as mnist_cnn_presets
from dlchapter.runs import image_runs as images
from dlchapter.runs.image_runs import ImageConfig, holdout_rows, load_splits, resolve_steps_per_call, top_k_accuracy
from experiments import mnist_cnn

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUBDIR = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(magic + dims + array.astype(np.uint8).tobytes(), compresslevel=1))


def _indexed_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first two pixels encode their row number; a class-dependent blob makes them learnable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 + 2 * (label // 5) * 5, 2 + 5 * (label % 5)
        images[i, row : row + 8, col : col + 4] = 255
    images[:, 0, 0] = np.arange(n) // 256
    images[:, 0, 1] = np.arange(n) % 256
    return images, labels


def _row_numbers(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0].astype(np.int64) * 256 + images[:, 0, 1]


def _data_dir(root: Path, name: str, splits: dict[str, int]) -> Path:
    directory = root / SUBDIR[name]
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(splits.items()):
        prefix = {"train": "train", "test": "t10k"}[split]
        images, labels = _indexed_images(n, seed)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user cache, shared data directory or download is seen by these tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DLCHAPTER_DATA_DIR", raising=False)
    monkeypatch.delenv("DLCHAPTER_DATA_URL", raising=False)
    monkeypatch.setenv("DLCHAPTER_OFFLINE", "1")


def _check_run_directory(workdir: Path, metrics: dict) -> None:
    for name in ("sample_images.png", "training_curves.png", "confusion_matrix.png"):
        data = (workdir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
    for name in ("metrics.json", "config.json", "classification_report.json", "history.csv", "summary.md"):
        assert (workdir / name).stat().st_size > 0, name
    on_disk = json.loads((workdir / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_top1_accuracy",
        "test_top2_accuracy",
        "test_loss",
        "train_seconds",
        "compile_seconds",
    ):
        assert math.isfinite(on_disk[key]), key
    for key in ("seed", "epochs_run", "params", "epoch_seconds"):
        assert key in on_disk, key
    assert on_disk["params"] == 104_202
    assert on_disk["epochs_run"] == len(on_disk["epoch_seconds"]) == 1
    assert all(s > 0 for s in on_disk["epoch_seconds"])
    assert on_disk["test_top1_accuracy"] == pytest.approx(on_disk["test_accuracy"])
    assert on_disk["test_top2_accuracy"] >= on_disk["test_top1_accuracy"]
    assert on_disk == json.loads(json.dumps(metrics))
    report = json.loads((workdir / "classification_report.json").read_text())
    assert report["accuracy"]["precision"] == pytest.approx(on_disk["test_accuracy"])
    history = (workdir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 2


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """The `ImageResult`s of the launcher's runs (to check how often each program was traced)."""
    results: list = []

    def run_and_keep(config, workdir):
        results.append(images.run_images(config, workdir))
        return results[-1]

    monkeypatch.setattr(mnist_cnn_presets, "run_images", run_and_keep)  # what the launcher's run calls
    return results


def test_fashion_mnist_end_to_end_functional_style(tmp_path: Path, captured: list) -> None:
    data = _data_dir(tmp_path / "data", "fashion_mnist", {"train": 320, "test": 150})
    workdir = tmp_path / "run"
    metrics = mnist_cnn.main(
        [
            "--dataset",
            "fashion_mnist",
            "--style",
            "functional",
            "--workdir",
            str(workdir),
            "--data-dir",
            str(data),
            "--epochs",
            "1",
            "--max-train",
            "256",
            "--max-test",
            "100",
        ]
    )
    _check_run_directory(workdir, metrics)
    assert metrics["n_train"] + metrics["n_validation"] == 256 and metrics["n_validation"] > 0
    assert metrics["n_test"] == 100 and metrics["holdout_from_test"] is False
    summary = (workdir / "summary.md").read_text()
    assert "FunctionalCNN" in summary and "Ankle boot" in summary and "holdout" not in summary.lower()
    assert "validation" in summary and "104,202" in summary
    assert captured[0].traces["train"] == 1  # compiled before fit, reused by fit: no second compile
    config = json.loads((workdir / "config.json").read_text())
    assert config["dataset"] == "fashion_mnist" and config["style"] == "functional" and config["optimizer"] == "rmsprop"


def test_mnist_holdout_from_test_end_to_end(tmp_path: Path, captured: list) -> None:
    data = _data_dir(tmp_path / "data", "mnist", {"test": 400})
    workdir = tmp_path / "run"
    metrics = mnist_cnn.main(
        [
            "--workdir",
            str(workdir),
            "--data-dir",
            str(data),
            "--epochs",
            "1",
            "--holdout-from-test",
            "--holdout-train",
            "300",
            "--holdout-test",
            "100",
            "--validation-split",
            "0",
        ]
    )
    _check_run_directory(workdir, metrics)
    assert metrics["holdout_from_test"] is True
    assert (metrics["n_train"], metrics["n_validation"], metrics["n_test"]) == (300, 0, 100)
    summary = (workdir / "summary.md").read_text()
    assert "Holdout from the test split" in summary and "first 300" in summary and "last 100" in summary
    assert "ChapterCNN" in summary and "No validation split" in summary
    assert captured[0].traces["train"] == 1


def test_missing_train_split_error_reaches_the_user(tmp_path: Path) -> None:
    data = _data_dir(tmp_path / "data", "mnist", {"test": 50})
    with pytest.raises(DataError, match="(?s)train split is absent.*--holdout-from-test"):
        mnist_cnn.main(["--workdir", str(tmp_path / "run"), "--data-dir", str(data)])
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_holdout_is_first_rows_for_training_and_last_rows_for_testing(tmp_path: Path) -> None:
    data = _data_dir(tmp_path / "data", "mnist", {"test": 500})
    config = ImageConfig(holdout_from_test=True, holdout_train=320, holdout_test=80, data_dir=str(data))
    splits = load_splits(config)
    np.testing.assert_array_equal(_row_numbers(splits.x_train), np.arange(320))
    np.testing.assert_array_equal(_row_numbers(splits.x_test), np.arange(420, 500))
    _, labels = _indexed_images(500, seed=0)
    np.testing.assert_array_equal(splits.y_train, labels[:320])
    np.testing.assert_array_equal(splits.y_test, labels[420:])
    assert "first 320" in splits.description and "last 80" in splits.description


def test_holdout_rows_defaults_and_overlap() -> None:
    assert (ImageConfig().holdout_train, ImageConfig().holdout_test) == (8000, 2000)
    train, test = holdout_rows(10_000, 8000, 2000)
    np.testing.assert_array_equal(train, np.arange(8000))
    np.testing.assert_array_equal(test, np.arange(8000, 10_000))
    with pytest.raises(ValueError, match="needs 10001 rows"):
        holdout_rows(10_000, 8001, 2000)


def test_top_k_accuracy_against_numpy_reference() -> None:
    probs = np.array(
        [
            [0.10, 0.60, 0.30],  # true 2: second most probable
            [0.70, 0.20, 0.10],  # true 0: top-1
            [0.20, 0.30, 0.50],  # true 0: third
            [0.25, 0.50, 0.25],  # true 1: top-1
            [0.40, 0.35, 0.25],  # true 1: second
        ]
    )
    y = np.array([2, 0, 0, 1, 1])
    rank_of_true = np.array([(row > row[t]).sum() for row, t in zip(probs, y)])  # 0 = most probable
    for k in (1, 2, 3):
        assert top_k_accuracy(y, probs, k) == pytest.approx(np.mean(rank_of_true < k))
    assert (top_k_accuracy(y, probs, 1), top_k_accuracy(y, probs, 2), top_k_accuracy(y, probs, 3)) == (0.4, 0.8, 1.0)
    assert top_k_accuracy(y, probs, 1) == pytest.approx(np.mean(probs.argmax(1) == y))
    with pytest.raises(ValueError):
        top_k_accuracy(y, probs, 4)


def test_top_k_accuracy_matches_sklearn_on_random_probabilities() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 10, size=500)
    for k in (1, 2, 5):
        assert top_k_accuracy(y, probs, k) == pytest.approx(
            metrics.top_k_accuracy_score(y, probs, k=k, labels=np.arange(10))
        )


def test_steps_per_call_by_backend_and_override() -> None:
    assert resolve_steps_per_call(None, "cpu") == 32
    assert resolve_steps_per_call(None, "gpu") is None
    assert resolve_steps_per_call(8, "cpu") == 8
    assert resolve_steps_per_call(0, "cpu") is None  # 0: a whole epoch in one lax.scan
    with pytest.raises(ValueError):
        resolve_steps_per_call(-1, "cpu")


def test_bare_boolean_flags_and_datasets() -> None:
    def holdout(*argv: str) -> bool:
        return parse_config(ImageConfig, ["--workdir", "d", *argv], mnist_cnn.PRESETS)[0].holdout_from_test

    assert holdout("--holdout-from-test", "--seed", "1") is True
    assert holdout("--holdout-from-test") is True
    assert holdout("--holdout-from-test", "false") is False
    assert mnist_cnn.DATASETS == ("mnist",)
    assert mnist_cnn.datasets_for(["--dataset", "fashion_mnist"]) == ("fashion_mnist",)
    assert mnist_cnn.datasets_for(["--seed", "3"]) == ("mnist",)
    chapter = mnist_cnn.CHAPTER
    assert (chapter.optimizer, chapter.learning_rate, chapter.epochs, chapter.batch_size) == ("rmsprop", None, 5, 64)


def test_a_rerun_that_trains_nothing_keeps_the_cnn_runs_timings(tmp_path: Path) -> None:
    data = _data_dir(tmp_path / "data", "mnist", {"test": 200})
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--data-dir", str(data), "--epochs", "1", "--holdout-from-test"]
    argv += ["--holdout-train", "120", "--holdout-test", "80", "--validation-split", "0"]
    argv += ["--checkpoint-every-epochs", "1"]
    first = mnist_cnn.main(argv)
    assert "epochs_trained_by_this_run" not in first and first["compile_from_cache"] in (True, False)
    again = mnist_cnn.main(argv)  # finished and checkpointed: restores, trains nothing
    assert again["epochs_trained_by_this_run"] == 0 and again["timing_source"] == "the earlier report"
    for key in ("train_seconds", "compile_seconds", "compile_from_cache", "epoch_seconds"):
        assert again[key] == first[key], key
    summary = (workdir / "summary.md").read_text()
    assert "All 1 epochs were restored from the checkpoints: this rerun trained nothing" in summary
    assert f"{first['train_seconds']:.1f} s on" in summary


def test_the_summary_says_when_the_train_step_came_from_the_compilation_cache() -> None:
    assert "took 1.2 s" in images._compile_text({"compile_seconds": 1.23, "compile_from_cache": False})
    cached = images._compile_text({"compile_seconds": 0.004, "compile_from_cache": True})
    assert "from the persistent compilation cache (0.00 s to load)" in cached and "took" not in cached
    assert "not recorded" in images._compile_text({"compile_seconds": None})
