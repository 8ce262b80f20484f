"""The experiments' typed configs: plain dataclasses, importable without JAX, Flax or any run module.

`dlchapter run NAME --help` and the presets (dlchapter/presets/*.py) read these; each run module
(`dlchapter.runs.*`) takes one and re-exports it under its old name (`dlchapter.runs.tabular_runs.TabularConfig`).
A field's trailing comment is its `--help` text (tyro reads it from this file).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

# dlchapter.engine.optim.DEFAULT_LEARNING_RATES (Keras's defaults), written out so that the sweep presets import no
# JAX; tests/test_cold_start.py checks that they are equal.
DEFAULT_LEARNING_RATES: dict[str, float] = {"sgd": 0.01, "momentum": 0.01, "rmsprop": 0.001, "adam": 0.001}


# TabularConfig: run by dlchapter.runs.tabular_runs
@dataclass(frozen=True)
class TabularConfig:
    """A dense network on a tabular data set; defaults are overridden by each experiment's presets."""

    dataset: str = "iris"
    task: str = "multiclass"  # regression | binary | multiclass
    hidden: tuple[int, ...] = (12, 8)
    activation: str = "relu"
    dropout: tuple[float, ...] = ()  # a rate after each hidden layer; empty for none
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: Keras's default for the optimizer
    decay: float = 0.0  # the chapter's a = a0 / (1 + decay * epoch)
    l2: float = 0.0
    epochs: int = 150
    batch_size: int = 10
    validation_split: float = 0.0
    validation_mode: str = "stratified"  # stratified | shuffled | last (Keras's default)
    monitor: str | None = "accuracy"  # early stopping on this log; None turns it off
    patience: int = 4
    min_delta: float = 0.0
    test_size: float = 0.25
    stratify_test: bool = False
    scale_inputs: bool = False
    clip_quantile: float | None = None  # clip each feature to its [q, 1-q] training quantiles (robust to bad rows)
    scale_target: bool = False  # standardize the regression target on training rows
    log_target: bool = False  # fit log(target); report in the original units
    max_target: float | None = None  # keep rows with target < this (California's Value < 5)
    drop_implausible: bool = False
    """drop rows outside the data set's physically possible ranges (diamonds: zero or > 20 mm sizes)"""
    impute_zeros: tuple[str, ...] = ()  # columns whose 0 means "not measured": replaced by the training rows' median
    ensemble: int = 1
    """> 1: this many networks (seeds seed, seed+1000, ...) trained in one vmapped program, outputs averaged"""
    threshold: float = 0.5  # binary decision threshold on the predicted probability
    xgboost: bool = False  # also fit an XGBoost regressor on the same split
    seed: int = 0
    steps_per_call: int | None = None  # train steps per compiled call; None or 0: the whole epoch per call
    precision: str = "fp32"  # fp32 | bf16 (bf16 compute, float32 parameters, loss and metrics)
    data_parallel: bool = False  # split each batch over every device of every process (README: "Scale out")
    checkpoint_every_epochs: int = 0
    """0: no checkpoints; else save every N epochs in workdir/checkpoints and resume from them"""
    restart: bool = False  # start over; the earlier checkpoints are deleted once this run has saved (README)
    debug_nans: bool = False  # jax_debug_nans, with buffer donation off
    data_dir: str | None = None
    missing: str = "error"  # empty or NA cells: error | drop (the rows) | impute (median, or most frequent category)
    note: str = ""  # shown in the summary: what to expect from this preset and why


# CsvConfig: run by dlchapter.runs.own_csv
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


# ImageConfig: run by dlchapter.runs.image_runs
@dataclass(frozen=True)
class ImageConfig:
    """The chapter's CNN on an MNIST-format data set; defaults are the chapter's values."""

    dataset: str = "mnist"  # mnist | fashion_mnist
    style: str = "compact"  # compact (ChapterCNN) | functional (FunctionalCNN)
    optimizer: str = "rmsprop"
    learning_rate: float | None = None  # None: Keras's default for the optimizer (rmsprop 0.001)
    epochs: int = 5
    batch_size: int = 64
    validation_split: float = 0.1  # of the training rows; 0 for none (the chapter's code has none)
    validation_mode: str = "stratified"  # stratified | shuffled | last
    holdout_from_test: bool = False  # train on the test split's first rows, test on its last rows
    holdout_train: int = 8000
    holdout_test: int = 2000
    max_train: int | None = None  # keep only the first rows (for quick runs and tests)
    max_test: int | None = None
    steps_per_call: int | None = None  # None: by backend (32 on CPU, else whole epoch); 0: whole epoch
    eval_batch_size: int = 1000
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (bf16 compute, float32 parameters, loss and metrics)
    data_parallel: bool = False  # split each batch over every device of every process (README: "Scale out")
    data_dir: str | None = None
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    checkpoint_every_epochs: int = 1  # 0: no checkpoints; else workdir/checkpoints, resumed from on the next run
    checkpoint_every_steps: int = 0  # also save inside an epoch every N steps (0: only at epoch ends)
    restart: bool = False  # start over; the earlier checkpoints are deleted once this run has saved (README)
    note: str = ""  # shown in the summary: what to expect from this preset


# SequenceConfig: run by dlchapter.runs.sequence_runs
@dataclass(frozen=True)
class SequenceConfig:
    """One run of either task; None (or an empty tuple) takes the task's default from `TASK_DEFAULTS`."""

    task: str = "temperatures"  # temperatures | images
    dataset: str | None = None  # daily_min_temperatures | fashion_mnist | mnist
    holdout_from_test: bool = False  # images: train on the first `holdout_train` test images, test on the rest
    holdout_train: int = 8000
    models: tuple[str, ...] = ()  # among simple_rnn, gru, lstm, dense
    window: int = 30  # temperatures: days of history per forecast
    train_until: str = "1988-12-31"  # temperatures: last training target date
    validation_until: str = "1989-12-31"  # temperatures: last validation target date; later ones are the test period
    validation_fraction: float = 0.1  # images: stratified share of the training images held out
    max_train: int | None = None  # images: keep only the first N training images (quick runs)
    max_test: int | None = None  # images: keep only the first N test images
    hidden: int | None = None  # recurrent units per layer
    num_layers: int = 1
    dense_hidden: tuple[int, ...] = (64, 32)  # the dense baseline's hidden widths
    optimizer: str = "adam"
    learning_rate: float | None = None
    clip_global_norm: float | None = 1.0
    epochs: int | None = None
    batch_size: int | None = None
    patience: int | None = None  # early stopping on val_loss
    steps_per_call: int | None = None
    (
        "train steps per compiled call; None: a whole epoch per call (CPU, batch 128: GRU 6.3 vs 7.9 ms per step, "
        "LSTM 8.5 vs 8.6; benchmarks/)"
    )
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (bf16 compute, float32 parameters, loss and metrics)
    data_dir: str | None = None


# ActivationsConfig: run by dlchapter.runs.concept_runs
@dataclass(frozen=True)
class ActivationsConfig:
    """The plotted range and the chapter's softmax example."""

    x_min: float = -4.0
    x_max: float = 4.0
    points: int = 801
    leaky_alpha: float = 0.1  # larger than the library's 0.01 so the negative slope is visible
    softmax_inputs: tuple[float, ...] = (1.0, -1.0, 0.0, 3.0)
    seed: int = 0  # unused (nothing is random); accepted so `dlchapter run all --seed N` works


# BackpropConfig: run by dlchapter.runs.concept_runs
@dataclass(frozen=True)
class BackpropConfig:
    """Synthetic 2-feature data from a logistic model, and plain gradient descent on it."""

    rows: int = 500
    true_w: tuple[float, ...] = (2.0, -1.5)
    true_b: float = 0.5
    learning_rate: float = 2.0
    steps: int = 3000
    float64: bool = True
    seed: int = 0


# BatchSizeConfig: run by dlchapter.runs.dynamics
@dataclass(frozen=True)
class BatchSizeConfig:
    """Batch GD (batch = m), mini-batches and SGD (batch 1), all with the same optimizer and rate."""

    dataset: str = "california_housing"
    max_target: float | None = 5.0  # the chapter's rows with Value < 5
    train_rows: int | None = 8000  # a random subset, so batch-1 SGD stays quick; None: all
    validation_rows: int | None = 2000
    batch_sizes: tuple[int, ...] = (1, 32, 256, 1024)
    full_batch: bool = True  # also batch gradient descent, batch = all training rows
    hidden: tuple[int, ...] = (100, 200)
    clip_features: float | None = 5.0  # clip scaled inputs to +-5: unclipped outlier rows blow up batch-1 SGD
    optimizer: str = "sgd"
    learning_rate: float = 0.01  # Keras's SGD default
    epochs: int = 30
    seed: int = 0
    data_dir: str | None = None


# OptimizersConfig: run by dlchapter.runs.dynamics
@dataclass(frozen=True)
class OptimizersConfig:
    """Each optimizer at Keras's default rate, plus one run with the chapter's decay a0 / (1 + decay * epoch)."""

    dataset: str = "california_housing"
    max_target: float | None = 5.0
    train_rows: int | None = None  # None: every row not held out
    validation_rows: int | None = None
    validation_fraction: float = 0.2
    clip_features: float | None = 5.0  # clip scaled inputs to +-5 standard deviations
    optimizers: tuple[str, ...] = ("sgd", "momentum", "rmsprop", "adam")
    decay_optimizer: str = "adam"
    decay_learning_rate: float = 0.01
    decay: float = 0.5
    hidden: tuple[int, ...] = (100, 200)
    batch_size: int = 128
    epochs: int = 20
    seed: int = 0
    data_dir: str | None = None


# OverfittingConfig: run by dlchapter.runs.regularization
@dataclass(frozen=True)
class OverfittingConfig:
    """A network far larger than its training set, and the strengths of the two regularizers."""

    dataset: str = "diabetes"
    task: str = "binary"  # regression | binary
    max_target: float | None = None  # regression only: keep rows with target < this
    clip_features: float | None = None
    train_rows: int = 400
    validation_rows: int = 368  # the rest of Pima's 768 rows
    hidden: tuple[int, ...] = (512, 512, 512, 512)
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: Keras's default
    l2: float = 1e-2
    dropout: float = 0.5  # rate; keep-prob 0.5
    batch_size: int = 32
    epochs: int = 60
    seed: int = 0
    data_dir: str | None = None


# ValidationConfig: run by dlchapter.runs.validation
@dataclass(frozen=True)
class ValidationConfig:
    """The chapter's binary network, and how it is validated."""

    dataset: str = "diabetes"
    hidden: tuple[int, ...] = (100, 8)
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: Keras's default
    epochs: int = 30
    batch_size: int = 32
    k: int = 4  # as in the chapter's figure
    stratify: bool = True  # keep the class balance in every fold and hold-out split
    holdout_fraction: float = 0.25
    holdout_repeats: int = 4  # hold-out splits with seeds seed, seed + 1, ...: how much one split's score varies
    threshold: float = 0.5
    seed: int = 0
    data_dir: str | None = None


# SweepRunConfig: run by dlchapter.runs.sweep_runs
@dataclass(frozen=True)
class SweepRunConfig:
    """The network and data (defaults: the chapter's California network), and the search over them."""

    dataset: str = "california_housing"
    task: str = "regression"
    hidden: tuple[int, ...] = (100, 200)
    activation: str = "relu"
    dropout_layers: tuple[int, ...] = (0,)  # hidden layers followed by dropout at each configuration's rate
    optimizer: str = "adam"
    decay: float = 0.0
    epochs: int = 100
    batch_size: int = 128
    validation_split: float = 0.1
    validation_mode: str = "last"
    folds: int = 0  # 0: one validation split; k >= 2: k-fold cross-validation over the training rows
    monitor: str | None = "val_loss"
    patience: int = 4
    select_by: str | None = None  # the validation log that ranks configurations; None: the monitor
    test_size: float = 0.2
    stratify_test: bool = False
    scale_inputs: bool = True
    max_target: float | None = 5.0
    split_seed: int = 0  # train/test, validation and fold splits (the model seeds are `seeds`)
    learning_rates: tuple[float, ...] = (1e-3, 3e-3)
    l2s: tuple[float, ...] = (0.0, 1e-4)
    dropouts: tuple[float, ...] = (0.0, 0.2)
    seeds: tuple[int, ...] = (0, 1, 2)
    search: str = "grid"  # grid: every combination; random: `samples` draws (log-uniform rates, uniform dropout)
    samples: int = 8
    sample_seed: int = 0
    reference: tuple[float, ...] | None = None
    """(learning rate, L2, dropout) reported beside the best, e.g. the chapter's"""
    data_dir: str | None = None
    note: str = ""


def from_tabular(base: TabularConfig, **search: Any) -> SweepRunConfig:
    """A sweep over `base`'s network and data (a `dlchapter.runs.tabular_runs` preset), with `search` overrides."""
    shared = {f.name: getattr(base, f.name) for f in fields(SweepRunConfig) if hasattr(base, f.name)}
    shared.update(
        dropout_layers=tuple(i for i, r in enumerate(base.dropout) if r),
        split_seed=base.seed,
        l2s=(base.l2,),
        dropouts=(max(base.dropout, default=0.0),),
        note="",
    )
    shared["learning_rates"] = (base.learning_rate or DEFAULT_LEARNING_RATES[base.optimizer],)
    shared["reference"] = (shared["learning_rates"][0], base.l2, shared["dropouts"][0])
    return replace(SweepRunConfig(**shared), **search)
