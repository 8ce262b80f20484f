"""The last partial batch's weight-0 slots (`loop.batch_plan`): rows of the same epoch's training order.

They change nothing for a model without mutable collections (its losses and gradients weight them 0), and
BatchNorm's batch statistics, which read every row of a batch, see only that model's (that fold's) training rows.
"""

import math

import chex
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from dlchapter.engine import many_models, parallel, train, trainer_programs
from dlchapter.engine.loop import batch_plan, epoch_order
from dlchapter.engine.many_models import ManyModels
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.sweep_data import ModelSpec, SweepData, stack_plans
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from dlchapter.models.dense import MLP


def _row0_plan(order, batch_size, multiple=1):
    """The plan before the wrap-around: every weight-0 slot held row 0 (of the whole array)."""
    n_steps = math.ceil(max(1, math.ceil(order.size / batch_size)) / multiple) * multiple
    idx, weight = np.zeros(n_steps * batch_size, np.int32), np.zeros(n_steps * batch_size, np.float32)
    idx[: order.size], weight[: order.size] = order, 1.0
    return idx.reshape(n_steps, batch_size), weight.reshape(n_steps, batch_size)


def _use_plan(monkeypatch, plan):
    for module in (train, trainer_programs, many_models):
        monkeypatch.setattr(module, "batch_plan", plan)


def test_padding_slots_wrap_around_to_the_orders_first_rows():
    order = np.random.default_rng(0).permutation(np.arange(100, 150))  # 50 rows that are not 0..49
    idx, weight = batch_plan(order, 8, multiple=3)
    assert idx.shape == weight.shape == (9, 8) and idx.dtype == np.int32  # 7 batches rounded up to 9
    np.testing.assert_array_equal(idx.ravel()[:50], order)
    np.testing.assert_array_equal(idx.ravel()[50:], order[np.arange(22) % 50])  # 6 wrapped + 2 whole batches
    np.testing.assert_array_equal(weight.ravel(), np.r_[np.ones(50), np.zeros(22)])
    small, w = batch_plan(np.array([7, 3, 5]), 8)  # fewer rows than a batch (a small fold): wraps again
    np.testing.assert_array_equal(small, [[7, 3, 5, 7, 3, 5, 7, 3]])
    np.testing.assert_array_equal(w, [[1, 1, 1, 0, 0, 0, 0, 0]])
    empty, w = batch_plan(np.array([], np.int32), 4)
    np.testing.assert_array_equal(empty, [[0, 0, 0, 0]])
    assert not w.any()
    idx, weight = stack_plans([batch_plan(np.array([4, 5, 6]), 2), batch_plan(np.array([9]), 2)])
    np.testing.assert_array_equal(idx[1], [[9, 9], [9, 9]])  # a shorter plan's extra step: its own rows
    np.testing.assert_array_equal(weight[1], [[1, 0], [0, 0]])
    padded = parallel.pad_to_multiple({"idx": np.array([[4, 5, 6], [7, 8, 9]])}, 5, axis=1)
    np.testing.assert_array_equal(padded["idx"], [[4, 5, 6, 4, 5], [7, 8, 9, 7, 8]])  # each batch's own rows


@pytest.mark.parametrize("steps_per_call", [None, 3])
def test_an_mlp_trains_bit_for_bit_as_with_row_0_padding(monkeypatch, steps_per_call):
    """Before vs after on an MLP with dropout, 203 rows (6 x 32 + 11), so the last batch has 21 padded slots."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(203, 5)).astype(np.float32)
    x[0] = 50.0  # row 0, the old padding, is far from the wrapped rows: padding that leaked would show
    y = (x @ rng.normal(size=5) + 0.1 * rng.normal(size=203)).astype(np.float32)

    def fit():
        state = create_train_state(MLP((16, 8), 1, dropout=0.2), optax.adam(0.01), x, jax.random.key(0))
        trainer = Trainer(TASKS["regression"], steps_per_call=steps_per_call)
        config = FitConfig(epochs=2, batch_size=32, seed=4, progress=False)
        return trainer.fit(state, x, y, config, jax.random.key(1), validation_data=(x[:45], y[:45]))

    new_state, new_history = fit()
    _use_plan(monkeypatch, _row0_plan)
    old_state, old_history = fit()
    chex.assert_trees_all_equal(new_state.params, old_state.params)
    chex.assert_trees_all_equal(new_state.opt_state, old_state.opt_state)
    for name in ("loss", "mae", "val_loss", "val_mae"):
        assert new_history.values[name] == old_history.values[name], name
    # the comparison can fail: the two plans hold other rows, and rows that are not weighted 0 change the weights
    order = epoch_order(203, 4, 0)
    assert not np.array_equal(batch_plan(order, 32)[0], _row0_plan(order, 32)[0])

    def leaky(order, batch_size, multiple=1):
        idx, weight = batch_plan(order, batch_size, multiple)
        return idx, np.where(np.any(weight > 0, axis=1, keepdims=True), 1.0, 0.0).astype(np.float32)

    _use_plan(monkeypatch, leaky)
    leaked_state, _ = fit()
    assert not np.allclose(jax.tree.leaves(leaked_state.params)[0], jax.tree.leaves(new_state.params)[0])


def test_linear_regression_with_a_partial_last_batch_follows_numpy_sgd():
    """An independent reference: minibatch SGD on the mean squared error of the real rows, in float64 numpy."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x @ [1.0, -2.0, 0.5] + 0.3).astype(np.float32)
    state = create_train_state(nn.Dense(1), optax.sgd(0.1), x, jax.random.key(0))
    w, b = (np.asarray(state.params["kernel"], np.float64), np.asarray(state.params["bias"], np.float64))
    config = FitConfig(epochs=3, batch_size=32, seed=2, progress=False)
    state, history = Trainer(TASKS["regression"]).fit(state, x, y, config, jax.random.key(1))
    losses = []
    for epoch in range(3):
        order, total = epoch_order(40, 2, epoch), 0.0
        for rows in (order[:32], order[32:]):  # Keras's batches: 32, then the 8 real rows alone
            r = x[rows] @ w + b - y[rows, None]
            total += float(np.sum(r**2))
            w, b = w - 0.1 * 2 * x[rows].T @ r / len(rows), b - 0.1 * 2 * r.sum(0) / len(rows)
        losses.append(total / 40)
    np.testing.assert_allclose(state.params["kernel"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.params["bias"], b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.values["loss"], losses, rtol=1e-5)


class _InputNorm(nn.Module):
    """BatchNorm on the inputs with momentum 0: its running statistics are the last training batch's."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(1)(nn.BatchNorm(use_running_average=not train, momentum=0.0)(x))


@pytest.mark.parametrize("shuffle", [False, True])
def test_batchnorm_statistics_of_the_last_batch_are_those_of_its_real_and_wrapped_rows(shuffle):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(40, 2)) + 3).astype(np.float32)
    x[0] = 100.0  # the old padding row
    y = rng.normal(size=40).astype(np.float32)
    state = create_train_state(_InputNorm(), optax.sgd(0.01), x, jax.random.key(0))
    config = FitConfig(epochs=1, batch_size=32, seed=3, shuffle=shuffle, progress=False)
    state, _ = Trainer(TASKS["regression"]).fit(state, x, y, config, jax.random.key(1))
    stats = state.model_state["batch_stats"]["BatchNorm_0"]
    order = epoch_order(40, 3, 0, shuffle)
    last = x[np.r_[order[32:], order[:24]]].astype(np.float64)  # 8 real rows, then the epoch's first 24
    np.testing.assert_allclose(stats["mean"], last.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], last.var(0), rtol=1e-4)
    old = x[np.r_[order[32:], np.zeros(24, int)]].mean(0)  # what row 0 padding gave: far from it
    assert np.all(np.abs(old - stats["mean"]) > 1.0)
    # evaluation and prediction pad too (40 rows in batches of 32), but BatchNorm reads its running averages there
    kernel, bias = (np.asarray(state.params["Dense_0"][k], np.float64) for k in ("kernel", "bias"))
    norm = state.params["BatchNorm_0"]
    scaled = (x - last.mean(0)) / np.sqrt(last.var(0) + 1e-5) * norm["scale"] + norm["bias"]
    trainer = Trainer(TASKS["regression"], eval_batch_size=32)
    np.testing.assert_allclose(trainer.predict(state, x)[:, 0], (scaled @ kernel + bias)[:, 0], rtol=1e-4, atol=1e-4)
    expected = np.mean(((scaled @ kernel + bias)[:, 0] - y) ** 2)
    np.testing.assert_allclose(trainer.evaluate(state, x, y)["loss"], expected, rtol=1e-4)


class _HiddenNorm(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.BatchNorm(use_running_average=not train)(nn.relu(nn.Dense(16)(x)))
        return nn.Dense(3)(h)


def test_kfold_batchnorm_models_each_equal_their_own_trainer_fit(monkeypatch):
    """Row 0 (an outlier) is a validation row of fold 0: fold 0's batches must never hold it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 2)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 0] > 1)).astype(np.int32)
    x[0] = 8.0
    val_mask = np.arange(150)[None] % 3 == np.arange(3)[:, None]  # fold f validates rows f, f + 3, ...
    data = SweepData.from_masks(x, y, ~val_mask, val_mask)  # 100 training rows per fold: last batch 4 of 32
    task, batch, epochs = TASKS["sparse_multiclass"], 32, 3
    engine = ManyModels(_HiddenNorm(), task, epochs=epochs, batch_size=batch)
    specs = [ModelSpec(seed=0, learning_rate=1e-2, fold=f) for f in range(3)]
    result = engine.fit(specs, data)
    references = []
    for f in range(3):
        train_rows, val_rows = np.flatnonzero(~val_mask[f]), np.flatnonzero(val_mask[f])
        init_key, dropout_key = jax.random.split(jax.random.key(0))
        tx = make_optimizer(OptimizerConfig(learning_rate=1e-2), math.ceil(len(train_rows) / batch))
        state = create_train_state(_HiddenNorm(), tx, x[train_rows], init_key)
        config = FitConfig(epochs=epochs, batch_size=batch, seed=0, progress=False)
        state, history = Trainer(task).fit(
            state, x[train_rows], y[train_rows], config, dropout_key, validation_data=(x[val_rows], y[val_rows])
        )
        chex.assert_trees_all_close(result.model_params(f), state.params, rtol=1e-5, atol=1e-6)
        mine = jax.tree.map(lambda a, f=f: a[f], result.model_state)
        chex.assert_trees_all_close(mine, state.model_state, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.history["val_loss"][f], history.values["val_loss"], rtol=1e-5, atol=1e-6)
        references.append(history.values["val_loss"])
    # the comparison can fail: with the old row-0 padding, fold 0 trained its statistics on its validation row
    _use_plan(monkeypatch, _row0_plan)
    old = engine.fit(specs, data)
    assert np.max(np.abs(old.history["val_loss"][0] - references[0])) > 1e-3
