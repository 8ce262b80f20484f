"""save_model / restore_model: a trained state and its model's collections come back exactly."""

import jax
import numpy as np
import optax
import pytest
from flax.training import train_state as flax_train_state

from dlchapter.checkpoint.model_io import restore_model, save_model
from dlchapter.checkpoint.store import CheckpointError, CheckpointStore
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from dlchapter.models.dense import MLP
from tests.test_contract import _BatchNormCNN, _images


def _trained(tmp_path):
    x, y = _images()
    model = _BatchNormCNN()
    state = create_train_state(model, optax.adam(0.01), x, jax.random.key(0))
    trainer = Trainer(TASKS["sparse_multiclass"])
    state, _ = trainer.fit(state, x, y, FitConfig(epochs=2, batch_size=8), jax.random.key(1))
    return x, y, model, trainer, state


def test_saved_state_with_batch_stats_restores_exactly(tmp_path):
    x, y, model, trainer, state = _trained(tmp_path)
    save_model(tmp_path / "model", state)
    fresh = create_train_state(model, optax.adam(0.01), x, jax.random.key(5))
    restored = restore_model(tmp_path / "model", like=fresh)
    for a, b in zip(
        jax.tree.leaves((state.params, state.model_state, state.opt_state, state.step)),
        jax.tree.leaves((restored.params, restored.model_state, restored.opt_state, restored.step)),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert restored.model_state["batch_stats"]  # the collection is there, not just params
    np.testing.assert_array_equal(trainer.predict(restored, x), trainer.predict(state, x))
    assert trainer.evaluate(restored, x, y) == trainer.evaluate(state, x, y)


def test_save_model_refuses_an_existing_directory_and_leaves_it_unchanged(tmp_path):
    x, _, _, _, state = _trained(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(tmp_path / "model", state)
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["notes.txt"]


def test_restore_into_a_model_without_batch_norm_names_the_difference(tmp_path):
    x, _, _, _, state = _trained(tmp_path)
    save_model(tmp_path / "model", state)
    other = create_train_state(MLP((4,), 3), optax.adam(0.01), x.reshape(len(x), -1), jax.random.key(0))
    with pytest.raises(CheckpointError, match="does not fit"):
        restore_model(tmp_path / "model", like=other)


def test_a_params_only_checkpoint_of_flax_train_state_still_restores(tmp_path):
    """Checkpoints written before TrainState had `model_state` hold no such entry; they load into the new state."""
    x = np.zeros((4, 3), np.float32)
    new = create_train_state(MLP((4,), 1), optax.adam(0.01), x, jax.random.key(0))
    old = flax_train_state.TrainState.create(apply_fn=new.apply_fn, params=new.params, tx=optax.adam(0.01))
    with CheckpointStore(tmp_path / "old") as store:
        store.save(0, old, {"format": "dlchapter.model/1"})
    restored = restore_model(tmp_path / "old", like=new)
    assert restored.model_state == {} and restored.apply_fn is new.apply_fn
    for a, b in zip(jax.tree.leaves(old.params), jax.tree.leaves(restored.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
