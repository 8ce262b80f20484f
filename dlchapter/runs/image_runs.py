"""The chapter's image-classification workflow as one library call.

source (MNIST or Fashion-MNIST IDX files) -> uint8 arrays -> optional
holdout from the test split -> validation split of the training rows
(stratified, seeded) -> pixels scaled to [0, 1] as (N, 28, 28, 1) float32 ->
device -> fit the chapter's CNN (compact or functional style) with RMSprop and
sparse categorical cross-entropy -> test loss, accuracy and top-k accuracy
from the predicted probabilities -> run directory (metrics.json,
history.csv, config.json, classification_report.json, summary.md, figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.configs import config_checks
from dlchapter.configs.config import ConfigError, config_dict
from dlchapter.data import DataError, load
from dlchapter.engine import fitting, parallel
from dlchapter.engine.optim import OptimizerConfig
from dlchapter.engine.train import TASKS, FitConfig, History, Trainer, split_validation
from dlchapter.models.conv import ChapterCNN, FunctionalCNN
from dlchapter.presets.run_configs import ImageConfig  # defined apart: `run NAME --help` needs no JAX
from dlchapter.reporting import plots, provenance, report, scores
from dlchapter.reporting.summary import count_params, summarize, summary_markdown

PIXEL_MAX = 255.0
SAMPLE_IMAGES = 32
MISCLASSIFIED_IMAGES = 24


@dataclass
class ImageResult:
    """What a run produced, for callers that want more than the files."""

    metrics: dict[str, Any]
    history: History
    files: dict[str, str] = field(default_factory=dict)
    traces: dict[str, int] = field(default_factory=dict)  # how often each program was traced (1 = compiled once)


@dataclass(frozen=True)
class ImageSplits:
    """Raw uint8 images and int64 labels of the training and test rows, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    name: str
    source: str
    description: str


MODELS: dict[str, type[nn.Module]] = {"compact": ChapterCNN, "functional": FunctionalCNN}

# Chosen by measurement on the 2-core AMD EPYC (benchmarks/NOTES.md, Nov 30 b). With the canonical-gradient
# convolution and copy insertion by region analysis, fused steps cost no more than single ones: on the quiet
# machine one step per call 7.06 ms, 8 steps 6.90, 24 (a benchmark epoch) 6.65; under load CPU ms per step
# 13.4 / 12.9 / 13.7 (a tie). 32 steps per call takes the dispatch off the step and still returns to the host
# (progress bar, mid-epoch checkpoints, SIGTERM) every ~0.2-0.5 s; a whole epoch is 938 steps (6-15 s).
# Accelerators are unmeasured here; there a whole epoch per call removes the per-step dispatch (DESIGN.md).
STEPS_PER_CALL_BY_BACKEND: dict[str, int | None] = {"cpu": 32, "gpu": None, "tpu": None}


def resolve_steps_per_call(requested: int | None, backend: str | None = None) -> int | None:
    """The Trainer's `steps_per_call`: `requested` if given (0 = whole epoch), else by backend."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"steps_per_call must be >= 0 (0: a whole epoch per call), got {requested}")
        return requested or None
    return STEPS_PER_CALL_BY_BACKEND.get(backend or jax.default_backend(), None)


def scale_images(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W) to float32 in [0, 1] shaped (N, H, W, 1)."""
    return (np.asarray(x, np.float32) / PIXEL_MAX)[..., None]


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class is among the `k` most probable (ties: lower class first)."""
    probs = np.asarray(probs)
    y_true = np.asarray(y_true).ravel()
    if probs.ndim != 2 or probs.shape[0] != y_true.size:
        raise ValueError(f"expected probabilities (n, classes) for {y_true.size} labels, got shape {probs.shape}")
    if not 1 <= k <= probs.shape[1]:
        raise ValueError(f"k must be between 1 and {probs.shape[1]}, got {k}")
    top_NxK = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top_NxK == y_true[:, None], axis=1)))


def holdout_rows(n_rows: int, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first `n_train` rows and of the last `n_test` rows; they must not overlap."""
    if n_train < 1 or n_test < 1 or n_train + n_test > n_rows:
        raise ConfigError(
            f"--holdout-train {n_train} --holdout-test {n_test}: a holdout needs {n_train + n_test} "
            "rows, the test split "
            f"has {n_rows}; choose sizes >= 1 that add up to at most {n_rows}"
        )
    return np.arange(n_train), np.arange(n_rows - n_test, n_rows)


def load_splits(config: ImageConfig) -> ImageSplits:
    """The training and test images `config` asks for (holdout, max_train/max_test applied)."""
    if config.holdout_from_test:
        ds = load(config.dataset, data_dir=config.data_dir, split="test")
        train_idx, test_idx = holdout_rows(len(ds.y), config.holdout_train, config.holdout_test)
        x_train, y_train, x_test, y_test = ds.x[train_idx], ds.y[train_idx], ds.x[test_idx], ds.y[test_idx]
        description = (
            f"Holdout from the test split: the {len(ds.y):,} images of `{ds.source}` only; trained on its first "
            f"{config.holdout_train:,} images and tested on its last {config.holdout_test:,} (`holdout_from_test`). "
            "These test numbers are not comparable with a model trained on the 60,000 training images."
        )
        source = ds.source
    else:
        try:
            train = load(config.dataset, data_dir=config.data_dir, split="train")
        except DataError as err:
            raise DataError(
                f"{err}\nWith only the test split, run with holdout_from_test (--holdout-from-test) to train on its "
                f"first {config.holdout_train} images and test on its last {config.holdout_test}."
            ) from err
        test = load(config.dataset, data_dir=config.data_dir, split="test")
        ds = train
        x_train, y_train, x_test, y_test = train.x, train.y, test.x, test.y
        description = f"The standard split: training images from `{train.source}`, test images from `{test.source}`."
        source = f"{train.source}; {test.source}"
    if config.max_train is not None:
        x_train, y_train = x_train[: config.max_train], y_train[: config.max_train]
    if config.max_test is not None:
        x_test, y_test = x_test[: config.max_test], y_test[: config.max_test]
    if config.max_train is not None or config.max_test is not None:
        description += (
            f" Reduced for a quick run to the first {len(y_train):,} training and {len(y_test):,} test images."
        )
    class_names = tuple(ds.class_names or (str(c) for c in range(10)))
    return ImageSplits(x_train, y_train, x_test, y_test, class_names, ds.name, source, description)


def run_images(config: ImageConfig, workdir: Path) -> ImageResult:
    """Train and evaluate `config` end to end, writing the run directory `workdir`."""
    config_checks.validate(config)  # ConfigError before anything loads
    if config.style not in MODELS:
        raise ValueError(f"style must be one of {', '.join(MODELS)}, got {config.style!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    placement = parallel.placement_for(config.data_parallel)  # before any other JAX call: may join other processes
    splits = load_splits(config)
    task = TASKS["sparse_multiclass"]
    fit_config = FitConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        validation_mode=config.validation_mode,
        seed=config.seed,
        progress=config.progress,
    )
    x_train, y_train = scale_images(splits.x_train), splits.y_train
    validation = None
    if config.validation_split:
        x_train, y_train, validation = split_validation(x_train, y_train, fit_config, classification=True)
    x_test = scale_images(splits.x_test)

    model = MODELS[config.style]()
    steps_per_epoch = fitting.steps_per_epoch(len(y_train), config.batch_size)
    steps_per_call = resolve_steps_per_call(config.steps_per_call)
    trainer = Trainer(task, steps_per_call=steps_per_call, eval_batch_size=config.eval_batch_size, placement=placement)
    checkpoint = (
        CheckpointConfig(
            workdir / "checkpoints",
            every_steps=config.checkpoint_every_steps,
            every_epochs=config.checkpoint_every_epochs,
            restart=config.restart,
            run_config=config_dict(config),
        )
        if config.checkpoint_every_epochs
        else None
    )

    optimizer = OptimizerConfig(config.optimizer, config.learning_rate)
    fitted = fitting.fit_model(
        model,
        optimizer,
        x_train,
        y_train,
        fit_config,
        jax.random.key(config.seed),
        trainer,
        precision=config.precision,
        validation_data=validation,
        checkpoint=checkpoint,
        compile_first=True,
    )
    model, state, history = fitted.model, fitted.state, fitted.history
    train_seconds, compile_seconds = fitted.train_seconds, fitted.compile_seconds
    timing: dict[str, Any] = {"compile_from_cache": fitted.compile_from_cache}
    if history.epochs_run and not history.epochs_trained:  # restored whole: the real run's timings, not a restore's
        timing = {"epochs_trained_by_this_run": 0, **report.earlier_run_timing(workdir, config, history)}
        train_seconds, compile_seconds = timing.pop("train_seconds"), timing.pop("compile_seconds", None)
    workdir = parallel.report_dir(workdir)  # only process 0 writes the report (checkpoints above are shared)

    test_logs = trainer.evaluate(state, x_test, splits.y_test)
    probs = trainer.predict(state, x_test)
    y_pred = probs.argmax(axis=-1)
    n_validation = 0 if validation is None else int(len(validation[1]))
    metrics: dict[str, Any] = {
        "test_loss": test_logs["loss"],
        "test_accuracy": float(np.mean(y_pred == splits.y_test)),
        "test_top1_accuracy": top_k_accuracy(splits.y_test, probs, 1),
        "test_top2_accuracy": top_k_accuracy(splits.y_test, probs, 2),
        "seed": config.seed,
        "epochs_run": history.epochs_run,
        "params": count_params(state.params),
        "train_seconds": train_seconds,
        "epoch_seconds": list(history.values.get("epoch_seconds", [])),
        "compile_seconds": compile_seconds,
        **timing,
        "steps_per_call": trainer.steps_per_call or steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "backend": jax.default_backend(),
        "n_train": int(len(y_train)),
        "n_validation": n_validation,
        "n_test": int(len(splits.y_test)),
        "holdout_from_test": config.holdout_from_test,
    }
    metrics.update({f"final_{k}": v[-1] for k, v in history.values.items() if k not in ("epoch_seconds", "lr") and v})
    files = _figures(config, splits, probs, history, workdir)
    table = scores.classification_report(splits.y_test, y_pred, splits.class_names)
    report.write_json(workdir / "classification_report.json", table)
    report.write_history(workdir / "history.csv", history)
    sections = _sections(config, splits, metrics, model, state.params, x_train, table)
    metrics["provenance"] = provenance.collect()  # returned as written
    report.write_run(
        workdir,
        config,
        metrics,
        f"{splits.name}: the chapter's CNN, {config.style} style (seed {config.seed})",
        sections,
        files,
    )
    return ImageResult(metrics, history, files, dict(trainer.traces))


def _figures(
    config: ImageConfig, splits: ImageSplits, probs: np.ndarray, history: History, workdir: Path
) -> dict[str, str]:
    """Sample images, training curves, confusion matrix and misclassified images; caption -> file name."""
    names = splits.class_names
    y_pred = probs.argmax(axis=-1)
    files: dict[str, str] = {}
    shown = min(SAMPLE_IMAGES, len(splits.y_train))
    files["sample training images with their labels"] = plots.image_grid(
        splits.x_train[:shown],
        [names[int(c)] for c in splits.y_train[:shown]],
        workdir / "sample_images.png",
        title=f"{splits.name}: the first {shown} training images",
    ).name
    files["training curves"] = plots.training_curves(
        history.values, workdir / "training_curves.png", title=f"{splits.name}: training history"
    ).name
    matrix = scores.confusion_matrix(splits.y_test, y_pred, len(names))
    files["confusion matrix (test)"] = plots.confusion_matrix(
        matrix, names, workdir / "confusion_matrix.png", title=f"{splits.name}: confusion matrix (test)"
    ).name
    wrong = np.flatnonzero(y_pred != splits.y_test)[:MISCLASSIFIED_IMAGES]
    if wrong.size:
        labels = [
            f"{names[int(splits.y_test[i])]} -> {names[int(y_pred[i])]}\n(p={probs[i, y_pred[i]]:.2f})" for i in wrong
        ]
        files["misclassified test images (true -> predicted)"] = plots.image_grid(
            splits.x_test[wrong],
            labels,
            workdir / "misclassified.png",
            columns=6,
            title=f"{splits.name}: the first {wrong.size} misclassified test images",
        ).name
    return files


def _compile_text(metrics: dict[str, Any]) -> str:
    """The summary's sentence on compiling the train step: seconds, loaded from the cache, or not recorded."""
    seconds = metrics["compile_seconds"]
    if seconds is None:
        return "The train step's compile time was not recorded."
    if metrics.get("compile_from_cache"):
        return f"The train step came from the persistent compilation cache ({seconds:.2f} s to load)."
    return f"Compiling the train step took {seconds:.1f} s before the first epoch (not in the epoch times)."


def _sections(
    config: ImageConfig,
    splits: ImageSplits,
    metrics: dict[str, Any],
    model: nn.Module,
    params: Any,
    x_train: np.ndarray,
    table: dict[str, dict[str, float]],
) -> list[tuple[str, str]]:
    """The summary's (heading, Markdown) sections."""
    metric_rows = [{"metric": k, "value": v} for k, v in metrics.items() if k.startswith("test_")]
    epochs = metrics["epoch_seconds"]
    rate = (
        f"{1000 * np.median(epochs) / metrics['steps_per_epoch']:.1f} ms per step (median epoch time / steps)"
        if epochs
        else "no epochs"
    )
    validation = (
        f"{metrics['n_validation']:,} validation rows: a {config.validation_split:.0%} "
        f"{config.validation_mode} split of the "
        f"training rows (seed {config.seed}), evaluated after every epoch. The chapter's code has no validation data; "
        f"this one costs a forward pass over {config.validation_split:.0%} of the rows per epoch, "
        "which are not trained on."
        if metrics["n_validation"]
        else "No validation split (as in the chapter's code): every training row is trained on."
    )
    training = (
        f"{metrics['epochs_run']} epochs of {metrics['steps_per_epoch']} steps (batch {config.batch_size}, "
        f"{config.optimizer} at {config.learning_rate or 'the Keras default rate'}, sparse "
        "categorical cross-entropy) in "
        f"{metrics['train_seconds']:.1f} s on {metrics['backend']}: "
        f"{', '.join(f'{s:.1f}' for s in epochs)} s per epoch, "
        f"{rate}, {metrics['steps_per_call']} step(s) per compiled call. {_compile_text(metrics)}"
    )
    if "timing_source" in metrics:
        training += (
            f" All {metrics['epochs_run']} epochs were restored from the checkpoints: this rerun trained nothing "
            f"(times from {metrics['timing_source']})."
        )
    data = (
        f"{splits.description} {metrics['n_train']:,} training rows, {metrics['n_test']:,} test rows. "
        f"Pixels divided by 255 into [0, 1], shaped (N, 28, 28, 1) float32. {validation}"
    )
    model_text = (
        f"`{type(model).__name__}` ({config.style} style). Max-pooling and flattening have no "
        "parameters and are not listed.\n\n"
        + summary_markdown(summarize(model, params, x_train[:1]), count_params(params))
    )
    sections = [
        ("Data", data),
        ("Test metrics", report.markdown_table(metric_rows)),
        ("Training", training),
        ("Model", model_text),
        ("Classification report (test)", scores.report_markdown(table)),
    ]
    if config.note:
        sections.insert(0, ("About this preset", config.note))
    return sections
