"""MNIST-format images: an IDX reader, MNIST / Fashion-MNIST loaders, and a tensorflow-datasets path.

IDX files (gzipped or not) are checked before use: the magic number (two
zero bytes, a type code, the number of dimensions), the dimensions, and that
the payload has exactly the bytes the header promises. Local files are
validated by that structure; SHA-256 checksums apply to downloads (the
copies a data directory holds may have been recompressed).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from dlchapter.data import sources
from dlchapter.data.sources import DataError, Dataset

IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
IMAGE_SETS = ("mnist", "fashion_mnist")
SPLITS = ("train", "test")
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
_PREFIX = {"train": "train", "test": "t10k"}


def _decompress(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as err:
        raise DataError(f"{path}: truncated gzip file ({err}); download or copy it again") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: corrupt gzip file ({err})") from err


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array, checking its magic number and size."""
    path = Path(path)
    try:
        data = _decompress(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read IDX file ({err})") from err
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header (4 bytes at least)")
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\0\0" or data[2] not in IDX_TYPES or data[3] == 0:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}; not an IDX file")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{path}: header truncated: {ndim} dimensions need {offset} header bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[data[2]]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DataError(
            f"{path}: wrong size: the header promises shape {shape} ({expected} bytes of data), "
            f"the file has {len(data) - offset} bytes after the header"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _file_specs(name: str, split: str) -> tuple[sources.FileSpec, sources.FileSpec]:
    prefix = _PREFIX[split]
    return (
        sources.REGISTRY[f"{name}/{prefix}-images-idx3-ubyte"],
        sources.REGISTRY[f"{name}/{prefix}-labels-idx1-ubyte"],
    )


def _in_directory(directory: Path, spec: sources.FileSpec) -> Path:
    for name in spec.names:
        candidate = directory / Path(name).name
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{directory}: no {Path(spec.names[0]).name} (or its ungzipped form) for {spec.key!r}; "
        f"path= for an image set must be the directory holding its IDX files"
    )


def _absent_split_error(name: str, split: str, data_dir, err: DataError) -> DataError:
    other = "test" if split == "train" else "train"
    found = [sources.find_local(s, data_dir) for s in _file_specs(name, other)]
    if all(f is not None for f in found):
        return DataError(
            f"{name}: the {split} split is absent; only the {other} split was found "
            f"(in {found[0].parent}). Use split={other!r}, or add the {split} files. {err}"
        )
    return err


def load_idx(
    name: str,
    split: str = "train",
    *,
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    base_url: str | None = None,
) -> Dataset:
    """MNIST or Fashion-MNIST from IDX files: x uint8 (n, 28, 28), y int64 labels 0..9.

    `path` is a directory holding the four IDX files; otherwise the files are
    looked up (and downloaded if allowed) as `dlchapter.data.sources` describes.
    """
    if name not in IMAGE_SETS:
        raise DataError(f"unknown image set {name!r}; known: {', '.join(IMAGE_SETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    image_spec, label_spec = _file_specs(name, split)
    if path is not None:
        directory = Path(path)
        if not directory.is_dir():
            raise DataError(f"{directory}: path= for {name} must be a directory holding its IDX files")
        image_file, label_file = _in_directory(directory, image_spec), _in_directory(directory, label_spec)
    else:
        try:
            image_file, label_file = [
                sources.locate(s, data_dir=data_dir, download=download, base_url=base_url)
                for s in (image_spec, label_spec)
            ]
        except DataError as err:
            raise _absent_split_error(name, split, data_dir, err) from err
    images = read_idx(image_file, IMAGES_MAGIC)
    labels = read_idx(label_file, LABELS_MAGIC)
    return _as_dataset(name, images, labels, str(image_file), image_file, label_file)


def _as_dataset(
    name: str, images: np.ndarray, labels: np.ndarray, source: str, image_where: object, label_where: object
) -> Dataset:
    if images.shape[1:] != (28, 28):
        raise DataError(f"{image_where}: images are {images.shape[1:]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{label_where}: {labels.shape[0]} labels for {images.shape[0]} images in {image_where}")
    n_classes = len(CLASS_NAMES[name])
    bad = labels >= n_classes
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{label_where}: label {int(labels[row])} at index {row} is outside the known classes 0..{n_classes - 1}"
        )
    return Dataset(
        name=name,
        x=images.astype(np.uint8),
        y=labels.astype(np.int64),
        feature_names=("image",),
        target_name="label",
        task="multiclass",
        class_names=CLASS_NAMES[name],
        source=source,
    )


def load_tfds(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Dataset:
    """MNIST or Fashion-MNIST through ``tfds.data_source`` (ArrayRecord; no TensorFlow needed).

    Reads a data set prepared in tensorflow-datasets' ArrayRecord format under
    `data_dir` (tfds's default when None); images are decoded with Pillow, so
    reading needs no TensorFlow. Preparing (``download=True``) does: tfds's
    MNIST builder and its PNG encoder call TensorFlow, so without it prepare
    once elsewhere (``tfds build mnist --file_format=array_record``) or use
    the IDX files. Tested with ``tfds.testing.mock_data``.
    """
    if name not in IMAGE_SETS:
        raise DataError(f"unknown image set {name!r}; known: {', '.join(IMAGE_SETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(
            name,
            split=split,
            data_dir=None if data_dir is None else os.fspath(data_dir),
            download=download,
            builder_kwargs={"file_format": "array_record"},
        )
    except Exception as err:  # tfds raises KeyError, NotImplementedError, OSError, ...
        raise DataError(
            f"tensorflow-datasets has no prepared {name!r} split {split!r} (data_dir={data_dir}): "
            f"{type(err).__name__}: {err}. Prepare it in ArrayRecord format (`tfds build {name} "
            f"--file_format=array_record`, which needs TensorFlow) under data_dir, or use via='files'"
        ) from err
    n = len(source)
    images = np.empty((n, 28, 28), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    for i in range(n):
        example = source[i]
        images[i] = np.asarray(example["image"]).reshape(28, 28)
        labels[i] = int(example["label"])
    where = f"tfds:{name}/{split}"
    return _as_dataset(name, images, labels, "tfds", where, where)
