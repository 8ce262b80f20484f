"""The engine's open contract: cached predict, 0 rows, own modules with collections, pytree inputs,
callable losses, CLU-shaped metrics, save/restore."""

import jax
import numpy as np
import pytest

from dlchapter.models.dense import MLP
from dlchapter.optim import OptimizerConfig, make_optimizer
from dlchapter.train import TASKS, Trainer, create_train_state


def _regression_data(n=60, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x @ rng.normal(size=features)).astype(np.float32)
    return x, y


def _mlp_state(x):
    return create_train_state(MLP((8,), 1), make_optimizer(OptimizerConfig("adam", learning_rate=0.01)), x, jax.random.key(0))


def test_repeated_same_shape_predict_traces_once():
    x, _ = _regression_data()
    state = _mlp_state(x)
    trainer = Trainer(TASKS["regression"], eval_batch_size=16)
    first = trainer.predict(state, x)
    for _ in range(19):
        np.testing.assert_array_equal(trainer.predict(state, x), first)
    assert trainer.traces["predict"] == 1  # 60 rows in batches of 16: one batch shape, one trace
    trainer.predict(state, x[:5])  # a new batch shape compiles once more
    trainer.predict(state, x[:5])
    assert trainer.traces["predict"] == 2
    direct = np.asarray(state.apply_fn({"params": state.params}, x))
    np.testing.assert_allclose(first, direct, rtol=1e-5, atol=1e-6)


def test_zero_rows_predict_is_empty_and_evaluate_raises():
    x, y = _regression_data()
    state = _mlp_state(x)
    trainer = Trainer(TASKS["regression"])
    empty = trainer.predict(state, x[:0])
    assert empty.shape == (0, 1) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="no rows"):
        trainer.evaluate(state, x[:0], y[:0])
