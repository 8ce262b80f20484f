"""The training engine: compile-once, determinism, early stopping, padding, NaN guard."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.loop import batch_plan
from dlchapter.engine.losses import mse
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import (
    TASKS,
    FitConfig,
    Trainer,
    TrainingDiverged,
    create_train_state,
    split_validation,
    train_step,
)
from dlchapter.models.dense import MLP
from dlchapter.reporting.summary import count_params, summarize


def _regression_data(n=203, features=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x @ rng.normal(size=features) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y


ADAM = OptimizerConfig("adam", learning_rate=0.01)


def _state(x, seed=0, optimizer=ADAM, widths=(16, 8), dropout=0.0):
    model = MLP(widths, 1, dropout=dropout)
    return create_train_state(model, make_optimizer(optimizer), x, jax.random.key(seed))


@pytest.mark.parametrize("steps_per_call", [None, 1, 3])
def test_train_program_compiles_once_with_partial_last_batch(steps_per_call):
    x, y = _regression_data(n=203)  # 203 = 6 * 32 + 11: the last batch is partial
    trainer = Trainer(TASKS["regression"], steps_per_call=steps_per_call)
    _, history = trainer.fit(
        _state(x),
        x,
        y,
        FitConfig(epochs=4, batch_size=32, validation_split=0.2, validation_mode="shuffled"),
        jax.random.key(1),
    )
    assert history.epochs_run == 4
    assert trainer.traces["train"] == 1
    assert trainer.traces["eval"] == 1


def test_train_step_traces_once_over_padded_batches():
    x, y = _regression_data(n=70)
    state = _state(x)
    step = jax.jit(chex.assert_max_traces(lambda s, b, k: train_step(s, b, k, loss_fn=mse, metrics=()), n=1))
    idx, weight = batch_plan(np.arange(70), 32)
    for row, w in zip(idx, weight):
        state, _ = step(state, {"x": x[row], "y": y[row], "weight": w}, jax.random.key(0))
    assert int(state.step) == 3


def test_padded_last_batch_gives_the_small_batchs_gradient():
    x, y = _regression_data(n=11)
    state = _state(x)
    idx, weight = batch_plan(np.arange(11), 16)
    padded, _ = train_step(
        state, {"x": x[idx[0]], "y": y[idx[0]], "weight": weight[0]}, jax.random.key(0), loss_fn=mse, metrics=()
    )
    small, _ = train_step(
        state, {"x": x, "y": y, "weight": np.ones(11, np.float32)}, jax.random.key(0), loss_fn=mse, metrics=()
    )
    chex.assert_trees_all_close(padded.params, small.params, rtol=1e-5, atol=1e-7)


def test_batch_plan_covers_every_row_once():
    order = np.random.default_rng(0).permutation(50)
    idx, weight = batch_plan(order, 8, multiple=3)
    assert idx.shape == (9, 8)  # 7 batches rounded up to a multiple of 3
    np.testing.assert_array_equal(np.sort(idx[weight > 0]), np.arange(50))
    assert weight.sum() == 50


def _fit(seed, steps_per_call=None, dropout=0.2):
    x, y = _regression_data()
    trainer = Trainer(TASKS["regression"], steps_per_call=steps_per_call)
    state = _state(x, seed, dropout=dropout)
    return trainer.fit(state, x, y, FitConfig(epochs=3, batch_size=32, seed=seed), jax.random.key(seed))


def test_same_seed_same_history_different_seed_different():
    state_a, hist_a = _fit(0)
    state_b, hist_b = _fit(0)
    _, hist_c = _fit(1)
    assert hist_a.values["loss"] == hist_b.values["loss"]
    chex.assert_trees_all_equal(state_a.params, state_b.params)
    assert hist_a.values["loss"] != hist_c.values["loss"]


def test_fused_steps_equal_one_step_per_call():
    state_scan, hist_scan = _fit(0, steps_per_call=None)
    state_step, hist_step = _fit(0, steps_per_call=1)
    state_three, _ = _fit(0, steps_per_call=4)
    chex.assert_trees_all_close(state_scan.params, state_step.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state_scan.params, state_three.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hist_scan.values["loss"], hist_step.values["loss"], rtol=1e-5)


def test_early_stopping_restores_the_best_epochs_weights():
    x, y = _regression_data(n=120)
    x_val, y_val = _regression_data(n=60, seed=5)
    y_val = -y_val  # a validation set the model gets worse on: the best epoch is early
    saved = {}

    def remember(epoch, logs, state):
        saved[epoch] = jax.tree.map(np.array, state.params)

    trainer = Trainer(TASKS["regression"])
    state, history = trainer.fit(
        _state(x),
        x,
        y,
        FitConfig(epochs=30, batch_size=16),
        jax.random.key(0),
        validation_data=(x_val, y_val),
        early_stopping=EarlyStopping("val_loss", patience=3),
        on_epoch_end=remember,
    )
    best = history.best_epoch
    assert history.stopped_early and history.epochs_run == best + 3
    assert history.values["val_loss"][best - 1] == min(history.values["val_loss"])
    chex.assert_trees_all_equal(jax.tree.map(np.array, state.params), saved[best])
    last = max(saved)
    assert not np.array_equal(saved[last]["output"]["kernel"], saved[best]["output"]["kernel"])


def test_early_stopping_restores_best_even_when_epochs_run_out():
    x, y = _regression_data(n=120)
    trainer = Trainer(TASKS["regression"])
    saved = {}
    state, history = trainer.fit(
        _state(x),
        x,
        y,
        FitConfig(epochs=4, batch_size=16),
        jax.random.key(0),
        validation_data=_regression_data(60, seed=9)[:1] + (-_regression_data(60, seed=9)[1],),
        early_stopping=EarlyStopping("val_loss", patience=100),
        on_epoch_end=lambda e, logs, s: saved.__setitem__(e, jax.tree.map(np.array, s.params)),
    )
    assert not history.stopped_early and history.epochs_run == 4
    chex.assert_trees_all_equal(jax.tree.map(np.array, state.params), saved[history.best_epoch])


def test_keras_patience_semantics():
    tracker = EarlyStopping("val_accuracy", patience=2, min_delta=0.01).start()
    params = {"w": jnp.zeros(1)}
    # 0.605 and 0.609 do not beat 0.6 by more than min_delta: two waits, then stop
    stops = [tracker.update(e, {"val_accuracy": v}, params) for e, v in enumerate([0.5, 0.6, 0.605, 0.609], 1)]
    assert stops == [False, False, False, True]
    assert tracker.best_epoch == 2 and tracker.best == 0.6 and tracker.rule.maximize
    loss_tracker = EarlyStopping("val_loss", patience=1).start()
    assert [loss_tracker.update(e, {"val_loss": v}, params) for e, v in enumerate([1.0, 0.5, 0.7], 1)] == [
        False,
        False,
        True,
    ]
    with pytest.raises(KeyError, match="val_loss"):
        EarlyStopping("val_loss").start().update(1, {"loss": 1.0}, params)


def test_evaluate_and_predict_count_every_row_once():
    x, y = _regression_data(n=77)
    state = _state(x)
    trainer = Trainer(TASKS["regression"], eval_batch_size=16)  # 77 = 4 * 16 + 13
    logs = trainer.evaluate(state, x, y)
    pred = trainer.predict(state, x)
    assert pred.shape == (77, 1)
    direct = np.asarray(state.apply_fn({"params": state.params}, x))
    np.testing.assert_allclose(pred, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["loss"], np.mean((direct[:, 0] - y) ** 2), rtol=1e-4)
    np.testing.assert_allclose(logs["mae"], np.mean(np.abs(direct[:, 0] - y)), rtol=1e-4)


class _SqrtNet(nn.Module):
    """Outputs NaN for a row whose first feature is negative (finite inputs, a NaN made by the model)."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x) * jnp.sqrt(x[:, :1])


def test_nan_loss_stops_training_with_the_step_number():
    x, y = _regression_data()
    x = np.abs(x)
    x[50, 0] = -1.0  # finite (the inputs pass the checks); row 50 is in some batch of the first epoch
    trainer = Trainer(TASKS["regression"])
    state = create_train_state(_SqrtNet(), make_optimizer(ADAM), x, jax.random.key(0))
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(epoch 1\)"):
        trainer.fit(state, x, y, FitConfig(epochs=2, batch_size=32), jax.random.key(0))


def test_diverging_learning_rate_is_caught():
    x, y = _regression_data()
    trainer = Trainer(TASKS["regression"], steps_per_call=1)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        trainer.fit(
            _state(x, optimizer=OptimizerConfig("sgd", learning_rate=1e6)),
            x,
            y * 1e3,
            FitConfig(epochs=5, batch_size=32),
            jax.random.key(0),
        )


def test_stratified_validation_split_keeps_every_class_of_sorted_labels():
    x = np.arange(150, dtype=np.float32)[:, None]
    y = np.repeat(np.arange(3), 50)  # sorted like iris
    config = FitConfig(validation_split=0.2, validation_mode="stratified", seed=3)
    _, _, (_, y_val) = split_validation(x, y, config, classification=True)
    assert sorted(np.bincount(y_val).tolist()) == [10, 10, 10]
    _, _, (_, y_last) = split_validation(
        x, y, FitConfig(validation_split=0.2, validation_mode="last"), classification=True
    )
    assert set(y_last.tolist()) == {2}  # Keras's last-20% takes one class only


def test_dropout_is_random_in_training_and_off_in_evaluation():
    x, _ = _regression_data(n=8)
    model = MLP((64,), 1, dropout=0.5)
    params = model.init(jax.random.key(0), x)["params"]
    eval_a = model.apply({"params": params}, x)
    eval_b = model.apply({"params": params}, x)
    train_a = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})
    chex.assert_trees_all_equal(eval_a, eval_b)
    assert not np.allclose(train_a, train_b)


def test_chapter_parameter_counts():
    diamonds = MLP((200, 200, 200, 200), 1)
    california = MLP((100, 200), 1, dropout=(0.2, 0.0))
    assert count_params(diamonds.init(jax.random.key(0), jnp.zeros((1, 26)))["params"]) == 126_201
    params = california.init(jax.random.key(0), jnp.zeros((1, 8)))["params"]
    assert count_params(params) == 21_301
    rows = summarize(california, params, np.zeros((1, 8), np.float32))
    assert [(r.name, r.output_shape, r.params) for r in rows] == [
        ("dense_0", (None, 100), 900),
        ("dropout_0", (None, 100), 0),
        ("dense_1", (None, 200), 20_200),
        ("output", (None, 1), 201),
    ]


def test_the_jitted_optimizer_init_gives_eager_inits_state_and_unhashable_modules_work():
    """make_optimizer's optimizers carry a jitted `init`: the same optimizer state as optax's eager one; a module
    with a list attribute (unhashable, so its init is not cached) works."""
    x, y = _regression_data()
    tx = make_optimizer(OptimizerConfig("adam", learning_rate=0.01, decay=0.5), steps_per_epoch=4)
    state = create_train_state(MLP((16, 8), 1), tx, x, jax.random.key(3))
    assert state.step == 0 and isinstance(state.step, int)  # as flax's TrainState.create makes it
    with jax.disable_jit():  # optax's init run eagerly, operation by operation
        chex.assert_trees_all_equal(state.opt_state, tx.init(state.params))
    listed = create_train_state(MLP([16, 8], 1), tx, x, jax.random.key(3))
    chex.assert_trees_all_equal(listed.params, state.params)
    fit = FitConfig(epochs=2, batch_size=64, seed=0, progress=False)
    _, history = Trainer(TASKS["regression"]).fit(listed, x, y, fit, jax.random.key(1))
    assert len(history.values["loss"]) == 2 and np.isfinite(history.values["loss"]).all()


def test_refits_with_an_equal_optimizer_config_trace_nothing_new():
    """make_optimizer gives one object per config, so a second fit_model (a k-fold's next fold, a rerun in a
    notebook) reuses the Trainer's programs and the initialisations instead of tracing and compiling them again."""
    from dlchapter.engine import fitting

    x, y = _regression_data()
    trainer = Trainer(TASKS["regression"])
    fit = FitConfig(epochs=2, batch_size=64, seed=0, progress=False)
    model = MLP((16, 8), 1)  # one module object: its `apply` is part of the programs' static arguments
    first = fitting.fit_model(model, OptimizerConfig("adam", 0.01), x, y, fit, jax.random.key(0), trainer)
    traces = dict(trainer.traces)
    again = fitting.fit_model(model, OptimizerConfig("adam", 0.01), x, y, fit, jax.random.key(0), trainer)
    assert dict(trainer.traces) == traces and again.state.tx is first.state.tx
    chex.assert_trees_all_equal(again.state.params, first.state.params)


def test_a_users_optimizer_is_initialised_eagerly_as_flax_does():
    """Only make_optimizer's optimizers bring a jitted init: a user's may hold non-arrays in its state or read
    values on the host, and a fresh optax object per call must not cost a compile per call."""
    import typing

    import optax

    class Tagged(typing.NamedTuple):
        tag: str
        scale: float

    def keep(updates, state, params=None):
        return updates, state

    x, _ = _regression_data()
    tagged = create_train_state(
        MLP((4,), 1), optax.GradientTransformation(lambda p: Tagged("hello", 0.5), keep), x, jax.random.key(0)
    )
    assert tagged.opt_state == Tagged("hello", 0.5) and isinstance(tagged.opt_state.scale, float)

    def host_norm(params):  # a float() of the weights: not traceable
        return {"norm": np.float32(sum(float(np.abs(np.asarray(a)).sum()) for a in jax.tree.leaves(params)))}

    state = create_train_state(MLP((4,), 1), optax.GradientTransformation(host_norm, keep), x, jax.random.key(0))
    expected = sum(float(np.abs(np.asarray(a)).sum()) for a in jax.tree.leaves(state.params))
    assert float(state.opt_state["norm"]) == pytest.approx(expected)


def test_modules_equal_but_for_their_field_types_get_their_own_initialisation():
    class Scale(nn.Module):  # Scale(2) == Scale(2.0) and both hash alike; their parameters' dtypes differ
        factor: object

        @nn.compact
        def __call__(self, x):
            return x * self.param("factor", lambda key: jnp.asarray(self.factor))

    x, _ = _regression_data()
    tx = make_optimizer(OptimizerConfig("sgd", 0.1))
    assert create_train_state(Scale(2), tx, x, jax.random.key(0)).params["factor"].dtype == jnp.int32
    assert create_train_state(Scale(2.0), tx, x, jax.random.key(0)).params["factor"].dtype == jnp.float32
