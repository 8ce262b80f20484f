"""The optimizer factory: Keras defaults, the chapter's decay, L2 and the injected learning rate."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlchapter.engine.losses import l2_penalty
from dlchapter.engine.optim import (
    DEFAULT_LEARNING_RATES,
    OptimizerConfig,
    current_learning_rate,
    inverse_time_decay,
    make_optimizer,
)


def test_keras_default_learning_rates():
    assert DEFAULT_LEARNING_RATES == {"sgd": 0.01, "momentum": 0.01, "rmsprop": 0.001, "adam": 0.001}
    params = {"w": jnp.ones(3)}
    for name, rate in DEFAULT_LEARNING_RATES.items():
        state = make_optimizer(OptimizerConfig(name)).init(params)
        assert float(current_learning_rate(state)) == pytest.approx(rate)


def test_inverse_time_decay_follows_the_chapters_formula():
    schedule = inverse_time_decay(0.2, decay=1.0, steps_per_epoch=5)
    for step in range(40):
        epoch = step // 5
        assert float(schedule(step)) == pytest.approx(0.2 / (1 + 1.0 * epoch))
    assert float(schedule(4)) != float(schedule(5))  # the rate changes at the epoch boundary


def test_decayed_rate_is_what_the_step_uses():
    tx = make_optimizer(OptimizerConfig("sgd", learning_rate=0.1, decay=0.5), steps_per_epoch=2)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    grads = {"w": jnp.ones(1)}
    for step in range(6):
        updates, state = tx.update(grads, state, params)
        expected_rate = 0.1 / (1 + 0.5 * (step // 2))
        np.testing.assert_allclose(updates["w"], -expected_rate, rtol=1e-6)
        assert float(current_learning_rate(state)) == pytest.approx(expected_rate)


def test_l2_in_the_optimizer_equals_keras_penalty_in_the_loss():
    params = {"dense_0": {"kernel": jnp.array([[0.5, -1.0], [2.0, 0.3]]), "bias": jnp.array([1.0, -2.0])}}
    x = jnp.array([[1.0, 2.0], [0.5, -1.0]])

    def data_loss(p):
        return jnp.mean((x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"]) ** 2)

    l2, rate = 0.05, 0.1
    tx = make_optimizer(OptimizerConfig("sgd", learning_rate=rate, l2=l2))
    updates, _ = tx.update(jax.grad(data_loss)(params), tx.init(params), params)
    by_optimizer = optax.apply_updates(params, updates)
    full_grad = jax.grad(lambda p: data_loss(p) + l2_penalty(p, l2))(params)
    by_hand = jax.tree.map(lambda p, g: p - rate * g, params, full_grad)
    chex.assert_trees_all_close(by_optimizer, by_hand, rtol=1e-6)
    plain = make_optimizer(OptimizerConfig("sgd", learning_rate=rate))
    without = optax.apply_updates(params, plain.update(jax.grad(data_loss)(params), plain.init(params), params)[0])
    assert not np.allclose(without["dense_0"]["kernel"], by_hand["dense_0"]["kernel"])
    np.testing.assert_allclose(without["dense_0"]["bias"], by_hand["dense_0"]["bias"])  # biases are not regularized


def test_rmsprop_matches_keras_update_rule():
    g = jnp.array([0.5, -2.0])
    params = {"w": jnp.zeros(2)}
    tx = make_optimizer(OptimizerConfig("rmsprop"))
    state = tx.init(params)
    v = np.zeros(2)
    for _ in range(3):
        updates, state = tx.update({"w": g}, state, params)
        v = 0.9 * v + 0.1 * np.asarray(g) ** 2
        np.testing.assert_allclose(updates["w"], -0.001 * np.asarray(g) / (np.sqrt(v) + 1e-7), rtol=1e-5)


def test_clipping_bounds_the_update():
    tx = make_optimizer(OptimizerConfig("sgd", learning_rate=1.0, clip_global_norm=1.0))
    params = {"w": jnp.zeros(2)}
    updates, _ = tx.update({"w": jnp.array([300.0, 400.0])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="adam"):
        make_optimizer(OptimizerConfig("adagrad"))


@pytest.mark.parametrize("name", sorted(DEFAULT_LEARNING_RATES))
def test_no_l2_term_without_l2_and_the_same_updates_as_a_zero_term(name):
    """Without L2 the chain has no L2 term (it costs a pass over every kernel); run eagerly, the updates are bit
    for bit those of a zero L2 term, which ManyModels keeps as a per-model hyperparameter (in a compiled step XLA
    may fuse the two differently and round Adam's moments one ulp apart: benchmarks/NOTES.md, sixth session)."""
    params = {"dense": {"kernel": jnp.array([[0.5, -1.0], [2.0, 0.3]]), "bias": jnp.array([1.0, -2.0])}}
    grads = jax.tree.map(lambda p: 0.3 * p - 0.1, params)
    without = make_optimizer(OptimizerConfig(name, clip_global_norm=1.0))
    zero_term = make_optimizer(OptimizerConfig(name, clip_global_norm=1.0), l2_hyperparameter=True)
    state, state0 = without.init(params), zero_term.init(params)
    assert set(state.hyperparams) == {"learning_rate"}
    assert set(state0.hyperparams) == {"learning_rate", "l2"} and float(state0.hyperparams["l2"]) == 0.0
    for _ in range(3):
        updates, state = without.update(grads, state, params)
        updates0, state0 = zero_term.update(grads, state0, params)
        chex.assert_trees_all_equal(updates, updates0)
    with pytest.raises(TypeError, match="l2"):  # an L2 set on a state without the term is refused, not dropped
        without.update(grads, state._replace(hyperparams={**state.hyperparams, "l2": jnp.float32(0.1)}), params)


def test_l2_hyperparameter_set_in_the_state_equals_the_configured_l2():
    params = {"dense": {"kernel": jnp.array([[0.5, -1.0], [2.0, 0.3]]), "bias": jnp.array([1.0, -2.0])}}
    grads = jax.tree.map(lambda p: 0.3 * p - 0.1, params)
    configured = make_optimizer(OptimizerConfig("adam", l2=0.05))
    swept = make_optimizer(OptimizerConfig("adam"), l2_hyperparameter=True)
    state = swept.init(params)
    state = state._replace(hyperparams={**state.hyperparams, "l2": jnp.float32(0.05)})
    chex.assert_trees_all_close(
        configured.update(grads, configured.init(params), params)[0], swept.update(grads, state, params)[0], rtol=1e-7
    )


def test_equal_configs_give_one_optimizer_object_whatever_the_numbers_types():
    config = OptimizerConfig("adam", 0.01, decay=0.5)
    assert make_optimizer(config, 3) is make_optimizer(OptimizerConfig("adam", 0.01, decay=0.5), 3)
    assert make_optimizer(config, 3) is not make_optimizer(config, 4)  # another epoch length: another schedule
    assert make_optimizer(config, 3) is not make_optimizer(config, 3, l2_hyperparameter=True)
    params = {"w": jnp.zeros(2)}
    for rate in (jnp.float32(0.5), np.float32(0.5), 0.5):  # numbers of any kind are stored as Python floats
        config = OptimizerConfig("sgd", learning_rate=rate)
        assert type(config.learning_rate) is float
        tx = make_optimizer(config)
        state = tx.init(params)
        assert float(current_learning_rate(state)) == 0.5  # a numpy scalar used to be dropped from the state
        updates, _ = tx.update({"w": jnp.ones(2)}, state, params)
        np.testing.assert_allclose(updates["w"], [-0.5, -0.5], rtol=1e-6)
    assert make_optimizer(OptimizerConfig("sgd", 1)) is make_optimizer(OptimizerConfig("sgd", 1.0))
    assert current_learning_rate(make_optimizer(OptimizerConfig("sgd", 1)).init(params)).dtype == jnp.float32


def test_an_optax_schedule_is_a_learning_rate_but_not_beside_the_chapters_decay():
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    tx = make_optimizer(OptimizerConfig("sgd", learning_rate=schedule))
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    for step in range(3):
        updates, state = tx.update({"w": jnp.ones(1)}, state, params)
        np.testing.assert_allclose(updates["w"], [-float(schedule(step))], rtol=1e-6)
    with pytest.raises(ValueError, match="schedule cannot be combined with the chapter's decay"):
        OptimizerConfig("sgd", learning_rate=schedule, decay=0.5)


@pytest.mark.parametrize(
    "field,value",
    [
        ("learning_rate", 0.0),
        ("learning_rate", -0.1),
        ("learning_rate", float("nan")),
        ("learning_rate", "fast"),
        ("learning_rate", "0.1"),  # a string is not a number, even one float() reads
        ("decay", "0.5"),
        ("decay", -0.5),
        ("decay", float("inf")),
        ("l2", -0.5),
        ("l2", float("nan")),
        ("clip_global_norm", 0.0),
        ("clip_global_norm", float("inf")),
        ("momentum", -0.1),
        ("momentum", 1.5),
    ],
)
def test_a_config_out_of_range_is_refused_naming_the_field(field, value):
    """The command line refuses these before anything runs; the Python API now does too (an L2 of NaN used to
    train to NaN, a negative one to anti-regularise, silently)."""
    with pytest.raises(ValueError, match=f"OptimizerConfig {field}="):
        OptimizerConfig("sgd", **{field: value})


def test_the_edges_of_the_ranges_are_accepted():
    OptimizerConfig("sgd", learning_rate=None, decay=0.0, l2=0.0, clip_global_norm=None, momentum=0.0)
    OptimizerConfig("momentum", learning_rate=1e-6, momentum=1.0, clip_global_norm=1e-3)
    OptimizerConfig("adam", learning_rate=jnp.float32(0.01), l2=jnp.float32(0.0))  # numbers of any kind
