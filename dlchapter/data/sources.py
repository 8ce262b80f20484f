"""Where data files come from: the registry, the lookup order and checksummed downloads.

A file is looked for, in this order:

1. an explicit ``path`` (nothing else is tried), or the ``data_dir`` argument;
2. the directory named by ``$DLCHAPTER_DATA_DIR``;
3. the user cache, ``$XDG_CACHE_HOME/dlchapter`` or ``~/.cache/dlchapter``;
4. system directories a distribution package fills (Debian's
   ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``);
5. a download from the data set's public home into the cache, verified by
   SHA-256 and written atomically: bytes go to a temporary file beside the
   target, which is renamed into place only when complete and verified, and
   deleted otherwise, so the cache never holds a partial or corrupt file.

``$DLCHAPTER_DATA_URL`` (or ``base_url=``) replaces every public home with a
mirror laid out like the cache (``<base>/mnist/train-images-idx3-ubyte.gz``);
``$DLCHAPTER_OFFLINE=1`` (or ``download=False``) turns downloads off.

This module also defines the two types every loader returns or raises:
`Dataset` and `DataError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlchapter.reporting import safe_write

ENV_DATA_DIR = "DLCHAPTER_DATA_DIR"
ENV_DATA_URL = "DLCHAPTER_DATA_URL"
ENV_OFFLINE = "DLCHAPTER_OFFLINE"
TASKS = ("regression", "binary", "multiclass", "series")
_CHUNK = 1 << 16


class DataError(ValueError):
    """Bad, missing or unverifiable input data; the message names the file and the problem."""


def shown_values(values: Sequence[Any], first: int = 8) -> str:
    """`values` for a one-line message: all of a short list, else the first `first` and "... and N more".

    E.g. ``['a', 'b', ... and 238 more]`` for 240 categories of an ID column given as categorical.
    """
    listed = [str(v) for v in values]
    if len(listed) <= first + 1:  # "... and 1 more" would be no shorter than the value itself
        return str(listed)
    return str(listed[:first])[:-1] + f", ... and {len(listed) - first} more]"


@dataclasses.dataclass(frozen=True, eq=False)  # arrays: compare fields with numpy, not ==
class Dataset:
    """A loaded data set: features, targets and what they mean.

    ``x`` is float32 (rows, features) for tables, uint8 (n, 28, 28) for
    images and float32 (steps, 1) for series; ``y`` is float32 for
    regression and series (for a series, the same values as ``x[:, 0]``)
    and int64 class indices 0..C-1 for classification.

    A user's CSV (`dlchapter.data.load_csv`) may also carry categorical
    columns not yet encoded: ``categorical`` is an object array (rows, K) of
    strings named by ``categorical_names``; they are one-hot encoded after the
    train/test split, with categories from the training rows only
    (`dlchapter.data.preprocessing.CategoricalEncoder`). ``index`` holds the
    dates of a series, or each row's line number in a user's CSV. ``missing``
    records what the loader did with empty cells: the policy, rows dropped and
    cells imputed (per column).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    task: str
    class_names: tuple[str, ...] | None = None
    source: str = ""
    index: np.ndarray | None = None
    categorical: np.ndarray | None = None
    categorical_names: tuple[str, ...] = ()
    missing: dict | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.name}: x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        n_categorical = 0 if self.categorical is None else self.categorical.shape[1]
        if n_categorical != len(self.categorical_names):
            raise ValueError(f"{self.name}: {n_categorical} categorical column(s) but names {self.categorical_names}")
        if self.categorical is not None and self.categorical.shape[0] != self.y.shape[0]:
            rows = self.categorical.shape[0]
            raise ValueError(f"{self.name}: categorical has {rows} rows but y has {self.y.shape[0]}")

    def select(self, rows: np.ndarray) -> Dataset:
        """The data set restricted to `rows` (indices or a boolean mask), every per-row field alike."""
        return dataclasses.replace(
            self,
            x=self.x[rows],
            y=self.y[rows],
            index=None if self.index is None else self.index[rows],
            categorical=None if self.categorical is None else self.categorical[rows],
        )

    @property
    def n_classes(self) -> int | None:
        """Number of classes for classification, None for regression and series."""
        return None if self.class_names is None else len(self.class_names)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One file of a data set: accepted local names, public home and checksum.

    ``names[0]`` is the canonical name, used in the cache and on mirrors; the
    others are accepted alternatives found in a data directory.
    """

    key: str
    names: tuple[str, ...]
    url: str | None = None
    sha256: str | None = None
    system_dirs: tuple[str, ...] = ()


_SEABORN = "https://raw.githubusercontent.com/mwaskom/seaborn-data/master/"
_BROWNLEE = "https://raw.githubusercontent.com/jbrownlee/Datasets/master/"
_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_SYSTEM = ("/usr/share/datasets/fashion-mnist",)

# MNIST checksums are tensorflow-datasets' registered ones (url_checksums/*.txt).
_IDX_SHA = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}


def _idx_specs() -> dict[str, FileSpec]:
    specs = {}
    for name, subdirs, base, system in (
        ("mnist", ("mnist",), _MNIST, ()),
        ("fashion_mnist", ("fashion-mnist", "fashion_mnist"), _FASHION, _FASHION_SYSTEM),
    ):
        for filename, sha in _IDX_SHA[name].items():
            stem = filename[: -len(".gz")]
            names = tuple(f"{d}/{f}" for d in subdirs for f in (filename, stem))
            specs[f"{name}/{stem}"] = FileSpec(f"{name}/{stem}", names, base + filename, sha, system)
    return specs


REGISTRY: dict[str, FileSpec] = {
    "diamonds": FileSpec(
        "diamonds",
        ("diamonds.csv",),
        _SEABORN + "diamonds.csv",
        "9574730b03aba241d899c4a97511c5061b19358fab89510774fb6c24168345c4",
    ),
    "iris": FileSpec(  # optional: scikit-learn ships iris, so it is never downloaded
        "iris",
        ("iris.csv",),
        None,
        None,
    ),
    "california_housing": FileSpec(
        "california_housing",
        ("cal_housing.tgz", "cal_housing.csv", "cal_housing.data"),
        "https://ndownloader.figshare.com/files/5976036",
        "aaa5c9a6afe2225cc2aed2723682ae403280c4a3695a2ddda4ffb5d8215ea681",
    ),
    "diabetes": FileSpec(
        "diabetes",
        ("pima-indians-diabetes.csv", "diabetes.csv", "pima-indians-diabetes.data.csv"),
        _BROWNLEE + "pima-indians-diabetes.data.csv",
        "6bfe5d0f379d17a0e0819b996407e3c09bf80febd4287f2ed212190dfff154af",
    ),
    "daily_min_temperatures": FileSpec(
        "daily_min_temperatures",
        ("daily-min-temperatures.csv",),
        _BROWNLEE + "daily-min-temperatures.csv",
        "8b9de63ed6789492bf497625e7f9beb96a63d367b4b0a21754006f749fa5e5da",
    ),
    "airline_passengers": FileSpec(
        "airline_passengers",
        ("airline-passengers.csv",),
        _BROWNLEE + "airline-passengers.csv",
        "8cb51be753a718d9be5d76d7e238cc224792754676adc21faa59e954b0201621",
    ),
    "monthly_sunspots": FileSpec(
        "monthly_sunspots",
        ("monthly-sunspots.csv",),
        _BROWNLEE + "monthly-sunspots.csv",
        "c4ec8cc57d9f6fb6ecdb3e1f37f25b6f4badd5124c55931052b0cd2fc3bc71f3",
    ),
    **_idx_specs(),
}


def cache_dir() -> Path:
    """The user cache: ``$XDG_CACHE_HOME/dlchapter``, else ``~/.cache/dlchapter``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "dlchapter"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched, in order: ``data_dir``, ``$DLCHAPTER_DATA_DIR``, the cache."""
    dirs = [Path(data_dir)] if data_dir is not None else []
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        dirs.append(Path(env))
    dirs.append(cache_dir())
    return dirs


def find_local(spec: FileSpec, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing file for `spec` in the search directories and system directories."""
    for directory in search_dirs(data_dir):
        for name in spec.names:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    for directory in spec.system_dirs:
        for name in spec.names:
            candidate = Path(directory) / Path(name).name
            if candidate.is_file():
                return candidate
    return None


def downloads_enabled(download: bool | None = None) -> bool:
    """Whether a download may be tried: the argument if given, else not ``$DLCHAPTER_OFFLINE``."""
    if download is not None:
        return download
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("", "0", "false", "no")


def remote_url(spec: FileSpec, base_url: str | None = None) -> str | None:
    """The URL to fetch `spec` from: a mirror (argument or ``$DLCHAPTER_DATA_URL``) or its public home."""
    base = base_url or os.environ.get(ENV_DATA_URL)
    if base:
        return base.rstrip("/") + "/" + spec.names[0]
    return spec.url


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, target: Path, sha256: str | None, *, timeout: float = 60.0) -> Path:
    """Fetch `url` to `target` atomically, verifying its length and SHA-256.

    The bytes go through `dlchapter.reporting.safe_write.atomic_open` (an
    exclusive ``.<name>.*.part`` file in `target`'s directory) and replace
    `target` only after every byte arrived and the checksum matched; on any
    failure the temporary file is removed and a `DataError` says why. After a
    success, ``.part`` files of earlier downloads of `target` that are older
    than this one are removed (`remove_stale_parts`).
    """
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    started = time.time()
    try:
        with safe_write.atomic_open(target, suffix=".part") as out:
            digest = hashlib.sha256()
            received = 0
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    expected = int(length) if length is not None else None
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                raise DataError(f"download of {url} for {target} failed: {err}") from err
            if expected is not None and received != expected:
                raise DataError(f"download of {url} for {target} was cut off: received {received} of {expected} bytes")
            actual = digest.hexdigest()
            if sha256 is not None and actual != sha256:
                raise DataError(
                    f"checksum mismatch for {target.name} downloaded from {url}: "
                    f"expected sha256 {sha256}, got {actual}; the file was not saved"
                )
    except BaseException:
        for directory in created:  # leave no empty directories behind either
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    remove_stale_parts(target, older_than=started)
    return target


def remove_stale_parts(target: Path, older_than: float) -> list[Path]:
    """Remove the temporary ``.part`` files of earlier, killed downloads of `target`.

    Only files named like this module's temporaries for `target`
    (``.<name>.*.part`` beside it) whose modification time is before
    `older_than` (seconds since the epoch: the start of the download that has
    just replaced them) are removed; a download still running elsewhere keeps
    touching its file and is left alone. Returns the removed paths.
    """
    removed = []
    for part in Path(target).parent.glob(f".{Path(target).name}.*.part"):
        try:
            if part.is_file() and not part.is_symlink() and part.stat().st_mtime < older_than:
                part.unlink()
                removed.append(part)
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def _not_found_message(spec: FileSpec, data_dir: str | os.PathLike | None, why: str) -> str:
    searched = [str(d / n) for d in search_dirs(data_dir) for n in spec.names[:1]]
    searched += [str(Path(d) / Path(spec.names[0]).name) for d in spec.system_dirs]
    where = spec.url or "its public home"
    alternatives = f" (also accepted: {', '.join(spec.names[1:])})" if len(spec.names) > 1 else ""
    return (
        f"data set file for {spec.key!r} not found: expected {spec.names[0]}{alternatives}; "
        f"looked for {', '.join(searched)}. {why} Put the file in one of those places "
        f"(e.g. set ${ENV_DATA_DIR} to its directory, or pass --data-dir on the command line, data_dir= in Python), "
        f"or fetch it from {where}."
    )


def locate(
    spec: FileSpec,
    *,
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Find `spec`'s file by the lookup order of this module, downloading it if needed and allowed."""
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise DataError(f"data set file for {spec.key!r} not found: {explicit} does not exist")
        return explicit
    found = find_local(spec, data_dir)
    if found is not None:
        return found
    url = remote_url(spec, base_url)
    if url is None:
        raise DataError(_not_found_message(spec, data_dir, "It has no download location."))
    if not downloads_enabled(download):
        raise DataError(_not_found_message(spec, data_dir, "Downloads are off (offline)."))
    target = cache_dir() / spec.names[0]
    try:
        return fetch(url, target, spec.sha256, timeout=timeout)
    except DataError as err:
        raise DataError(_not_found_message(spec, data_dir, f"Downloading failed: {err}.")) from err
