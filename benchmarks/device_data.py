"""Prepare the data folder that travels with the checkout to the device machine (no `../shared` there).

    python -m benchmarks.device_data [--source /usr/share/datasets/fashion-mnist] [--dest .device-data]

Copies Fashion-MNIST's four gz files (about 30 MB; Debian's `dataset-fashion-mnist`
installs them under /usr/share/datasets/fashion-mnist) into `DEST/fashion-mnist/`,
the layout the library's loader searches (`dlchapter.data.sources`), after reading
each one with the library's IDX reader and checking its shape (60,000 or 10,000
28x28 images, labels 0-9). Debian's files are recompressed, so their SHA-256
is not the registry's (that of the files at the data set's public home). `.device-data/` is git-ignored:
the device tool's `run` takes it with `carry: [".device-data"]`, and
`python -m benchmarks.accelerator_check --data-dir .device-data` reads it there.
Errors (a missing or corrupt source file) end in one `error:` line and exit 2,
before anything is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlchapter.data import DataError
from dlchapter.data.images import IMAGES_MAGIC, LABELS_MAGIC, read_idx

SHAPES = {
    "train-images-idx3-ubyte.gz": (60_000, 28, 28),
    "train-labels-idx1-ubyte.gz": (60_000,),
    "t10k-images-idx3-ubyte.gz": (10_000, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (10_000,),
}
FILES = tuple(SHAPES)
SUBDIR = "fashion-mnist"
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DEST = Path(".device-data")


class PrepareError(ValueError):
    """A source file is missing, not an IDX file, or not of Fashion-MNIST's shape."""


def check_file(path: Path) -> None:
    """Raise PrepareError unless `path` reads as the IDX file of its name's shape (labels within 0-9)."""
    name = path.name
    try:
        array = read_idx(path, IMAGES_MAGIC if "images" in name else LABELS_MAGIC)
    except (DataError, OSError, EOFError) as err:
        raise PrepareError(f"{path}: not a readable IDX file ({err})") from err
    if array.shape != SHAPES[name] or ("labels" in name and int(np.max(array)) > 9):
        raise PrepareError(f"{path}: shape {array.shape}, expected {SHAPES[name]} with labels 0-9; not Fashion-MNIST")


def data_files(data_dir: Path) -> list[Path]:
    """The four files under `data_dir/fashion-mnist/` that exist (the check uses the data only when all four do)."""
    return [data_dir / SUBDIR / name for name in FILES if (data_dir / SUBDIR / name).is_file()]


def prepare(source: Path, dest: Path) -> list[Path]:
    """Check the four files in `source`, then copy them to `dest/fashion-mnist/` (atomic per file); returns them.

    Raises PrepareError naming the file when one is missing or not Fashion-MNIST's
    shape; nothing is copied then. A destination file equal to its source is left as it is.
    """
    for name in FILES:
        path = source / name
        if not path.is_file():
            raise PrepareError(f"{path} not found; install Debian's dataset-fashion-mnist or pass --source DIR")
        check_file(path)
    target_dir = dest / SUBDIR
    target_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for name in FILES:
        target = target_dir / name
        if not (target.is_file() and target.read_bytes() == (source / name).read_bytes()):
            fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{name}.")
            os.close(fd)
            shutil.copyfile(source / name, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        copies.append(target)
    return copies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder holding the four gz files")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="the git-ignored folder to fill")
    args = parser.parse_args(argv)
    try:
        copies = prepare(args.source, args.dest)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in copies) / 2**20
    print(f"{len(copies)} files, {size:.1f} MiB, checked, in {args.dest / SUBDIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
