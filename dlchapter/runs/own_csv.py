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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlchapter.configs import config_checks
from dlchapter.presets.run_configs import CsvConfig  # defined apart: `run NAME --help` needs no JAX
from dlchapter.reporting import helper_process

if TYPE_CHECKING:
    from dlchapter.runs.tabular_runs import TabularResult


def sha256_of(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks of `chunk_bytes`. Raises OSError if unreadable."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def csv_request(config: CsvConfig) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of `dlchapter.data.load_csv` for `config`'s file."""
    options = {"categorical": config.categorical, "task": config.task, "missing": config.missing, "sep": config.sep}
    return (config.data_path,), {"target": config.target, **options}


def prefetch_csv(config: CsvConfig) -> None:
    """Start loading `config`'s file in the run's helper process (`dlchapter.reporting.helper_process`), so it is
    parsed while the training process imports JAX; `run_csv` then takes the result. No-op without one."""
    from dlchapter.data import load_csv

    args, kwargs = csv_request(config)
    helper_process.prefetch(load_csv, *args, **kwargs)


def run_csv(config: CsvConfig, workdir: Path) -> TabularResult:
    """Load ``config.data_path`` with `load_csv` and run the chapter's tabular workflow on it into `workdir`.

    Raises ConfigError (a flag that cannot work: no file, no target, the target
    listed as categorical) before anything loads, and DataError naming the file,
    column and line when the file does not fit (an unknown column, a target that
    does not fit ``config.task``, empty cells under ``missing="error"``, a
    category seen only in test rows under ``handle_unknown="error"``).
    """
    from dlchapter.data import load_csv
    from dlchapter.runs.tabular_runs import run_tabular

    config_checks.validate(config, ignore=("dataset", "data_dir"))
    digest = sha256_of(config.data_path)
    args, kwargs = csv_request(config)
    dataset = helper_process.fetch(load_csv, *args, **kwargs)  # a prefetch's result, or loaded here
    config = replace(config, data_sha256=digest)
    return run_tabular(config, workdir, dataset=dataset, handle_unknown=config.handle_unknown)
