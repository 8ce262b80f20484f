"""`fitting.fit_model`: the shared optimizer -> state -> precision -> fit path."""

import math

import jax
import numpy as np
import pytest

from dlchapter.engine import fitting
from dlchapter.engine.optim import OptimizerConfig
from dlchapter.engine.train import TASKS, FitConfig, Trainer
from dlchapter.models.dense import MLP


@pytest.mark.parametrize("n,b", [(10, 3), (9, 3), (5, 32), (1, 1)])
def test_steps_per_epoch_is_the_ceiling(n, b):
    assert fitting.steps_per_epoch(n, b) == math.ceil(n / min(b, n))


def test_compiling_first_changes_no_number():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)[:, None]
    model = MLP(widths=(4,), out_features=1, head="sigmoid")
    config = FitConfig(epochs=2, batch_size=16, seed=0, progress=False)
    runs = [
        fitting.fit_model(
            model,
            OptimizerConfig("sgd", 0.1),
            x,
            y,
            config,
            jax.random.key(3),
            Trainer(TASKS["binary"]),
            compile_first=c,
        )
        for c in (False, True)
    ]
    assert runs[0].compile_seconds is None and runs[1].compile_seconds >= 0.0
    np.testing.assert_array_equal(runs[0].history.values["loss"], runs[1].history.values["loss"])
    for a, b in zip(jax.tree.leaves(runs[0].state.params), jax.tree.leaves(runs[1].state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
