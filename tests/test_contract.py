"""The engine's open contract: cached predict, 0 rows, own modules with collections, pytree inputs,
callable losses, CLU-shaped metrics, save/restore."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlchapter.callbacks import EarlyStopping

from dlchapter.models.dense import MLP
from dlchapter.optim import OptimizerConfig, make_optimizer
from dlchapter.train import TASKS, FitConfig, Trainer, create_train_state


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


class _BatchNormCNN(nn.Module):
    """A small CNN with BatchNorm and dropout; `__call__` takes `train`."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(3)(x)


class _NoTrainArg(nn.Module):
    """A module whose `__call__` has no `train` argument."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=2.0, size=(n, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int32)
    return x, y


def test_batch_stats_change_in_training_and_are_what_evaluation_uses():
    x, y = _images()
    model = _BatchNormCNN()
    state = create_train_state(model, optax.adam(0.01), x, jax.random.key(0))
    before = jax.tree.map(np.asarray, state.model_state["batch_stats"])
    trainer = Trainer(TASKS["sparse_multiclass"], eval_batch_size=16)
    state, _ = trainer.fit(state, x, y, FitConfig(epochs=2, batch_size=8), jax.random.key(1))
    after = state.model_state["batch_stats"]
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, after)
    assert all(jax.tree.leaves(changed))
    logits = np.asarray(model.apply({"params": state.params, "batch_stats": after}, x, train=False))
    expected_loss = np.mean(-np.log(np.take_along_axis(_softmax(logits), y[:, None], axis=1)))
    logs = trainer.evaluate(state, x, y)
    np.testing.assert_allclose(logs["loss"], expected_loss, rtol=1e-4)
    np.testing.assert_allclose(logs["accuracy"], np.mean(logits.argmax(1) == y), rtol=1e-6)
    np.testing.assert_allclose(trainer.predict(state, x, raw=True), logits, rtol=1e-4, atol=1e-5)
    stale = np.asarray(model.apply({"params": state.params, "batch_stats": before}, x, train=False))
    assert not np.allclose(stale, logits, atol=1e-3)  # the stats matter, so the comparison above can fail


def test_early_stopping_keeps_the_best_epochs_batch_stats():
    x, y = _images()
    state = create_train_state(_BatchNormCNN(), optax.adam(0.01), x, jax.random.key(0))
    trainer = Trainer(TASKS["sparse_multiclass"])
    kept = {}
    state, history = trainer.fit(state, x, y, FitConfig(epochs=4, batch_size=8, validation_split=0.25, validation_mode="shuffled"),
                                 jax.random.key(1), early_stopping=EarlyStopping(patience=4),
                                 on_epoch_end=lambda e, logs, s: kept.setdefault(e, jax.tree.map(np.array, s.model_state)))
    for a, b in zip(jax.tree.leaves(state.model_state), jax.tree.leaves(kept[history.best_epoch])):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_module_without_train_argument_trains():
    x, y = _regression_data()
    state = create_train_state(_NoTrainArg(), optax.sgd(0.05), x, jax.random.key(0))
    trainer = Trainer(TASKS["regression"])
    before = trainer.evaluate(state, x, y)["loss"]
    state, _ = trainer.fit(state, x, y, FitConfig(epochs=5, batch_size=16), jax.random.key(1))
    assert trainer.evaluate(state, x, y)["loss"] < before
    assert trainer.predict(state, x).shape == (60, 1)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _TwoInputs(nn.Module):
    """Images plus tabular features, given as a dict."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        image = nn.Conv(2, (3, 3))(x["image"]).mean(axis=(1, 2))
        return nn.Dense(1)(jnp.concatenate([image, x["table"]], axis=-1))


def _dict_data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = {"image": rng.normal(size=(n, 5, 5, 1)).astype(np.float32), "table": rng.normal(size=(n, 3)).astype(np.float32)}
    y = (x["table"].sum(1) + x["image"].mean(axis=(1, 2, 3))).astype(np.float32)
    return x, y


def test_dict_inputs_fit_evaluate_predict_with_a_validation_split():
    x, y = _dict_data()
    model = _TwoInputs()
    state = create_train_state(model, optax.adam(0.02), x, jax.random.key(0))
    trainer = Trainer(TASKS["regression"], eval_batch_size=16)  # 50 = 3 * 16 + 2: a padded last batch
    state, history = trainer.fit(state, x, y, FitConfig(epochs=3, batch_size=8, validation_split=0.2, validation_mode="shuffled"),
                                 jax.random.key(1))
    assert len(history.values["val_loss"]) == 3
    direct = np.asarray(model.apply({"params": state.params}, x))
    np.testing.assert_allclose(trainer.predict(state, x), direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.evaluate(state, x, y)["loss"], np.mean((direct[:, 0] - y) ** 2), rtol=1e-4)
    assert trainer.predict(state, {k: v[:0] for k, v in x.items()}).shape == (0, 1)


def test_dict_inputs_with_different_row_counts_are_refused():
    x, y = _dict_data()
    state = create_train_state(_TwoInputs(), optax.adam(0.02), x, jax.random.key(0))
    bad = {"image": x["image"], "table": x["table"][:-1]}
    with pytest.raises(ValueError, match="same leading"):
        Trainer(TASKS["regression"]).fit(state, bad, y, FitConfig(epochs=1), jax.random.key(1))
