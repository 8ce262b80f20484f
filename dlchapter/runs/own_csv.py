"""The chapter's tabular workflow on a researcher's own CSV (`dlchapter run tabular --data-path FILE ...`).

`CsvConfig` is `TabularConfig` plus where the data are (the file, its separator,
the target, the categorical columns, what to do with a category seen only in
test rows); `run_csv` loads the file with `dlchapter.data.load_csv` and hands
the `Dataset` to `run_tabular`, so the splits, the one-hot encoding and the
scaling fitted on the training rows, the fit with its validation split and
early stopping, and the report are exactly those of the chapter's data sets.
config.json records the file's path and SHA-256 beside every other setting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from dlchapter.configs import config_checks
from dlchapter.runs.tabular_runs import TabularConfig, TabularResult, run_tabular


@dataclass(frozen=True)
class CsvConfig(TabularConfig):
    """A dense network on your own CSV; the preset's defaults are overridden by the flags."""

    data_path: str = ""  # the CSV file (a .gz or .zip holding one works too); its first line names the columns
    sep: str = ","  # the field separator of the file (one character)
    target: str = ""  # the column to predict
    categorical: tuple[str, ...] = ()  # feature columns holding categories, comma-separated; one-hot from training rows
    handle_unknown: str = "error"  # a category seen only in test rows: error (naming it) | ignore (all-zero one-hot)
    data_sha256: str = ""  # set by the run: the SHA-256 of the data file, for config.json

    CLI_HIDDEN: ClassVar[tuple[str, ...]] = ("dataset", "data_dir", "drop_implausible", "data_sha256")
    """Fields that mean nothing for a file given by path: not flags (their preset values stay)."""
    CLI_REQUIRED: ClassVar[tuple[str, ...]] = ("data_path", "target")
    """Flags the command line must give (the preset leaves them empty)."""


def sha256_of(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks of `chunk_bytes`. Raises OSError if unreadable."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def run_csv(config: CsvConfig, workdir: Path) -> TabularResult:
    """Load ``config.data_path`` with `load_csv` and run the chapter's tabular workflow on it into `workdir`.

    Raises ConfigError (a flag that cannot work: no file, no target, the target
    listed as categorical) before anything loads, and DataError naming the file,
    column and line when the file does not fit (an unknown column, a target that
    does not fit ``config.task``, empty cells under ``missing="error"``, a
    category seen only in test rows under ``handle_unknown="error"``).
    """
    from dlchapter.data import load_csv

    config_checks.validate(config, ignore=("dataset", "data_dir"))
    digest = sha256_of(config.data_path)
    dataset = load_csv(
        config.data_path,
        target=config.target,
        categorical=config.categorical,
        task=config.task,
        missing=config.missing,
        sep=config.sep,
    )
    config = replace(config, data_sha256=digest)
    return run_tabular(config, workdir, dataset=dataset, handle_unknown=config.handle_unknown)
