"""Your own CSV through the chapter's tabular workflow.

dlchapter run tabular --data-path houses.csv --target price --categorical region --task regression \
    --workdir runs/houses [--missing drop|impute] [--handle-unknown ignore] [--sep ';'] [--hidden 64,32 ...]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlchapter.configs.config import CommandLine
from dlchapter.presets.headline import tabular_headline
from dlchapter.presets.recipe import Recipe
from dlchapter.presets.run_configs import CsvConfig
from dlchapter.presets.runners import CSV_PREFETCH_IMPORTS, prefetch_csv, run_csv

if TYPE_CHECKING:
    from dlchapter.runs.tabular_runs import TabularResult

DATASETS: tuple[str, ...] = ()

DEFAULT = CsvConfig(
    dataset="csv",
    task="regression",
    hidden=(64, 32),
    optimizer="adam",
    epochs=200,
    batch_size=32,
    validation_split=0.2,
    validation_mode="stratified",
    monitor="val_loss",
    patience=10,
    test_size=0.2,
    stratify_test=True,
    scale_inputs=True,
    note=(
        "Defaults for a first look at a new table: numeric inputs standard-scaled and categorical columns "
        "one-hot encoded, both fitted on the training rows only; a 20% test split (stratified for classes), "
        "20% of the training rows held out for validation (stratified for classes), two hidden layers "
        "(64, 32 relu), Adam at Keras's default rate, batch 32, up to 200 epochs with early stopping on the "
        "validation loss (patience 10) and the best epoch's weights restored."
    ),
)

PRESETS = {"default": DEFAULT}


def _headline(config: CsvConfig, cmd: CommandLine, result: TabularResult) -> str:
    return tabular_headline(str(config.data_path), config, cmd, result)


RECIPE = Recipe(CsvConfig, PRESETS, run_csv, _headline, __doc__ or "", prefetch_csv, CSV_PREFETCH_IMPORTS)
