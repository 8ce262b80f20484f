"""Each experiment's run, imported when it starts: a preset module names these, not `dlchapter.runs.*`.

The run modules import JAX, Flax, the engine and the reporting; a preset module that imported them
would make `dlchapter run NAME --help` (which needs only the config and the presets) pay for all of
that. Each function here imports its run module on the first call and hands its arguments on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlchapter.presets.run_configs import (
        ActivationsConfig,
        BackpropConfig,
        BatchSizeConfig,
        CsvConfig,
        ImageConfig,
        OptimizersConfig,
        OverfittingConfig,
        SequenceConfig,
        TabularConfig,
        ValidationConfig,
    )
    from dlchapter.runs.image_runs import ImageResult
    from dlchapter.runs.sequence_runs import SequenceResult
    from dlchapter.runs.tabular_runs import TabularResult


def run_tabular(config: TabularConfig, workdir: Path) -> TabularResult:
    """`dlchapter.runs.tabular_runs.run_tabular`."""
    from dlchapter.runs import tabular_runs as tabular

    return tabular.run_tabular(config, workdir)


# What each prefetch's job imports in the helper process; sent there before the command line is parsed
# (`Recipe.prefetch_imports`), so that pandas is loaded by the time the job comes.
TABULAR_PREFETCH_IMPORTS = ("pandas", "dlchapter.data.tabular")
CSV_PREFETCH_IMPORTS = ("pandas", "dlchapter.data.user_csv")


def prefetch_tabular(config: TabularConfig) -> None:
    """`dlchapter.runs.tabular_prep.prefetch_dataset`: the CSV parsed in the helper process while JAX is imported."""
    from dlchapter.runs.tabular_prep import prefetch_dataset

    prefetch_dataset(config)


def prefetch_csv(config: CsvConfig) -> None:
    """`dlchapter.runs.own_csv.prefetch_csv`: the file parsed in the helper process while JAX is imported."""
    from dlchapter.runs.own_csv import prefetch_csv as prefetch

    prefetch(config)


def run_csv(config: CsvConfig, workdir: Path) -> TabularResult:
    """`dlchapter.runs.own_csv.run_csv`."""
    from dlchapter.runs import own_csv

    return own_csv.run_csv(config, workdir)


def run_images(config: ImageConfig, workdir: Path) -> ImageResult:
    """`dlchapter.runs.image_runs.run_images`."""
    from dlchapter.runs import image_runs as images

    return images.run_images(config, workdir)


def run_sequences(config: SequenceConfig, workdir: Path) -> SequenceResult:
    """`dlchapter.runs.sequence_runs.run_sequences`."""
    from dlchapter.runs import sequence_runs as sequences

    return sequences.run_sequences(config, workdir)


def run_activations(config: ActivationsConfig, workdir: Path) -> dict[str, Any]:
    """`dlchapter.runs.concept_runs.run_activations`."""
    from dlchapter.runs import concept_runs as concepts

    return concepts.run_activations(config, workdir)


def run_backprop(config: BackpropConfig, workdir: Path) -> dict[str, Any]:
    """`dlchapter.runs.concept_runs.run_backprop`."""
    from dlchapter.runs import concept_runs as concepts

    return concepts.run_backprop(config, workdir)


def run_batch_size(config: BatchSizeConfig, workdir: Path) -> dict[str, Any]:
    """`dlchapter.runs.dynamics.run_batch_size`."""
    from dlchapter.runs import dynamics

    return dynamics.run_batch_size(config, workdir)


def run_optimizers(config: OptimizersConfig, workdir: Path) -> dict[str, Any]:
    """`dlchapter.runs.dynamics.run_optimizers`."""
    from dlchapter.runs import dynamics

    return dynamics.run_optimizers(config, workdir)


def run_overfitting(config: OverfittingConfig, workdir: Path) -> dict[str, Any]:
    """`dlchapter.runs.regularization.run_overfitting`."""
    from dlchapter.runs import regularization

    return regularization.run_overfitting(config, workdir)


def run_validation(config: ValidationConfig, workdir: Path) -> dict[str, Any]:
    """`dlchapter.runs.validation.run_validation`."""
    from dlchapter.runs import validation

    return validation.run_validation(config, workdir)
