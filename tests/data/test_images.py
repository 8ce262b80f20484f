"""IDX reader (magic numbers, sizes, gzip), MNIST / Fashion-MNIST loaders, and the tfds path without TensorFlow."""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from dlchapter.data import DataError, images, load

from .conftest import FASHION_SYSTEM_DIR


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes for `array`, written independently of the reader."""
    codes = {
        np.dtype(np.uint8): 0x08,
        np.dtype(np.int8): 0x09,
        np.dtype(">i2"): 0x0B,
        np.dtype(">i4"): 0x0C,
        np.dtype(">f4"): 0x0D,
        np.dtype(">f8"): 0x0E,
    }
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, codes[big.dtype], array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + big.tobytes()


def write_split(directory: Path, prefix: str, x: np.ndarray, y: np.ndarray, gz: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for kind, array, dims in (("images", x, 3), ("labels", y, 1)):
        data = idx_bytes(array)
        name = f"{prefix}-{kind}-idx{dims}-ubyte"
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


@pytest.fixture
def fake_mnist(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=12, dtype=np.uint8)
    write_split(tmp_path / "mnist", "train", x, y)
    write_split(tmp_path / "mnist", "t10k", x[:5], y[:5], gz=False)
    return tmp_path, x, y


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path: Path, dtype: str, gz: bool) -> None:
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    data = idx_bytes(array)
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(data) if gz else data)
    got = images.read_idx(path)
    assert got.shape == (2, 3, 5) and got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, array)


def test_wrong_magic_number(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match=r"labels: wrong magic number 0x00000801, expected 0x00000803"):
        images.read_idx(labels, images.IMAGES_MAGIC)
    junk = tmp_path / "junk.gz"
    junk.write_bytes(gzip.compress(b"PK\x03\x04 this is a zip, not IDX"))
    with pytest.raises(DataError, match=r"junk.gz: wrong magic number 0x504b0304; not an IDX file"):
        images.read_idx(junk)


@pytest.mark.parametrize("delta", [-1, +1])
def test_wrong_size(tmp_path: Path, delta: int) -> None:
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(data[:delta] if delta < 0 else data + b"\0"))
    with pytest.raises(DataError) as info:
        images.read_idx(path, images.IMAGES_MAGIC)
    message = str(info.value)
    assert str(path) in message and "wrong size" in message and "(3, 28, 28) (2352 bytes" in message
    assert f"{2352 + delta} bytes after the header" in message


def test_truncated_and_corrupt_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.uint8).reshape(5000) % 10))
    cut = tmp_path / "labels.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"labels.gz: truncated gzip"):
        images.read_idx(cut)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(packed[:10] + bytes(b ^ 0xFF for b in packed[10:40]) + packed[40:])
    with pytest.raises(DataError, match=r"bad.gz: (corrupt|truncated) gzip"):
        images.read_idx(bad)


def test_load_mnist_from_directory_gzipped_or_not(fake_mnist: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, x, y = fake_mnist
    train = load("mnist", root)
    assert train.x.dtype == np.uint8 and train.x.shape == (12, 28, 28)
    np.testing.assert_array_equal(train.x, x)
    np.testing.assert_array_equal(train.y, y.astype(np.int64))
    assert train.y.dtype == np.int64 and train.class_names == tuple("0123456789") and train.n_classes == 10
    test = load("mnist", root, split="test")  # ungzipped files
    np.testing.assert_array_equal(test.x, x[:5])
    by_path = load("mnist", path=root / "mnist", split="test")
    np.testing.assert_array_equal(by_path.y, test.y)
    with pytest.raises(ValueError, match="split must be one of"):
        load("mnist", root, split="validation")
    with pytest.raises(ValueError, match="max_value applies to regression"):
        load("mnist", root, max_value=5.0)


def test_label_outside_known_classes_and_count_mismatch(tmp_path: Path) -> None:
    x = np.zeros((3, 28, 28), np.uint8)
    write_split(tmp_path / "mnist", "train", x, np.array([1, 10, 2], np.uint8))
    message = r"train-labels-idx1-ubyte\.gz: label 10 at index 1 is outside the known classes 0\.\.9"
    with pytest.raises(DataError, match=message):
        load("mnist", tmp_path)
    write_split(tmp_path / "mnist", "train", x, np.array([1, 2], np.uint8))
    with pytest.raises(DataError, match="2 labels for 3 images"):
        load("mnist", tmp_path)
    write_split(tmp_path / "mnist", "train", np.zeros((3, 27, 28), np.uint8), np.array([1, 2, 3], np.uint8))
    with pytest.raises(DataError, match="expected 28x28"):
        load("mnist", tmp_path)


def test_absent_train_split_is_named(tmp_path: Path) -> None:
    write_split(tmp_path / "mnist", "t10k", np.zeros((2, 28, 28), np.uint8), np.array([0, 1], np.uint8))
    with pytest.raises(DataError) as info:
        load("mnist", tmp_path)
    message = str(info.value)
    assert "the train split is absent; only the test split was found" in message
    assert "split='test'" in message and "train-images-idx3-ubyte.gz" in message
    with pytest.raises(DataError, match="path= for mnist must be a directory"):
        load("mnist", path=tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz")


def test_shared_mnist_has_only_the_test_split(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLCHAPTER_DATA_DIR", str(shared_data))
    test = load("mnist", split="test")
    assert test.x.shape == (10_000, 28, 28) and test.y.shape == (10_000,)
    # the decompressed bytes are MNIST's (SOURCES.md); our arrays are exactly their payload
    image_bytes = gzip.decompress((shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.sha256(image_bytes).hexdigest() == "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    assert test.x.tobytes() == image_bytes[16:]
    assert np.bincount(test.y).tolist()[:3] == [980, 1135, 1032]
    with pytest.raises(DataError, match="the train split is absent; only the test split was found"):
        load("mnist")


def test_fashion_mnist_from_debian_package() -> None:
    if not (FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"dataset-fashion-mnist is not installed ({FASHION_SYSTEM_DIR} absent)")
    train = load("fashion_mnist")
    test = load("fashion_mnist", split="test")
    assert train.x.shape == (60_000, 28, 28) and test.x.shape == (10_000, 28, 28)
    assert np.bincount(train.y).tolist() == [6000] * 10 and np.bincount(test.y).tolist() == [1000] * 10
    assert train.class_names[0] == "T-shirt/top" and train.class_names[-1] == "Ankle boot"
    assert train.source.startswith(str(FASHION_SYSTEM_DIR))


def test_tfds_data_source_with_mock_data_needs_no_tensorflow() -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        for name in ("mnist", "fashion_mnist"):
            for split in ("train", "test"):
                ds = load(name, split=split, via="tfds")
                assert ds.x.shape == (6, 28, 28) and ds.x.dtype == np.uint8
                assert ds.y.dtype == np.int64 and ((ds.y >= 0) & (ds.y < 10)).all()
                assert ds.source == "tfds" and ds.n_classes == 10
    assert "tensorflow" not in sys.modules


def test_tfds_without_prepared_data_is_a_data_error(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match="tensorflow-datasets has no prepared 'mnist' split 'train'"):
        load("mnist", tmp_path / "tfds", via="tfds", download=False)
