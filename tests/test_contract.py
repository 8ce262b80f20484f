"""The engine's open contract: cached predict, 0 rows, own modules with collections, pytree inputs,
callable losses, CLU-shaped metrics, save/restore."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.fit_hooks import Callback
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, Task, Trainer, create_train_state
from dlchapter.models.dense import MLP


def _regression_data(n=60, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x @ rng.normal(size=features)).astype(np.float32)
    return x, y


def _mlp_state(x):
    tx = make_optimizer(OptimizerConfig("adam", learning_rate=0.01))
    return create_train_state(MLP((8,), 1), tx, x, jax.random.key(0))


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


@pytest.mark.parametrize("validation_split", [0.0, 0.2])
def test_x_and_y_with_different_rows_are_refused_by_fit_and_evaluate(validation_split):
    x, y = _regression_data()
    state = _mlp_state(x)
    trainer = Trainer(TASKS["regression"])
    config = FitConfig(epochs=1, validation_split=validation_split)
    with pytest.raises(ValueError, match="fit: x has 60 rows but y has 40"):  # was an IndexError in the split
        trainer.fit(state, x, y[:40], config, jax.random.key(1))
    with pytest.raises(ValueError, match="validation_data: x has 10 rows but y has 9"):
        trainer.fit(state, x, y, FitConfig(epochs=1), jax.random.key(1), validation_data=(x[:10], y[:9]))
    with pytest.raises(ValueError, match="evaluate: x has 60 rows but y has 10"):  # was a score on 10 rows
        trainer.evaluate(state, x, y[:10])


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
    config = FitConfig(epochs=4, batch_size=8, validation_split=0.25, validation_mode="shuffled")
    state, history = trainer.fit(
        state,
        x,
        y,
        config,
        jax.random.key(1),
        early_stopping=EarlyStopping(patience=4),
        on_epoch_end=lambda e, _, s: kept.setdefault(e, jax.tree.map(np.array, s.model_state)),
    )
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
    config = FitConfig(epochs=3, batch_size=8, validation_split=0.2, validation_mode="shuffled")
    state, history = trainer.fit(state, x, y, config, jax.random.key(1))
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


def _binary_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)


class _SigmoidNet(nn.Module):
    """A Keras-style model that ends in a sigmoid."""

    @nn.compact
    def __call__(self, x):
        return nn.sigmoid(nn.Dense(1)(x))


def test_from_logits_false_trains_a_sigmoid_model_and_accuracy_thresholds_at_half():
    x, y = _binary_data()
    task = Task("binary_crossentropy", ("accuracy",), "sigmoid", from_logits=False)
    state = create_train_state(_SigmoidNet(), optax.adam(0.1), x, jax.random.key(0))
    trainer = Trainer(task)
    state, _ = trainer.fit(state, x, y, FitConfig(epochs=20, batch_size=32), jax.random.key(1))
    p = np.asarray(_SigmoidNet().apply({"params": state.params}, x))[:, 0]
    logs = trainer.evaluate(state, x, y)
    expected = -np.mean(y * np.log(np.clip(p, 1e-7, 1 - 1e-7)) + (1 - y) * np.log(np.clip(1 - p, 1e-7, 1 - 1e-7)))
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(logs["accuracy"], np.mean((p > 0.5) == y), rtol=1e-6)
    assert logs["accuracy"] > 0.9
    np.testing.assert_allclose(trainer.predict(state, x)[:, 0], p, rtol=1e-5)  # no second sigmoid


def test_logits_task_on_probability_outputs_warns_once(caplog):
    x, y = _binary_data()
    state = create_train_state(_SigmoidNet(), optax.adam(0.1), x, jax.random.key(0))
    trainer = Trainer(TASKS["binary"])
    with caplog.at_level("WARNING", logger="dlchapter.engine.train"):
        trainer.fit(state, x, y, FitConfig(epochs=3, batch_size=32), jax.random.key(1))
    assert sum("from_logits=False" in r.getMessage() for r in caplog.records) == 1


def test_logits_model_gives_no_probability_warning(caplog):
    x, y = _binary_data()
    state = create_train_state(_NoTrainArg(), optax.adam(0.1), x * 10, jax.random.key(0))  # a user's logits model
    with caplog.at_level("WARNING", logger="dlchapter.engine.train"):
        Trainer(TASKS["binary"]).fit(state, x, y, FitConfig(epochs=1, batch_size=32), jax.random.key(1))
    assert not any("from_logits" in r.getMessage() for r in caplog.records)


def test_callable_loss_is_used_as_given():
    x, y = _regression_data()
    state = _mlp_state(x)

    def huber(outputs, targets, weights):
        per_row = optax.huber_loss(outputs[:, 0], targets, delta=0.5)
        return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1e-12)

    logs = Trainer(Task(huber, ("mae",))).evaluate(state, x, y)
    r = np.asarray(state.apply_fn({"params": state.params}, x))[:, 0] - y
    expected = np.mean(np.where(np.abs(r) <= 0.5, 0.5 * r**2, 0.5 * (np.abs(r) - 0.25)))
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown loss 'hubr'.*callable"):
        Trainer(Task("hubr"))


@dataclasses.dataclass(frozen=True)
class MaxAbsError:
    """The largest |output - target| over real rows: not a sum, so per-batch values must be merged by max."""

    name: str = "max_abs_error"

    def empty(self):
        return jnp.asarray(-jnp.inf, jnp.float32)

    def update(self, state, outputs, targets, weights):
        err = jnp.abs(outputs[:, 0] - targets)
        return jnp.maximum(state, jnp.max(jnp.where(weights > 0, err, -jnp.inf)))

    def merge(self, a, b):
        return jnp.maximum(a, b)

    def compute(self, state):
        return float(state)


@pytest.mark.parametrize("steps_per_call", [None, 2])
def test_max_metric_is_exact_over_many_batches(steps_per_call):
    x, y = _regression_data(n=77)
    state = _mlp_state(x)
    trainer = Trainer(Task("mse", ("mae", MaxAbsError())), eval_batch_size=10, steps_per_call=steps_per_call)
    logs = trainer.evaluate(state, x, y)  # 8 batches, the last one padded
    err = np.abs(np.asarray(state.apply_fn({"params": state.params}, x))[:, 0] - y)
    np.testing.assert_allclose(logs["max_abs_error"], err.max(), rtol=1e-5)
    np.testing.assert_allclose(logs["mae"], err.mean(), rtol=1e-4)
    seen = []
    trainer.fit(
        state,
        x,
        y,
        FitConfig(epochs=1, batch_size=10, shuffle=False),
        jax.random.key(0),
        on_epoch_end=lambda e, logs, s: seen.append(logs["max_abs_error"]),
    )
    assert np.isfinite(seen[0]) and seen[0] < 3 * err.max()  # a sum of 8 per-batch maxima would be far larger


def test_object_without_the_metric_functions_is_refused():
    with pytest.raises(TypeError, match="empty/update/merge/compute"):
        Trainer(Task("mse", (object(),)))


def test_bad_fit_config_task_and_callbacks_are_refused_with_clear_errors():
    """Each was a ZeroDivisionError, an empty history with no error, a head silently treated as linear,
    metrics read letter by letter, or "'Callback' object is not iterable"."""
    x, y = _regression_data()
    state = _mlp_state(x)
    trainer = Trainer(TASKS["regression"])
    for config, match in (
        (FitConfig(epochs=0), "FitConfig.epochs must be an integer >= 1, got 0"),
        (FitConfig(batch_size=0), "FitConfig.batch_size must be an integer >= 1, got 0"),
    ):
        with pytest.raises(ValueError, match=match):
            trainer.fit(state, x, y, config, jax.random.key(1))
    with pytest.raises(ValueError, match="fit: x has no rows"):
        trainer.fit(state, x[:0], y[:0], FitConfig(), jax.random.key(1))
    with pytest.raises(ValueError, match="Task head must be one of"):
        Task("mse", head="relu")
    with pytest.raises(TypeError, match=r"for one metric write \('mae',\)"):
        Task("mse", "mae")
    with pytest.raises(TypeError, match="Task metrics must be a tuple"):
        Task("mse", 3)
    with pytest.raises(TypeError, match=r"callbacks must be a list of Callback objects; got one Callback: pass \[it\]"):
        trainer.fit(state, x, y, FitConfig(), jax.random.key(1), callbacks=Callback())
