"""Tests for dlchapter.checkpoint.store: retention, atomicity, corruption, structure checks."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax.training import train_state

from dlchapter.checkpoint.store import CheckpointError, CheckpointStore, CheckpointWarning, CheckpointWriteError

# Orbax leaves tensorstore read coroutines unawaited when a damaged checkpoint fails to
# read; Python reports them at garbage collection. They are expected in these tests.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _MLP(nn.Module):
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden, name="dense_0")(x))
        return nn.Dense(3, name="dense_1")(x)


_MODEL = _MLP()
_TX = optax.adam(1e-2)


def _train_state(seed: int = 0, steps: int = 1) -> train_state.TrainState:
    """A flax TrainState with adam, after `steps` updates so every moment is non-zero."""
    params = _MODEL.init(jax.random.key(seed), jnp.ones((1, 8)))["params"]
    state = train_state.TrainState.create(apply_fn=_MODEL.apply, params=params, tx=_TX)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(steps):
        state = state.apply_gradients(grads=grads)
    return state


def _state(seed: int = 0) -> dict:
    """Arrays pytree as the training loop saves it: TrainState, rng key data, counters."""
    return {
        "train": _train_state(seed),
        "rng": jax.random.key_data(jax.random.key(100 + seed)),
        "epoch_step": jnp.asarray(seed, jnp.int32),
    }


def _simple(value: int) -> dict:
    """A small state whose every leaf depends on `value`; `bits` is stored verbatim (incompressible)."""
    key = jax.random.key(value)
    return {
        "params": {"w": jax.random.normal(key, (64, 64)) + value, "b": jnp.full((64,), float(value))},
        "bits": jax.random.bits(jax.random.fold_in(key, 1), (64, 64), jnp.uint32),
        "step": jnp.asarray(value),
    }


def _save_steps(store: CheckpointStore, steps, metric=None) -> None:
    for step in steps:
        metrics = None if metric is None else {"val_loss": metric(step)}
        assert store.save(step, _simple(step), {"epoch": step}, metrics=metrics)


def _largest_state_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir: Path) -> None:
    target = _largest_state_file(step_dir)
    with open(target, "r+b") as fh:
        fh.truncate(target.stat().st_size // 2)


def _overwrite(step_dir: Path) -> None:
    """Bit rot that tensorstore cannot see: flips stored bytes of `bits` where they lie in a file."""
    step = int(step_dir.name)
    raw = np.asarray(_simple(step)["bits"]).tobytes()[4096:4160]
    for target in (p for p in (step_dir / "state").rglob("*") if p.is_file()):
        data = target.read_bytes()
        if raw in data:
            target.write_bytes(data.replace(raw, bytes(b ^ 0x55 for b in raw)))
            return
    raise AssertionError(f"the bytes of bits in {step_dir} were not found verbatim in any file")


def _delete_meta(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").unlink()


def _delete_ocdbt_manifest(step_dir: Path) -> None:
    (step_dir / "state" / "manifest.ocdbt").unlink()


def _edit_meta(step_dir: Path) -> None:
    """Valid JSON with another value: an edited epoch (caught by the meta checksum in the manifest)."""
    (step_dir / "meta" / "metadata").write_text('{"epoch": 1}')


def _junk_meta(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").write_text("not json {")


def _junk_metrics(step_dir: Path) -> None:
    """Orbax's own metrics file (read when the directory is opened)."""
    (step_dir / "metrics" / "metrics").write_text("junk")


def _metrics_not_numbers(step_dir: Path) -> None:
    (step_dir / "metrics" / "metrics").write_text('{"val_loss": "x"}')


def _meta_array(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").write_text("[1, 2]")


def _drop_meta_checksum(step_dir: Path) -> None:
    """An edit that also removes the metadata's checksum from the manifest."""
    manifest = json.loads((step_dir / "manifest" / "metadata").read_text())
    del manifest["meta_sha256"]
    (step_dir / "manifest" / "metadata").write_text(json.dumps(manifest))
    _edit_meta(step_dir)


DAMAGE = {
    "truncate": _truncate,
    "drop_meta_checksum": _drop_meta_checksum,
    "overwrite": _overwrite,
    "delete_meta": _delete_meta,
    "delete_ocdbt_manifest": _delete_ocdbt_manifest,
    "edit_meta": _edit_meta,
    "junk_meta": _junk_meta,
    "meta_array": _meta_array,
}
METRICS_DAMAGE = {"junk_metrics": _junk_metrics, "metrics_not_numbers": _metrics_not_numbers}


# ---------------------------------------------------------------- round trip
def test_round_trip_is_bitwise_and_restores_types(tmp_path):
    saved = _state(seed=1)
    template = _state(seed=2)  # different values: the result must come from disk
    assert not np.array_equal(saved["train"].params["dense_0"]["kernel"], template["train"].params["dense_0"]["kernel"])
    with CheckpointStore(tmp_path / "run") as store:
        store.save(7, saved, {"epoch": 3, "history": {"loss": [1.5, 0.5]}})
        restored, meta, step = store.restore(template)
    assert step == 7 and meta == {"epoch": 3, "history": {"loss": [1.5, 0.5]}}
    chex.assert_trees_all_equal(restored, saved)

    def kinds(tree):
        return jax.tree.leaves(jax.tree.map(lambda x: (type(x), getattr(x, "dtype", None)), tree))

    assert kinds(restored) == kinds(saved)  # same leaf types (int step stays int) and dtypes
    chex.assert_trees_all_equal_structs(restored, saved)
    adam_state = restored["train"].opt_state[0]
    assert isinstance(adam_state, optax.ScaleByAdamState)
    assert restored["train"].tx is template["train"].tx
    assert restored["rng"].dtype == jnp.uint32


def test_typed_prng_key_is_stored_as_key_data_and_rewrapped(tmp_path):
    key = jax.random.split(jax.random.key(3), 4)
    with CheckpointStore(tmp_path / "run") as store:
        store.save(1, {"rng": key, "w": jnp.ones(3)})
        restored, _, _ = store.restore({"rng": jax.random.split(jax.random.key(9), 4), "w": jnp.zeros(3)})
        raw, _, _ = store.restore(None)
        with pytest.raises(CheckpointError, match=r"rng: checkpoint has key<fry>\[4\], the run expects uint32\[4,2\]"):
            store.restore({"rng": jax.random.key_data(key), "w": jnp.zeros(3)})
    for tree in (restored, raw):
        assert jax.dtypes.issubdtype(tree["rng"].dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(jax.random.key_data(tree["rng"]), jax.random.key_data(key))
        np.testing.assert_array_equal(jax.random.normal(tree["rng"][2], (5,)), jax.random.normal(key[2], (5,)))
    # On disk the key is plain uint32 key data.
    on_disk = ocp.StandardCheckpointer().metadata(tmp_path / "run" / "1" / "state").item_metadata
    assert on_disk["rng"].dtype == np.uint32 and tuple(on_disk["rng"].shape) == (4, 2)


def test_abstract_template_and_python_scalar_leaves(tmp_path):
    saved = {"w": jnp.arange(6.0).reshape(2, 3), "count": jnp.asarray(5, jnp.int32)}
    with CheckpointStore(tmp_path / "run") as store:
        store.save(1, saved)
        abstract = {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32), "count": 0}
        restored, _, _ = store.restore(abstract)
        raw, _, _ = store.restore(None)
    np.testing.assert_array_equal(restored["w"], saved["w"])
    assert int(restored["count"]) == 5
    chex.assert_trees_all_equal(raw, saved)


# ----------------------------------------------------------------- retention
@pytest.mark.parametrize("mode", ["min", "max"])
def test_keeps_exactly_last_k_and_the_best(tmp_path, mode):
    losses = [4.0, 2.5, 6.0, 0.5, 9.0, 3.0, 5.0, 7.0, 3.5, 4.5, 6.5, 5.5]
    values = dict(enumerate(losses, start=1))  # the best (step 4 or 5) is not among the last 3
    best = (min if mode == "min" else max)(values, key=values.get)
    assert best not in (10, 11, 12)
    with CheckpointStore(tmp_path / "run", keep_last=3, best_metric="val_loss", best_mode=mode) as store:
        _save_steps(store, range(1, 13), metric=values.get)
        assert store.all_steps() == sorted({10, 11, 12, best})
        assert store.best_step() == best
        assert sorted(int(p.name) for p in store.directory.iterdir() if p.name.isdigit()) == store.all_steps()
    reopened = CheckpointStore(tmp_path / "run", keep_last=3, best_metric="val_loss", best_mode=mode)
    assert reopened.all_steps() == sorted({10, 11, 12, best}) and reopened.best_step() == best
    # A new best replaces the old one; the old best, now outside the last 3, goes.
    reopened.save(13, _simple(13), metrics={"val_loss": -100.0 if mode == "min" else 100.0})
    assert reopened.all_steps() == [11, 12, 13] and reopened.best_step() == 13
    reopened.close()


def test_without_best_metric_keeps_last_k_and_nan_metric_ranks_worst(tmp_path):
    with CheckpointStore(tmp_path / "a", keep_last=2) as store:
        _save_steps(store, range(1, 6), metric=lambda s: 0.0)
        assert store.all_steps() == [4, 5] and store.best_step() is None
    with CheckpointStore(tmp_path / "b", keep_last=1, best_metric="val_loss") as store:
        _save_steps(store, [1, 2, 3], metric=lambda s: {1: 0.5, 2: float("nan"), 3: 0.9}[s])
        assert store.best_step() == 1 and store.all_steps() == [1, 3]
    # Reopened with another monitored metric: old checkpoints lacking it rank worst.
    with CheckpointStore(tmp_path / "b", keep_last=1, best_metric="accuracy", best_mode="max") as store:
        store.save(4, _simple(4), metrics={"accuracy": 0.1})
        assert store.best_step() == 4 and store.all_steps() == [4]


def test_save_every_force_and_increasing_steps(tmp_path):
    with CheckpointStore(tmp_path / "run", save_every=5) as store:
        assert store.save(1, _simple(1))  # the first save of a fresh directory always happens
        assert not store.save(2, _simple(2))
        assert store.save(5, _simple(5))
        assert store.save(7, _simple(7), force=True)
        assert store.all_steps() == [1, 5, 7]
        with pytest.raises(CheckpointError, match=r"cannot save step 6 .*holds step 7"):
            store.save(6, _simple(6), force=True)


# ----------------------------------------------------------------- atomicity
def test_old_steps_are_deleted_only_after_the_new_one_is_committed(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import deleter  # orbax's own step deleter (0.12.8)

    directory = tmp_path / "run"
    seen = []
    original = deleter.StandardCheckpointDeleter.delete

    def checked_delete(self, step):
        newest = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
        reader = CheckpointStore(directory, read_only=True)
        restored, _, got = reader.restore(_simple(0), step=newest)
        chex.assert_trees_all_equal(restored, _simple(newest))
        seen.append((step, newest))
        return original(self, step)

    monkeypatch.setattr(deleter.StandardCheckpointDeleter, "delete", checked_delete)
    with CheckpointStore(directory, keep_last=2) as store:
        _save_steps(store, range(1, 6))
        assert store.all_steps() == [4, 5]
    assert seen == [(1, 3), (2, 4), (3, 5)]


def test_crash_before_commit_leaves_previous_checkpoints_intact(tmp_path, monkeypatch):
    """Every item of step 3 is written to orbax's tmp directory, then the commit (rename) fails."""
    directory = tmp_path / "run"
    store = CheckpointStore(directory, keep_last=2)
    _save_steps(store, [1, 2])
    atomic_rename = ocp.path.atomicity.AtomicRenameTemporaryPath
    original = atomic_rename.finalize

    async def crash_before_step_commit(self, *args, **kwargs):
        if self.get_final().name.isdigit():
            raise OSError("host died before the commit (simulated)")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(atomic_rename, "finalize", crash_before_step_commit)
    with pytest.raises(OSError, match="host died"):
        store.save(3, _simple(3))
    monkeypatch.undo()
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2", "3.orbax-checkpoint-tmp"]
    assert (directory / "3.orbax-checkpoint-tmp" / "state").is_dir()  # written, never committed
    reopened = CheckpointStore(directory, keep_last=2)  # cleans orbax's tmp leftovers before saving
    assert reopened.all_steps() == [1, 2]
    for step in (1, 2):
        restored, _, _ = reopened.restore(_simple(0), step=step)
        chex.assert_trees_all_equal(restored, _simple(step))
    assert reopened.save(3, _simple(3)) and reopened.all_steps() == [2, 3]
    assert sorted(p.name for p in directory.iterdir()) == ["2", "3"]
    reopened.close()


def test_async_save_round_trip_and_retention(tmp_path):
    with CheckpointStore(tmp_path / "run", keep_last=2, async_save=True) as store:
        _save_steps(store, range(1, 5))
        store.wait()
        assert store.all_steps() == [3, 4]
        restored, meta, step = store.restore(_simple(0))
    assert step == 4 and meta == {"epoch": 4}
    chex.assert_trees_all_equal(restored, _simple(4))


# ---------------------------------------------------------------- corruption
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_falls_back_to_previous_and_is_moved_aside(tmp_path, capfd, damage):
    directory = tmp_path / "run"
    store = CheckpointStore(directory, keep_last=3)
    _save_steps(store, [1, 2, 3])
    DAMAGE[damage](directory / "3")
    with pytest.warns(CheckpointWarning) as record:
        restored, meta, step = store.restore(_simple(0))
    assert step == 2 and meta == {"epoch": 2}
    chex.assert_trees_all_equal(restored, _simple(2))
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "\n" not in messages[0], messages  # one line per step set aside
    assert "step 3" in messages[0] and "damaged" in messages[0] and str(directory) in messages[0], messages
    assert f"moved to {directory / 'corrupt' / '3'}" in messages[0] and "resuming from step 2" in messages[0]
    assert (directory / "corrupt" / "3").is_dir() and not (directory / "3").exists()
    assert store.all_steps() == [1, 2]
    assert store.save(3, _simple(3))  # training can resume and save past the damaged step
    _truncate(directory / "3")
    with pytest.warns(CheckpointWarning):
        assert store.restore(_simple(0))[2] == 2
    assert (directory / "corrupt" / "3.1").is_dir()  # an earlier quarantined step 3 is kept
    assert capfd.readouterr().out == ""  # the library never prints
    store.close()


@pytest.mark.parametrize("damage", sorted(METRICS_DAMAGE))
def test_damaged_orbax_metrics_file_is_set_aside(tmp_path, damage):
    """Orbax reads every step's metrics when it opens a directory: junk there used to be a traceback."""
    directory = tmp_path / "run"
    with CheckpointStore(directory, best_metric="val_loss") as store:
        _save_steps(store, [1, 2, 3], metric=lambda s: 1.0 / s)
    METRICS_DAMAGE[damage](directory / "3")
    store = CheckpointStore(directory, best_metric="val_loss")
    with pytest.warns(CheckpointWarning, match=r"step 3 .* is damaged \(its orbax metrics file is unreadable"):
        restored, meta, step = store.restore(_simple(0))
    assert step == 2 and meta == {"epoch": 2}
    chex.assert_trees_all_equal(restored, _simple(2))
    assert (directory / "corrupt" / "3").is_dir() and store.all_steps() == [1, 2]
    store.close()


def test_meta_schema_check_sets_a_step_aside_and_accept_refuses_without_moving(tmp_path):
    directory = tmp_path / "run"
    store = CheckpointStore(directory)
    _save_steps(store, [1, 2])

    def schema(meta):
        if meta["epoch"] > 1:
            raise ValueError(f"epoch {meta['epoch']} is too large")

    with pytest.warns(CheckpointWarning, match=r"step 2 .*bad metadata: epoch 2 is too large"):
        assert store.restore(_simple(0), validate_meta=schema, quarantine=False)[2] == 1
    assert store.all_steps() == [1, 2]

    def refuse(meta, step):
        raise CheckpointError(f"step {step} belongs to another run")

    _delete_meta(directory / "2")  # step 2 is damaged; step 1 is the one offered to `accept`
    before = sorted(p.relative_to(directory) for p in directory.rglob("*"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is reported as set aside: the refusal comes first
        with pytest.raises(CheckpointError, match="step 1 belongs to another run"):
            store.restore(_simple(0), accept=refuse)
    assert sorted(p.relative_to(directory) for p in directory.rglob("*")) == before  # nothing moved
    store.close()


def test_overwritten_data_is_silent_without_checksums(tmp_path):
    """Why the manifest holds checksums: tensorstore reads overwritten data back as if valid."""
    directory = tmp_path / "run"
    with CheckpointStore(directory, checksums=False) as store:
        _save_steps(store, [1, 2])
        _overwrite(directory / "2")
        restored, _, step = store.restore(_simple(0))
    assert step == 2
    assert not np.array_equal(restored["bits"], _simple(2)["bits"])
    np.testing.assert_array_equal(restored["params"]["w"], _simple(2)["params"]["w"])


def test_read_only_store_falls_back_but_moves_nothing(tmp_path):
    directory = tmp_path / "run"
    with CheckpointStore(directory) as store:
        _save_steps(store, [1, 2])
    _truncate(directory / "2")
    reader = CheckpointStore(directory, read_only=True)
    with pytest.warns(CheckpointWarning, match="step 2 .* is damaged"):
        _, _, step = reader.restore(_simple(0))
    assert step == 1 and reader.all_steps() == [1, 2] and (directory / "2").is_dir()


def test_every_checkpoint_damaged_raises_and_keeps_them(tmp_path):
    directory = tmp_path / "run"
    store = CheckpointStore(directory)
    _save_steps(store, [1, 2])
    _truncate(directory / "1")
    _delete_meta(directory / "2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no step is set aside: one error names them all
        with pytest.raises(CheckpointError) as info:
            store.restore(_simple(0))
    message = str(info.value)
    assert str(directory) in message and "step 2:" in message and "step 1:" in message and "\n" not in message
    assert store.all_steps() == [1, 2] and not (directory / "corrupt").exists()
    store.close()


def test_explicit_step_errors_name_the_step(tmp_path):
    directory = tmp_path / "run"
    with CheckpointStore(directory) as store:
        _save_steps(store, [1, 2])
        _overwrite(directory / "2")
        with pytest.raises(CheckpointError, match=r"run/2 is damaged: bits: the data differs"):
            store.restore(_simple(0), step=2)
        with pytest.raises(CheckpointError, match=r"no checkpoint for step 9 .*kept steps: \[1, 2\]"):
            store.restore(_simple(0), step=9)
        restored, _, _ = store.restore(_simple(0), step=1)
    chex.assert_trees_all_equal(restored, _simple(1))
    with CheckpointStore(tmp_path / "empty") as empty, pytest.raises(CheckpointError, match="no checkpoints in"):
        empty.restore(_simple(0))


# ----------------------------------------------------------- structure checks
def _with_kernel(state: dict, kernel) -> dict:
    params = {**state["params"], "dense_1": {"kernel": kernel, "bias": jnp.zeros(200)}}
    return {**state, "params": params}


@pytest.mark.parametrize(
    "template_kernel, expected",
    [
        (
            jnp.zeros((100, 200)),
            "params/dense_1/kernel: checkpoint has float32[200,200], the run expects float32[100,200]",
        ),
        (
            jnp.zeros((200, 200), jnp.bfloat16),
            "params/dense_1/kernel: checkpoint has float32[200,200], the run expects bfloat16[200,200]",
        ),
    ],
)
def test_template_mismatch_names_the_parameter(tmp_path, template_kernel, expected):
    saved = _with_kernel(_simple(1), jnp.ones((200, 200)))
    with CheckpointStore(tmp_path / "run") as store:
        store.save(1, saved)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # a user error, not damage
            with pytest.raises(CheckpointError) as info:
                store.restore(_with_kernel(_simple(0), template_kernel))
        assert expected in str(info.value) and str(tmp_path / "run" / "1") in str(info.value)
        assert store.all_steps() == [1]


def test_missing_and_extra_parameters_are_named(tmp_path):
    saved = _simple(1)
    with CheckpointStore(tmp_path / "run") as store:
        store.save(1, saved)
        extra = {**saved, "params": {**saved["params"], "gamma": jnp.ones(4)}}
        with pytest.raises(CheckpointError, match=r"params/gamma: the run expects float32\[4\], the checkpoint has no"):
            store.restore(extra)
        missing = {**saved, "params": {"w": saved["params"]["w"]}}
        with pytest.raises(CheckpointError, match=r"params/b: checkpoint has float32\[64\], the run has no such"):
            store.restore(missing)


# ----------------------------------------------------------------- hygiene
def _looks_pickled(path: Path) -> bool:
    head = path.read_bytes()[:2]
    return path.suffix == ".pkl" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def test_checkpoints_contain_no_pickle(tmp_path):
    probe = tmp_path / "probe.bin"
    probe.write_bytes(pickle.dumps({"a": 1}))
    assert _looks_pickled(probe)  # the detector works
    directory = tmp_path / "run"
    with CheckpointStore(directory, best_metric="val_loss") as store:
        store.save(1, _state(seed=1), {"epoch": 1}, metrics={"val_loss": 1.0})
        store.save(2, {**_state(seed=2), "key": jax.random.key(0)}, {"epoch": 2}, metrics={"val_loss": 0.5})
    files = [Path(root) / name for root, _, names in os.walk(directory) for name in names]
    assert len(files) > 10
    assert [f for f in files if _looks_pickled(f)] == []


def test_input_validation(tmp_path):
    with CheckpointStore(tmp_path / "run", best_metric="val_loss") as store:
        with pytest.raises(TypeError, match="meta must be JSON-serializable"):
            store.save(1, _simple(1), {"array": np.ones(2)})
        with pytest.raises(ValueError, match="lack the monitored metric 'val_loss'"):
            store.save(1, _simple(1), metrics={"loss": 1.0})
        assert store.all_steps() == []
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointStore(tmp_path / "x", keep_last=0)
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointStore(tmp_path / "missing", read_only=True)
    reader = CheckpointStore(tmp_path / "run", read_only=True)
    with pytest.raises(CheckpointError, match="read-only"):
        reader.save(5, _simple(5))


# ------------------------------------------------------------ write failures
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_os_write_failure_is_one_line_naming_the_directory(tmp_path, monkeypatch, code):
    directory = tmp_path / "run"
    store = CheckpointStore(directory)
    assert store.save(1, _simple(1))
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}

    def failing_save(*args, **kwargs):  # as orbax reports it: a ValueError wrapping tensorstore's os error code
        raise ValueError(f"OUT_OF_RANGE: Error writing bits/0.0 in OCDBT database: Failed [os_error_code='{code}']")

    monkeypatch.setattr(store._manager, "save", failing_save)
    with pytest.raises(CheckpointWriteError) as info:
        store.save(2, _simple(2))
    message = str(info.value)
    assert "\n" not in message and str(directory) in message and os.strerror(code) in message and "step 2" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained orbax traceback
    monkeypatch.setattr(store._manager, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(code, os.strerror(code))))
    with pytest.raises(CheckpointWriteError, match=os.strerror(code)):
        store.save(2, _simple(2))
    assert {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()} == before  # step 1 untouched


def test_a_bug_in_the_writer_is_not_disguised_as_a_disk_error(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path / "run")
    monkeypatch.setattr(store._manager, "save", lambda *a, **k: (_ for _ in ()).throw(KeyError("not an OS error")))
    with pytest.raises(KeyError):
        store.save(1, _simple(1))


_FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from dlchapter.checkpoint.store import CheckpointStore, CheckpointWriteError
from tests.test_checkpoint import _simple
store = CheckpointStore(sys.argv[1])
store.save(1, _simple(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # every larger file write now fails with EFBIG
try:
    store.save(2, _simple(2))
except CheckpointWriteError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
"""


def test_asyncio_logs_of_failed_orbax_write_tasks_are_dropped_and_others_kept(caplog):
    """The other fragments of a failed save fail too; asyncio logs each when the GC finds its task (timing-dependent:
    under load the test below saw 12 such lines). Only those orbax/tensorstore tasks are silenced."""
    from dlchapter.checkpoint.checkpoint_errors import install_quiet_unraisable_hook

    install_quiet_unraisable_hook()
    install_quiet_unraisable_hook()  # idempotent: one filter
    asyncio_log = logging.getLogger("asyncio")
    unretrieved = "Task exception was never retrieved\nfuture: <Task finished coro=<{}() defined at {}:1>>"
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio_log.error(unretrieved.format("write_fragment", "/x/orbax/checkpoint/_src/serialization.py"))
        asyncio_log.error(unretrieved.format("mine", "/x/my_code.py"))
        asyncio_log.error(
            "Task was destroyed but it is pending!\ntask: <Task pending coro=<async_serialize_from_host.<locals>."
            "write_fragment() running at /x/orbax/checkpoint/_src/serialization/serialization.py:190>>"
        )
        asyncio_log.error(  # as CI saw it (a tensorstore future, its exception naming orbax's folder)
            "Future exception was never retrieved\nfuture: <Future finished exception=ValueError('OUT_OF_RANGE: "
            'Error writing "step/0" in OCDBT database at local file "/tmp/run/2.orbax-checkpoint-tmp/state/\')>'
        )
        asyncio_log.error("Future exception was never retrieved\nfuture: <Future finished exception=ValueError('x')>")
        asyncio_log.error("some other asyncio error in orbax")
    assert [record.getMessage()[:40] for record in caplog.records] == [
        unretrieved.format("mine", "/x/my_code.py")[:40],
        "Future exception was never retrieved\nfut",
        "some other asyncio error in orbax",
    ]
    assert "mine()" in caplog.records[0].getMessage()
    assert sum(f.__name__ == "_keep_unless_orbax_task_log" for f in asyncio_log.filters if callable(f)) == 1


_UNAWAITED = """
import gc, sys
from dlchapter.checkpoint.checkpoint_errors import install_quiet_unraisable_hook
install_quiet_unraisable_hook()

async def async_serialize_from_host():
    async def write_fragment():
        pass
    return write_fragment()

class ArrayHandler:
    def _background_serialize(self):
        async def _serialize_batch():
            pass
        return _serialize_batch()

async def mine():
    pass

orbax_file = {}
exec(compile(
    "class Store:\\n    async def _get_array_metadatas(self):\\n        pass\\n",
    "/x/orbax/checkpoint/_src/metadata/array_metadata_store.py", "exec"), orbax_file)

left = [async_serialize_from_host(), ArrayHandler()._background_serialize(), mine(),
        orbax_file["Store"]()._get_array_metadatas()]
del left
gc.collect()
"""


def test_unawaited_orbax_serialization_coroutines_are_quiet_and_others_still_warn():
    """CI saw `coroutine 'async_serialize_from_host.<locals>.write_fragment' was never awaited` after a failed
    write and `coroutine 'Store._get_array_metadatas' ...` after a damaged read: Python's own warning for real
    coroutines with orbax's names or defined in orbax's files is dropped; the user's is kept."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _UNAWAITED], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "was never awaited" in line]
    assert len(warned) == 1 and "coroutine 'mine' was never awaited" in warned[0], proc.stderr


def test_a_real_failed_write_ends_in_one_line_on_stderr(tmp_path):
    """A real write failure (a file-size limit, like a full disk to tensorstore): one line, no orbax traceback."""
    directory = tmp_path / "run"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT, str(directory)], cwd=root, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: cannot write checkpoint step 2 in") and str(directory) in lines[0]
    assert "File too large (EFBIG)" in lines[0]
