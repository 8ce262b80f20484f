"""Mixed precision: bf16 computes in bfloat16, keeps float32 parameters, and trains as well as fp32."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState
from sklearn.datasets import load_digits

from dlchapter.engine import losses, precision
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state, train_step
from dlchapter.models.conv import ChapterCNN, FunctionalCNN
from dlchapter.models.dense import MLP
from dlchapter.models.recurrent import RecurrentNet

ACCURACY_MARGIN = 0.03
"""bf16's test accuracy on the digits task is within this of fp32's (absolute)."""


def _models_and_data() -> dict[str, tuple]:
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(16, 20, 20, 1)).astype(np.float32)
    series = rng.normal(size=(16, 7, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=16).astype(np.int32)
    return {
        "mlp": (MLP(widths=(32, 16), out_features=3, dropout=0.1, head="softmax"), series.reshape(16, -1)),
        "cnn_compact": (ChapterCNN(features=(4, 8, 8), num_classes=3), images),
        "cnn_functional": (FunctionalCNN(num_classes=3), images[:4]),
        **{
            f"rnn_{cell}": (RecurrentNet(cell=cell, hidden=8, out_features=3), series)
            for cell in ("simple_rnn", "gru", "lstm")
        },
    } | {"labels": labels}


CASES = _models_and_data()
MODELS = [name for name in CASES if name != "labels"]


@functools.cache
def _params(name: str) -> dict:
    """Model `name`'s initial parameters, the initialisation jitted (one compile instead of one per op)."""
    model, x = CASES[name]
    return jax.jit(lambda key: model.init({"params": key}, jnp.asarray(x[:1]), train=False)["params"])(
        jax.random.key(0)
    )


def _state(name: str, tx: optax.GradientTransformation) -> TrainState:
    return TrainState.create(apply_fn=CASES[name][0].apply, params=_params(name), tx=tx)


def _step(name: str, policy: str):
    """The train step of model `name` under `policy`, its state, a batch and the lowered program text."""
    model, x = CASES[name]
    y = CASES["labels"][: x.shape[0]]
    state = _state(name, optax.adam(1e-3))
    model, state = precision.apply_policy(model, state, policy)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "weight": jnp.ones(x.shape[0])}
    step = jax.jit(
        functools.partial(
            train_step,
            loss_fn=losses.get_loss("sparse_categorical_crossentropy"),
            metrics=metrics_lib.get_metrics(("accuracy",)),
        )
    )
    return step, state, batch, step.lower(state, batch, jax.random.key(1)).as_text()


def test_policies_and_unknown_names() -> None:
    assert precision.get_policy("bf16").compute_dtype == jnp.bfloat16 and precision.get_policy("bf16").is_mixed
    assert not precision.get_policy("fp32").is_mixed
    with pytest.raises(ValueError, match="fp16"):
        precision.get_policy("fp16")
    apply = lambda variables, x: x  # noqa: E731
    assert precision.policy_apply(apply, "fp32") is apply
    once = precision.policy_apply(apply, "bf16")
    assert precision.policy_apply(once, "bf16") is once  # wrapping twice casts once
    out = once({"params": {"w": jnp.ones(2)}}, jnp.ones(2, jnp.float32))
    assert out.dtype == jnp.float32
    cast = precision.cast_floating({"f": jnp.ones(2), "i": jnp.ones(2, jnp.int32)}, jnp.bfloat16)
    assert cast["f"].dtype == jnp.bfloat16 and cast["i"].dtype == jnp.int32


@pytest.mark.parametrize("name", MODELS)
def test_bf16_step_computes_in_bf16_and_keeps_fp32_state(name: str) -> None:
    step, state, batch, text = _step(name, "bf16")
    _, _, _, text32 = _step(name, "fp32")
    assert "bf16" in text and "bf16" not in text32  # the program really changes precision
    new_state, sums = step(state, batch, jax.random.key(1))
    chex.assert_tree_all_finite((new_state.params, sums))
    outputs = jax.eval_shape(
        lambda p, x: new_state.apply_fn({"params": p}, x, train=False), new_state.params, batch["x"]
    )
    precision.assert_policy(new_state.params, outputs, "bf16")
    precision.assert_policy(new_state.opt_state, sums["loss"], "bf16")  # optimizer moments and the loss stay float32
    assert jax.tree.structure(new_state.params) == jax.tree.structure(state.params)


def test_bf16_outputs_are_close_to_fp32_but_not_equal() -> None:
    model, x = CASES["cnn_compact"]
    state = _state("cnn_compact", optax.sgd(0.1))
    _, bf16_state = precision.apply_policy(model, state, "bf16")
    out32 = jax.jit(state.apply_fn)({"params": state.params}, x)
    out16 = jax.jit(bf16_state.apply_fn)({"params": state.params}, x)
    assert out16.dtype == jnp.float32
    assert not np.array_equal(np.asarray(out32), np.asarray(out16))
    np.testing.assert_allclose(out16, out32, atol=0.05 * float(jnp.max(jnp.abs(out32))))


def test_assert_policy_refuses_wrong_dtypes() -> None:
    with pytest.raises(TypeError, match="parameter dtypes"):
        precision.assert_policy({"w": jnp.ones(2, jnp.bfloat16)}, jnp.ones(2), "bf16")
    with pytest.raises(TypeError, match="output dtypes"):
        precision.assert_policy({"w": jnp.ones(2)}, jnp.ones(2, jnp.bfloat16), "bf16")


def _digits_accuracy(policy: str) -> tuple[float, str]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1300], order[1300:]
    model = MLP(widths=(64, 32), out_features=10, head="softmax")
    state = create_train_state(model, optax.adam(3e-3), x[train], jax.random.key(0))
    model, state = precision.apply_policy(model, state, policy)
    trainer = Trainer(TASKS["sparse_multiclass"])
    state, history = trainer.fit(
        state, x[train], y[train], FitConfig(epochs=15, batch_size=64, seed=0, progress=False), jax.random.key(1)
    )
    logs = trainer.evaluate(state, x[test], y[test])
    return logs["accuracy"], str(jax.tree.leaves(state.params)[0].dtype)


def test_bf16_trains_digits_to_fp32_accuracy() -> None:
    """sklearn's 8x8 digits (shipped with scikit-learn): 1,300 training and 497 test images."""
    acc32, dtype32 = _digits_accuracy("fp32")
    acc16, dtype16 = _digits_accuracy("bf16")
    print(f"digits test accuracy: fp32 {acc32:.4f}, bf16 {acc16:.4f}")
    assert acc32 > 0.9, acc32
    assert abs(acc16 - acc32) <= ACCURACY_MARGIN, (acc16, acc32)
    assert dtype32 == dtype16 == "float32"
