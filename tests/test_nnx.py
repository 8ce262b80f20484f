"""A flax.nnx module through the engine: split at the boundary, trained by Trainer.fit, evaluated in eval mode,
checkpointed and saved like a linen module. The reference forward pass is nnx's own (`nnx.merge` by hand of the
graphdef taken from the user's module object, `.eval()`), not the engine's adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dlchapter.checkpoint.model_io import restore_model, save_model
from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state, train_step
from dlchapter.engine.train_state import NNX_STATE, nnx_model


class _Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(5, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.dropout(nnx.relu(self.norm(self.hidden(x)))))


def _host(leaf):
    """A leaf as a NumPy array (typed PRNG keys as their key data)."""
    return np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf)


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=(n, 5)).astype(np.float32)  # mean 2, sd 3: BatchNorm's statistics must move
    y = (x @ np.array([0.5, -1.0, 0.25, 0.0, 1.0], np.float32) + 0.1).astype(np.float32)
    return x, y


def _fit(model, epochs=6, **kwargs):
    x, y = _data()
    state = create_train_state(model, optax.adam(1e-2), x, jax.random.key(0))
    trainer = Trainer(TASKS["regression"])
    state, history = trainer.fit(
        state, x, y, FitConfig(epochs=epochs, batch_size=32, progress=False), jax.random.key(1), **kwargs
    )
    return x, y, trainer, state, history


def test_nnx_mlp_trains_its_batch_stats_move_and_predict_is_nnx_eval_forward():
    model = _Net(nnx.Rngs(0))
    graphdef, params0, rest0 = nnx.split(model, nnx.Param, ...)
    initial = jax.tree.map(_host, (params0, rest0))
    x, _, trainer, state, history = _fit(model)

    assert history.values["loss"][-1] < 0.5 * history.values["loss"][0]
    mean = np.asarray(state.model_state[NNX_STATE]["norm"]["mean"].get_value())
    var = np.asarray(state.model_state[NNX_STATE]["norm"]["var"].get_value())
    assert np.all(np.abs(mean) > 1e-3) and not np.allclose(var, 1.0)  # started at 0 and 1
    for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(nnx.split(model, nnx.Param, ...)[1:])):
        np.testing.assert_array_equal(a, _host(b))  # the user's module object was not changed

    by_hand = nnx.merge(graphdef, state.params, state.model_state[NNX_STATE])
    by_hand.eval()
    expected = np.asarray(by_hand(jnp.asarray(x)))
    got = trainer.predict(state, x)
    assert got.shape == (256, 1)
    # within 1e-6, absolute or relative: outputs reach 17, where one float32 ulp is 1.9e-6 (jit vs eager order)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nnx_model(state)(jnp.asarray(x))), expected, atol=1e-6, rtol=1e-6)
    # eager nnx.merge shares the State's Variables, and a train-mode call writes BatchNorm's: merge copies
    train_mode = nnx.merge(graphdef, *jax.tree.map(jnp.copy, (state.params, state.model_state[NNX_STATE])))
    train_mode.train()
    assert np.abs(np.asarray(train_mode(jnp.asarray(x))) - expected).max() > 1e-3  # eval mode differs: checked
    mse = float(np.mean((expected[:, 0] - _data()[1]) ** 2))
    np.testing.assert_allclose(trainer.evaluate(state, x, _data()[1])["loss"], mse, rtol=1e-5)


def test_dropout_draws_from_the_steps_key():
    x, y = _data(64)
    state = create_train_state(_Net(nnx.Rngs(0)), optax.sgd(0.0), x, jax.random.key(0))
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "weight": jnp.ones(64)}
    step = jax.jit(
        lambda s, k: train_step(s, batch, k, loss_fn=lambda o, t, w: jnp.mean((o[:, 0] - t) ** 2), metrics=())
    )
    loss = lambda k: float(step(state, jax.random.key(k))[1]["loss"]["sum"])  # noqa: E731
    assert loss(1) == loss(1) and loss(1) != loss(2)
    other_seed = create_train_state(_Net(nnx.Rngs(7)), optax.sgd(0.0), x, jax.random.key(0))
    with_other_streams = other_seed.replace(params=state.params)  # same weights, the module built with other keys
    assert float(step(with_other_streams, jax.random.key(1))[1]["loss"]["sum"]) == loss(1)


def test_nnx_state_saves_restores_and_resumes_exactly(tmp_path):
    x, y, trainer, state, _ = _fit(_Net(nnx.Rngs(0)), epochs=3)
    save_model(tmp_path / "model", state)
    restored = restore_model(
        tmp_path / "model", like=create_train_state(_Net(nnx.Rngs(5)), optax.adam(1e-2), x, jax.random.key(0))
    )
    np.testing.assert_array_equal(trainer.predict(restored, x), trainer.predict(state, x))
    fresh = create_train_state(_Net(nnx.Rngs(5)), optax.adam(1e-2), x, jax.random.key(0))
    with pytest.raises(AssertionError):  # the comparison can fail: a fresh model predicts otherwise
        np.testing.assert_array_equal(trainer.predict(fresh, x), trainer.predict(state, x))

    checkpoint = CheckpointConfig(tmp_path / "run")
    _fit(_Net(nnx.Rngs(0)), epochs=2, checkpoint=checkpoint)
    *_, resumed, history = _fit(_Net(nnx.Rngs(0)), epochs=3, checkpoint=checkpoint)
    assert history.epochs_run == 3
    for a, b in zip(
        jax.tree.leaves((state.params, state.model_state)), jax.tree.leaves((resumed.params, resumed.model_state))
    ):
        np.testing.assert_array_equal(_host(a), _host(b))


def test_an_nnx_module_with_only_params_has_no_model_state_and_trains():
    x, y = _data(64)
    state = create_train_state(nnx.Linear(5, 1, rngs=nnx.Rngs(0)), optax.adam(5e-2), x, jax.random.key(0))
    assert state.model_state == {}
    trainer = Trainer(TASKS["regression"])
    state, history = trainer.fit(state, x, y, FitConfig(epochs=20, batch_size=16, progress=False), jax.random.key(1))
    assert history.values["loss"][-1] < 0.1 * history.values["loss"][0]
    kernel, bias = (np.asarray(state.params[name].get_value()) for name in ("kernel", "bias"))
    np.testing.assert_allclose(trainer.predict(state, x), x @ kernel + bias, atol=1e-5, rtol=1e-5)  # numpy's forward


def test_nnx_model_of_a_linen_state_is_a_type_error():
    from dlchapter.models.dense import MLP

    x, _ = _data(8)
    with pytest.raises(TypeError, match="not made from a flax.nnx.Module"):
        nnx_model(create_train_state(MLP((4,), 1), optax.adam(1e-2), x, jax.random.key(0)))


def test_fitting_leaves_the_users_module_usable_with_a_validation_split():
    """fit donates the state's buffers; they were the module's own arrays, so its nnx.Param arrays were deleted
    ("Array has been deleted") after a fit with a validation split. create_train_state now copies them."""
    model = _Net(nnx.Rngs(0))
    x, y = _data()
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    state = create_train_state(model, optax.adam(1e-2), x, jax.random.key(0))
    config = FitConfig(epochs=2, batch_size=32, validation_split=0.2, progress=False)
    state, _ = Trainer(TASKS["regression"]).fit(state, x, y, config, jax.random.key(1))
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))  # raised RuntimeError before the fix
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    model.eval()
    assert np.isfinite(np.asarray(model(jnp.asarray(x)))).all()  # the untrained module still runs
