"""The --help layout of the config classes: each field's section and description.

`SECTIONS` groups the flat config fields into the sections a researcher recognises (data, model, optimizer,
fit, runtime; "experiment" for the rest), `SECTION_TITLES` names them, and `DESCRIPTIONS` describes fields
whose class gives no comment beside them. `dlchapter.configs.config` builds its tyro view from these.
"""

from __future__ import annotations

SECTIONS: dict[str, tuple[str, ...]] = {
    "data": (
        "dataset",
        "data_dir",
        "data_path",
        "sep",
        "target",
        "categorical",
        "missing",
        "handle_unknown",
        "test_size",
        "stratify_test",
        "validation_split",
        "validation_mode",
        "validation_fraction",
        "folds",
        "split_seed",
        "k",
        "holdout_repeats",
        "scale_inputs",
        "clip_quantile",
        "clip_features",
        "scale_target",
        "log_target",
        "max_target",
        "drop_implausible",
        "impute_zeros",
        "holdout_from_test",
        "holdout_train",
        "holdout_test",
        "max_train",
        "max_test",
        "train_rows",
        "validation_rows",
        "window",
        "train_until",
        "validation_until",
        "rows",
        "true_w",
        "true_b",
    ),
    "model": (
        "task",
        "hidden",
        "activation",
        "dropout",
        "dropout_layers",
        "style",
        "models",
        "num_layers",
        "dense_hidden",
        "ensemble",
        "reference",
    ),
    "optimizer": (
        "optimizer",
        "learning_rate",
        "decay",
        "l2",
        "clip_global_norm",
        "optimizers",
        "decay_optimizer",
        "decay_learning_rate",
        "learning_rates",
        "l2s",
        "dropouts",
        "search",
        "samples",
        "sample_seed",
    ),
    "fit": (
        "epochs",
        "batch_size",
        "batch_sizes",
        "full_batch",
        "steps",
        "monitor",
        "patience",
        "min_delta",
        "select_by",
        "eval_batch_size",
        "threshold",
        "xgboost",
    ),
    "runtime": (
        "seed",
        "seeds",
        "steps_per_call",
        "precision",
        "data_parallel",
        "float64",
        "progress",
        "checkpoint_every_epochs",
        "checkpoint_every_steps",
        "restart",
        "debug_nans",
    ),
}
"""The --help section of each field name; a field named nowhere is shown under "experiment"."""

SECTION_TITLES = {
    "data": "data set, splits and preprocessing",
    "model": "the network",
    "optimizer": "optimizer and learning rate (and the grid a sweep searches)",
    "fit": "training loop, early stopping and evaluation",
    "runtime": "seeds, devices, precision and checkpoints",
    "experiment": "what this experiment varies",
}

DESCRIPTIONS: dict[str, str] = {
    "dataset": "the data set (see `dlchapter list`)",
    "data_dir": "directory holding the data files; none: $DLCHAPTER_DATA_DIR, the cache, then a download",
    "epochs": "maximum number of passes over the training rows",
    "batch_size": "rows per training step",
    "seed": "seed of the run's random streams (splits, initialisation, batch order, dropout); 0 <= seed < 2**32",
    "seeds": "model seeds, each trained with every configuration",
    "hidden": "widths of the hidden layers, comma-separated",
    "optimizer": "the optimizer (Keras's default learning rate unless --learning-rate is given)",
    "learning_rate": "step size; none: Keras's default for the optimizer",
    "l2": "Keras's kernel L2 penalty: l2 * sum of squared kernel weights",
    "test_size": "share of the rows held out as the test split",
    "patience": "epochs without improvement of the monitored log before stopping",
    "k": "number of folds",
    "holdout_repeats": "hold-out splits drawn, each with its own seed",
    "rows": "number of synthetic rows",
    "steps": "gradient-descent steps",
    "validation_split": "share of the training rows held out for validation (0: none)",
    "stratify_test": "keep the class shares in the train/test split",
    "scale_inputs": "standard-scale the inputs with the training rows' mean and deviation",
    "activation": "activation of the hidden layers",
    "batch_sizes": "batch sizes compared, comma-separated",
    "full_batch": "also batch gradient descent (batch = every training row)",
    "monitor": "the history log early stopping watches (none: no early stopping)",
    "min_delta": "smallest change of the monitored log that counts as an improvement",
    "threshold": "decision threshold on the predicted probability (binary tasks)",
    "style": "the chapter's model written compactly or in the functional style",
    "decay": "the chapter's learning-rate decay: a = a0 / (1 + decay * epoch)",
    "float64": "compute in float64 (jax_enable_x64) so the hand-written gradients match to 1e-12",
    "true_w": "weights of the synthetic logistic model, comma-separated",
    "true_b": "bias of the synthetic logistic model",
    "x_min": "left end of the plotted inputs",
    "x_max": "right end of the plotted inputs",
    "points": "number of plotted inputs",
    "holdout_train": "with --holdout-from-test: train on this many first images of the test split",
    "holdout_test": "with --holdout-from-test: test on this many last images of the test split",
    "max_train": "keep only the first N training rows (quick runs); none: all",
    "max_test": "keep only the first N test rows (quick runs); none: all",
    "eval_batch_size": "rows per evaluation step",
    "num_layers": "stacked recurrent layers",
    "train_rows": "training rows drawn from the data set",
    "validation_rows": "validation rows drawn from the data set",
    "learning_rates": "learning rates searched, comma-separated",
    "l2s": "L2 strengths searched, comma-separated",
    "dropouts": "dropout rates searched, comma-separated, each in [0, 1)",
    "samples": "configurations drawn when --search random",
    "sample_seed": "seed of the random search's draws",
    "note": "shown in the summary: what to expect from this preset",
    "optimizers": "optimizers compared, comma-separated",
    "models": "models trained, comma-separated",
    "precision": "fp32, or bf16 compute with float32 parameters, loss and metrics",
}
"""Descriptions of fields whose class gives none beside them."""


def field_description(cls: type, name: str) -> str:
    """The --help text of field `name` of `cls`: its trailing comment or docstring, else `DESCRIPTIONS`."""
    try:  # the comment beside the field, as tyro reads it for its own dataclasses
        from tyro._docstrings import get_field_docstring

        text = get_field_docstring(cls, name, ())
    except Exception:  # noqa: BLE001  (a private helper of tyro: without it the help shows defaults only)
        text = None
    return text or DESCRIPTIONS.get(name, "")


def section_of(name: str) -> str:
    """The --help section that lists field `name` (`SECTIONS`; "experiment" when none does)."""
    return next((section for section, names in SECTIONS.items() if name in names), "experiment")


__all__ = ["DESCRIPTIONS", "SECTIONS", "SECTION_TITLES", "field_description", "section_of"]
