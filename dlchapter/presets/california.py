"""The chapter's regression example: California housing, 100 relu, dropout 0.2, 200 relu, 1, beside XGBoost.

dlchapter run california --workdir runs/california [--seed N] [--config improved]
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dlchapter.configs.config import CommandLine
from dlchapter.presets.headline import tabular_headline
from dlchapter.presets.recipe import Recipe
from dlchapter.presets.run_configs import TabularConfig
from dlchapter.presets.runners import TABULAR_PREFETCH_IMPORTS, prefetch_tabular, run_tabular

if TYPE_CHECKING:
    from dlchapter.runs.tabular_runs import TabularResult

DATASETS = ("california_housing",)

CHAPTER = TabularConfig(
    dataset="california_housing",
    task="regression",
    hidden=(100, 200),
    dropout=(0.2, 0.0),
    optimizer="adam",
    epochs=100,
    batch_size=128,
    validation_split=0.1,
    validation_mode="last",
    monitor="val_loss",
    patience=4,
    test_size=0.2,
    scale_inputs=True,
    max_target=5.0,
    xgboost=True,
    note=(
        "The chapter's recipe: scikit-learn's 8 features, target in units of 100,000 with the capped rows "
        "(Value >= 5) removed, standard-scaled inputs, 100 relu, Dropout 0.2, 200 relu, 1 linear "
        "(21,301 parameters), MSE, Adam, batch 128, up to 100 epochs with EarlyStopping on validation MSE "
        "(patience 4) and Keras's validation_split=0.1. An XGBoost regressor is fitted on the same "
        "training rows. The chapter reports NN MSE 0.303 and XGBoost MSE 0.183."
    ),
)

IMPROVED = dataclasses.replace(
    CHAPTER,
    hidden=(256, 256, 256),
    dropout=(0.1, 0.1, 0.1),
    epochs=500,
    batch_size=128,
    learning_rate=1e-3,
    decay=0.005,
    validation_mode="shuffled",
    patience=50,
    note=(
        "What a careful practitioner changes: a wider, deeper network (3 x 256 relu, dropout 0.1 after "
        "each), the chapter's learning-rate decay a0 / (1 + 0.005 epoch) on Adam's 1e-3, a shuffled "
        "validation split and patience 50 (best weights restored), up to 500 epochs. XGBoost runs beside "
        "it on the same split."
    ),
)

PRESETS = {"chapter": CHAPTER, "improved": IMPROVED}


def _headline(config: TabularConfig, cmd: CommandLine, result: TabularResult) -> str:
    return tabular_headline(config.dataset, config, cmd, result)


RECIPE = Recipe(
    TabularConfig, PRESETS, run_tabular, _headline, __doc__ or "", prefetch_tabular, TABULAR_PREFETCH_IMPORTS
)
