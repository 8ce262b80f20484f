"""The Python API's checkpointed `fit` is bound to its data, initial weights and optimizer, not only its FitConfig.

A rerun into the same checkpoint directory with other data of the same shape, another learning rate or optimizer,
or another initialisation is refused before any step (it used to resume silently and join the two histories).
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import dlchapter as dl
from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.checkpoint.run_identity import RunMismatch, data_digest, optimizer_probe, weights_digest


class Small(nn.Module):
    width: int = 8
    activation: str = "relu"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = getattr(nn, self.activation)(nn.Dense(self.width)(x))
        return nn.Dense(1)(nn.Dropout(self.dropout, deterministic=not train)(hidden))


RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 4)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5, 3.0])).astype(np.float32)


def _fit(directory, *, tx=None, model=None, x=X, y=Y, epochs=2, init_seed=0, validation_data=None, task=None, key=1):
    trainer = dl.Trainer(task or dl.TASKS["regression"])
    state = dl.create_train_state(model or Small(), tx or optax.adam(1e-2), x, jax.random.key(init_seed))
    config = dl.FitConfig(epochs=epochs, batch_size=32, progress=False)
    return trainer.fit(
        state,
        x,
        y,
        config,
        jax.random.key(key),
        checkpoint=CheckpointConfig(directory),
        validation_data=validation_data,
    )


def _files(directory):
    return {p: p.stat().st_mtime_ns for p in sorted(directory.rglob("*")) if p.is_file()}


def _clipped(clip):
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(1e-2))


def _cosine(steps):
    return optax.adam(optax.cosine_decay_schedule(1e-2, steps))


@pytest.mark.parametrize(
    ("first", "change", "field"),
    [
        ({}, {"tx": optax.adam(1e-1)}, "optimizer_updates_digest"),
        ({}, {"tx": optax.sgd(1e-2)}, "optimizer_updates_digest"),
        ({}, {"tx": optax.sgd(1e-2, momentum=0.9)}, "optimizer_updates_digest"),
        ({"tx": _clipped(1.0)}, {"tx": _clipped(0.5)}, "optimizer_updates_digest"),  # Adam's first step alone: same
        ({"tx": _cosine(1000)}, {"tx": _cosine(3000)}, "optimizer_updates_digest"),  # a schedule over the total
        ({}, {"x": X[::-1].copy()}, "data.content_digest"),
        ({}, {"y": Y + 1.0}, "data.content_digest"),
        ({"validation_data": (X[:8], Y[:8])}, {"validation_data": (X[:8], Y[:8] + 1.0)}, "data.content_digest"),
        ({}, {"init_seed": 7}, "initial_weights.digest"),
        ({}, {"model": Small(activation="tanh")}, "first_step_digest"),  # same shapes and initial weights
        ({"model": Small(dropout=0.1)}, {"model": Small(dropout=0.5)}, "first_step_digest"),
        ({}, {"task": dl.Task("mae")}, "task.loss"),
        ({}, {"key": 2}, "key_digest"),  # fit's dropout key
    ],
)
def test_a_rerun_with_other_data_optimizer_model_or_key_is_refused(tmp_path, first, change, field):
    directory = tmp_path / "ckpt"
    _, history = _fit(directory, **first)
    assert history.epochs_run == 2
    before = _files(directory)
    with pytest.raises(RunMismatch) as caught:
        _fit(directory, epochs=4, **{**first, **change})
    message = str(caught.value)
    assert field in message and "CheckpointConfig(restart=True)" in message and "--restart" not in message
    if field == "optimizer_updates_digest":  # the same call on an older dlchapter's checkpoint changes this too
        assert "older dlchapter" in message, message
    assert _files(directory) == before  # the refused rerun wrote nothing


def test_the_same_run_with_more_epochs_still_resumes_and_equals_one_longer_run(tmp_path):
    _fit(tmp_path / "a", epochs=2)
    resumed_state, resumed = _fit(tmp_path / "a", epochs=4)
    straight_state, straight = _fit(tmp_path / "b", epochs=4)
    assert resumed.values["loss"] == straight.values["loss"]
    for a, b in zip(jax.tree.leaves(resumed_state.params), jax.tree.leaves(straight_state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_digests_tell_apart_what_changes_training_and_nothing_else():
    assert data_digest(X, Y, None) == data_digest(X.copy(), Y.copy(), None)
    assert data_digest(X, Y, None) != data_digest(X, Y, (X[:2], Y[:2]))
    assert data_digest({"a": X}, Y, None) != data_digest({"b": X}, Y, None)  # the input's names count
    assert data_digest(X, Y, None) != data_digest(X.astype(np.float64), Y, None)
    params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    assert weights_digest(params) == weights_digest({k: v.copy() for k, v in params.items()})
    assert weights_digest(params) != weights_digest({**params, "w": params["w"] * 2})
    probes = {
        optimizer_probe(tx, params)
        for tx in (
            optax.adam(1e-3),
            optax.adam(1e-2),
            optax.sgd(1e-3),
            optax.sgd(1e-3, momentum=0.9),
            optax.adamw(1e-3),
        )
    }
    assert len(probes) == 5
    assert optimizer_probe(optax.adam(1e-3), params) == optimizer_probe(optax.adam(1e-3), params)


def test_a_data_digest_is_named_only_when_nothing_else_explains_the_change():
    from dlchapter.checkpoint.run_identity import DATA_DIGEST_FIELD, differences

    old = {"fit": {"seed": 1}, "data": {"content_digest": "a"}, DATA_DIGEST_FIELD: "c"}
    assert differences(old, {**old, "fit": {"seed": 2}, "data": {"content_digest": "b"}}) == ["fit.seed: 1 -> 2"]
    assert differences(old, {**old, "data": {"content_digest": "b"}}) == ['data.content_digest: "a" -> "b"']
    assert differences(old, {**old, DATA_DIGEST_FIELD: "d"}) == [f'{DATA_DIGEST_FIELD}: "c" -> "d"']
