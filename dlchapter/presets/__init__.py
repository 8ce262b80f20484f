"""The chapter's experiments: each one's presets, data-set needs and one-line summary, in one registry.

`EXPERIMENTS` is an explicit dict; each entry imports its preset module (and
through it JAX and the run it configures) only when `recipe()` is called, so
`dlchapter list` and `dlchapter --help` stay light. `experiments/*.py` are
thin launchers over these entries; nothing here imports `experiments`.
Each preset module defines its `RECIPE`, a `Recipe` (dlchapter/presets/recipe.py, re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dlchapter.presets.recipe import Recipe  # its own module: the preset modules import it, this module imports them


@dataclass(frozen=True)
class Experiment:
    """A registry entry: what `dlchapter list` shows, the data sets a default run needs, and the lazy recipe."""

    summary: str
    datasets: tuple[str, ...]
    load: Callable[[], Recipe]
    needs: str = ""  # what a run needs beyond --workdir (then `dlchapter run all` skips it, saying so)

    def recipe(self) -> Recipe:
        """The experiment's presets and run (imports its preset module, and JAX, on first use)."""
        return self.load()


def _diamonds() -> Recipe:
    from dlchapter.presets import diamonds

    return diamonds.RECIPE


def _california() -> Recipe:
    from dlchapter.presets import california

    return california.RECIPE


def _diabetes() -> Recipe:
    from dlchapter.presets import diabetes

    return diabetes.RECIPE


def _iris() -> Recipe:
    from dlchapter.presets import iris

    return iris.RECIPE


def _tabular() -> Recipe:
    from dlchapter.presets import own_csv_preset as tabular

    return tabular.RECIPE


def _mnist_cnn() -> Recipe:
    from dlchapter.presets import mnist_cnn

    return mnist_cnn.RECIPE


def _sequences() -> Recipe:
    from dlchapter.presets import sequence_presets as sequences

    return sequences.RECIPE


def _sweep_california() -> Recipe:
    from dlchapter.presets import sweep_california

    return sweep_california.RECIPE


def _activations() -> Recipe:
    from dlchapter.presets import concept_presets as concepts

    return concepts.ACTIVATIONS


def _backprop() -> Recipe:
    from dlchapter.presets import concept_presets as concepts

    return concepts.BACKPROP


def _batch_size() -> Recipe:
    from dlchapter.presets import concept_presets as concepts

    return concepts.BATCH_SIZE


def _optimizers() -> Recipe:
    from dlchapter.presets import concept_presets as concepts

    return concepts.OPTIMIZERS


def _overfitting() -> Recipe:
    from dlchapter.presets import concept_presets as concepts

    return concepts.OVERFITTING


def _validation() -> Recipe:
    from dlchapter.presets import concept_presets as concepts

    return concepts.VALIDATION


EXPERIMENTS: dict[str, Experiment] = {
    "diamonds": Experiment(
        "first net: diamond prices, one-hot features, MLP 4 x 200 relu (chapter and improved presets)",
        ("diamonds",),
        _diamonds,
    ),
    "california": Experiment(
        "regression: California housing, 100 relu, dropout 0.2, 200 relu, beside XGBoost",
        ("california_housing",),
        _california,
    ),
    "diabetes": Experiment(
        "binary: Pima diabetes, 100 relu, 8 relu, 1 sigmoid; ROC, AUC, classification report", ("diabetes",), _diabetes
    ),
    "iris": Experiment("multiclass: iris, 12-8-3 softmax (chapter and improved presets)", ("iris",), _iris),
    "tabular": Experiment(
        "your own CSV through the same workflow: --data-path FILE --target COLUMN [--categorical A,B] "
        "[--task regression|binary|multiclass]",
        (),
        _tabular,
        needs="--data-path and --target (your own CSV)",
    ),
    "mnist_cnn": Experiment(
        "CNN: Conv32-64-128 on MNIST, rmsprop, 5 epochs "
        "(--dataset fashion_mnist, --style functional, --holdout-from-test)",
        ("mnist",),
        _mnist_cnn,
    ),
    "sequences": Experiment(
        "recurrent nets: temperature forecast vs persistence; images as sequences (--task temperatures|images)",
        ("daily_min_temperatures",),
        _sequences,
    ),
    "sweep_california": Experiment(
        "many models in one program: California lr x L2 x dropout x 3 seeds; Pima k-fold x seeds",
        ("california_housing", "diabetes"),
        _sweep_california,
    ),
    "activations": Experiment(
        "concepts: relu, leaky relu, sigmoid, tanh, GELU with derivatives; softmax vs hardmax", (), _activations
    ),
    "backprop": Experiment(
        "concepts: 2-feature logistic regression by hand-written backprop vs jax.grad and scikit-learn", (), _backprop
    ),
    "batch_size": Experiment(
        "concepts: batch GD vs mini-batch vs SGD on California housing, loss per epoch and per second",
        ("california_housing",),
        _batch_size,
    ),
    "optimizers": Experiment(
        "concepts: SGD, momentum, RMSprop, Adam and learning-rate decay on California housing",
        ("california_housing",),
        _optimizers,
    ),
    "overfitting": Experiment(
        "concepts: 4x512 net on 400 Pima rows: no regularization, L2, dropout, both", ("diabetes",), _overfitting
    ),
    "validation": Experiment(
        "concepts: hold-out vs 4-fold validation of the Pima network (accuracy, AUC)", ("diabetes",), _validation
    ),
}
"""Every runnable chapter section by the name `dlchapter run NAME` takes."""
