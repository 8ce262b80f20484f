"""Any linen module N-at-once (`dlchapter.engine.many_models`): each vmapped model equals its own `Trainer.fit`.

The reference for every model is the single-model path a user writes: `create_train_state(model,
make_optimizer(...), x, init_key)` and `Trainer.fit(..., FitConfig(seed=seed), dropout_key)` with
`init_key, dropout_key = jax.random.split(jax.random.key(seed))`.
"""

import logging
import os
import signal
from dataclasses import dataclass

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlchapter.checkpoint.resume import TrainingInterrupted
from dlchapter.checkpoint.run_identity import RunMismatch
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.fitting import fit_model
from dlchapter.engine.many_models import ManyModels
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.sweep import ModelSpec, SweepData
from dlchapter.engine.sweep_progress import SweepCheckpoint
from dlchapter.engine.train import FitConfig, Task, Trainer, create_train_state
from dlchapter.models.conv import ChapterCNN
from dlchapter.models.recurrent import RecurrentNet


@dataclass(frozen=True)
class MaxError:
    """A user's non-additive metric: the largest |output - target| (batches merge by max)."""

    name: str = "max_err"

    def empty(self):
        return jnp.asarray(-jnp.inf, jnp.float32)

    def update(self, state, outputs, targets, weights):
        err = jnp.abs(outputs[:, 0] - targets)
        return jnp.maximum(state, jnp.max(jnp.where(weights > 0, err, -jnp.inf)))

    def merge(self, a, b):
        return jnp.maximum(a, b)

    def compute(self, state):
        return float(state)


def huber(outputs, targets, weights):
    """A callable loss: mean Huber loss over real rows."""
    return jnp.sum(optax.huber_loss(outputs[:, 0], targets) * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


class TwoInputNet(nn.Module):
    """A user's module: a dict of two inputs, BatchNorm (batch_stats) and dropout at a fixed rate."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = jnp.concatenate([x["a"], x["b"]], axis=-1)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.Dropout(0.2, deterministic=not train)(nn.relu(nn.Dense(16)(h)))
        return nn.Dense(1)(h)


def _two_inputs(n, seed):
    rng = np.random.default_rng(seed)
    x = {"a": rng.normal(size=(n, 3)).astype(np.float32), "b": rng.normal(1.0, 2.0, size=(n, 2)).astype(np.float32)}
    y = (x["a"].sum(1) - 0.5 * x["b"][:, 0] + 0.3 * rng.normal(size=n)).astype(np.float32)
    return x, y


_SHARED: dict = {}


def _reference(model, task, spec, x, y, validation, *, optimizer, epochs, batch_size, early_stopping=None):
    """`Trainer.fit` of one model. To compile less, runs without decay share one optimizer and one Trainer and
    set the two injected hyperparameters, learning rate and L2, in the optimizer state (what `make_optimizer`
    with those values starts from); with decay the rate is a schedule: its own optimizer."""
    init_key, dropout_key = jax.random.split(jax.random.key(spec.seed))
    steps_per_epoch = -(-len(y) // batch_size)
    key = (optimizer, spec.decay, spec.learning_rate if spec.decay else None, steps_per_epoch, id(task))
    if key not in _SHARED:
        config = OptimizerConfig(optimizer, spec.learning_rate, spec.decay, spec.l2)
        _SHARED[key] = make_optimizer(config, steps_per_epoch, l2_hyperparameter=True), Trainer(task)
    tx, trainer = _SHARED[key]
    state = create_train_state(model, tx, x, init_key)
    hyper = {**state.opt_state.hyperparams, "l2": jnp.asarray(spec.l2, jnp.float32)}
    if not spec.decay:
        hyper["learning_rate"] = jnp.asarray(spec.learning_rate, jnp.float32)
    state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
    fit = FitConfig(epochs=epochs, batch_size=batch_size, seed=spec.seed, progress=False)
    return trainer.fit(state, x, y, fit, dropout_key, validation_data=validation, early_stopping=early_stopping)


def _assert_history(result, i, history, names, tol=1e-5):
    run = history.epochs_run
    assert result.epochs_run[i] == run
    for name in names:
        np.testing.assert_allclose(
            result.history[name][i, :run], history.values[name], rtol=tol, atol=tol, err_msg=name
        )
    assert np.isnan(result.history["loss"][i, run:]).all()


def test_eight_chapter_cnns_in_one_program_equal_eight_trainer_runs():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(56, 18, 18, 1)).astype(np.float32)
    top_brighter = images[:, :9].mean((1, 2, 3)) > images[:, 9:].mean((1, 2, 3))
    labels = top_brighter.astype(np.int32) + (images[:, 0, 0, 0] > 0.7)  # three classes
    (x, y), validation = (images[:40], labels[:40]), (images[40:], labels[40:])
    model, task = (
        ChapterCNN(features=(4, 8, 8), num_classes=3),
        Task("sparse_categorical_crossentropy", ("accuracy",), "softmax"),
    )
    specs = [ModelSpec(seed=s, learning_rate=lr) for s in (0, 1) for lr in (3e-4, 1e-3, 3e-3, 1e-2)]
    engine = ManyModels(model, task, OptimizerConfig("rmsprop"), epochs=2, batch_size=16)
    result = engine.fit(specs, SweepData.holdout(x, y, *validation))
    assert engine.traces == {"init": 1, "epoch": 1}
    assert jax.tree.leaves(result.params)[0].shape[0] == 8
    for i, spec in enumerate(specs):
        state, history = _reference(model, task, spec, x, y, validation, optimizer="rmsprop", epochs=2, batch_size=16)
        chex.assert_trees_all_close(result.model_params(i), state.params, rtol=1e-5, atol=1e-5)
        _assert_history(result, i, history, ("loss", "accuracy", "val_loss", "val_accuracy", "lr"))
    # the comparison can fail: the learning rates really gave different weights
    assert not np.allclose(
        jax.tree.leaves(result.model_params(0))[0], jax.tree.leaves(result.model_params(3))[0], atol=1e-4
    )
    probs = engine.predict(result, validation[0])
    assert probs.shape == (8, 16, 3) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_a_user_module_with_batchnorm_and_dict_inputs_equals_trainer_runs():
    x, y = _two_inputs(72, 0)
    validation = _two_inputs(24, 1)
    task = Task(huber, ("mae", MaxError()))
    specs = [
        ModelSpec(seed=0, learning_rate=1e-2),
        ModelSpec(seed=1, learning_rate=3e-3, l2=1e-3),
        ModelSpec(seed=2, learning_rate=1e-2, decay=0.5),
    ]
    engine = ManyModels(TwoInputNet(), task, OptimizerConfig("adam"), epochs=3, batch_size=16)
    result = engine.fit(specs, SweepData.holdout(x, y, *validation))
    assert set(result.model_state) == {"batch_stats"}
    test = engine.evaluate(result, *validation)
    for i, spec in enumerate(specs):
        state, history = _reference(
            TwoInputNet(), task, spec, x, y, validation, optimizer="adam", epochs=3, batch_size=16
        )
        chex.assert_trees_all_close(result.model_params(i), state.params, rtol=1e-5, atol=1e-5)
        mine = jax.tree.map(lambda a, i=i: a[i], result.model_state)
        chex.assert_trees_all_close(mine, state.model_state, rtol=1e-5, atol=1e-5)
        _assert_history(result, i, history, ("loss", "mae", "max_err", "val_loss", "val_mae", "val_max_err", "lr"))
        np.testing.assert_allclose(test["loss"][i], history.values["val_loss"][-1], rtol=1e-5)
    initial = jax.vmap(lambda k: TwoInputNet().init(k, jax.tree.map(lambda a: a[:1], x))["batch_stats"])
    assert not np.allclose(
        jax.tree.leaves(initial(jnp.stack([jax.random.key(0)] * 3)))[0], jax.tree.leaves(result.model_state)[0]
    )  # training moved the running means


def test_per_model_early_stopping_equals_trainer_with_early_stopping():
    x, y = _two_inputs(64, 2)
    validation = _two_inputs(32, 3)
    rule = EarlyStopping("val_loss", patience=2)
    task = Task("mse", ("mae",))
    specs = [ModelSpec(seed=0, learning_rate=lr) for lr in (3e-1, 1e-1, 3e-2, 3e-3)]
    engine = ManyModels(TwoInputNet(), task, OptimizerConfig("adam"), epochs=12, batch_size=16, early_stopping=rule)
    result = engine.fit(specs, SweepData.holdout(x, y, *validation))
    assert len(set(result.epochs_run.tolist())) > 1  # the models stopped at different epochs
    assert result.stopped_early.any()
    for i, spec in enumerate(specs):
        state, history = _reference(
            TwoInputNet(), task, spec, x, y, validation, optimizer="adam", epochs=12, batch_size=16, early_stopping=rule
        )
        assert result.best_epoch[i] == history.best_epoch and result.stopped_early[i] == history.stopped_early
        _assert_history(result, i, history, ("loss", "val_loss", "val_mae"), tol=1e-4)
        chex.assert_trees_all_close(result.model_params(i), state.params, rtol=1e-4, atol=1e-5)  # best weights
        mine = jax.tree.map(lambda a, i=i: a[i], result.model_state)
        chex.assert_trees_all_close(mine, state.model_state, rtol=1e-4, atol=1e-5)  # and their batch_stats


def test_new_hyperparameters_and_seeds_trace_the_program_once():
    x, y = _two_inputs(48, 4)
    engine = ManyModels(TwoInputNet(), Task("mse"), epochs=2, batch_size=16, early_stopping=EarlyStopping("val_loss"))
    data = SweepData.holdout(x, y, *_two_inputs(16, 5))
    first = engine.fit([ModelSpec(seed=s, learning_rate=1e-3) for s in range(3)], data)
    second = engine.fit([ModelSpec(seed=7, learning_rate=0.1, l2=0.5, decay=1.0)] * 3, data)
    assert engine.traces == {"init": 1, "epoch": 1}
    assert second.compile_seconds == 0.0 < first.compile_seconds
    assert not np.allclose(first.history["loss"], second.history["loss"])


def test_a_non_additive_user_metric_is_exact_in_a_sweep():
    x, y = _two_inputs(60, 6)
    x_val, y_val = _two_inputs(40, 7)
    engine = ManyModels(TwoInputNet(), Task("mse", (MaxError(),)), epochs=2, batch_size=16, eval_batch_size=8)
    result = engine.fit([ModelSpec(seed=s, learning_rate=1e-2) for s in (0, 1)], SweepData.holdout(x, y, x_val, y_val))
    pred = engine.predict(result, x_val)[..., 0]  # (2, 40), numpy from here on
    errors = np.abs(pred - y_val[None])
    expected = errors.max(axis=1)
    np.testing.assert_allclose(engine.evaluate(result, x_val, y_val)["max_err"], expected, rtol=1e-6)
    np.testing.assert_allclose(result.history["val_max_err"][:, -1], expected, rtol=1e-6)  # final = last epoch's
    sum_of_batch_maxima = errors.reshape(2, 5, 8).max(axis=2).sum(axis=1)
    assert not np.allclose(sum_of_batch_maxima, expected)  # what an additive engine would have reported


def test_recurrent_nets_train_many_at_once_like_trainer():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 6, 2)).astype(np.float32)
    y = x[:, :, 0].sum(1).astype(np.float32)
    model, task = RecurrentNet("gru", 8, 1), Task("mse")
    specs = [ModelSpec(seed=0, learning_rate=1e-2), ModelSpec(seed=1, learning_rate=3e-3)]
    result = ManyModels(model, task, epochs=2, batch_size=16).fit(specs, SweepData.holdout(x, y))
    for i, spec in enumerate(specs):
        state, history = _reference(model, task, spec, x, y, None, optimizer="adam", epochs=2, batch_size=16)
        chex.assert_trees_all_close(result.model_params(i), state.params, rtol=1e-5, atol=1e-5)
        _assert_history(result, i, history, ("loss",))


def test_bf16_many_models_follow_the_single_model_bf16_policy():
    rng = np.random.default_rng(10)
    x = rng.uniform(size=(32, 18, 18, 1)).astype(np.float32)
    y = (x.mean((1, 2, 3)) > 0.5).astype(np.int32)
    model, task = ChapterCNN(features=(4, 8, 8), num_classes=2), Task("sparse_categorical_crossentropy", ("accuracy",))
    specs = [ModelSpec(seed=0, learning_rate=1e-3), ModelSpec(seed=1, learning_rate=3e-3)]
    result = ManyModels(model, task, epochs=2, batch_size=16, precision="bf16").fit(specs, SweepData.holdout(x, y))
    fp32 = ManyModels(model, task, epochs=2, batch_size=16).fit(specs, SweepData.holdout(x, y))
    assert {leaf.dtype for leaf in jax.tree.leaves(result.params)} == {jnp.dtype(jnp.float32)}
    for i, spec in enumerate(specs):
        trainer = Trainer(task)
        fitted = fit_model(
            model,
            OptimizerConfig("adam", spec.learning_rate),
            x,
            y,
            FitConfig(epochs=2, batch_size=16, seed=spec.seed, progress=False),
            jax.random.key(spec.seed),
            trainer,
            precision="bf16",
        )
        np.testing.assert_allclose(result.history["loss"][i], fitted.history.values["loss"], rtol=2e-2)
        chex.assert_trees_all_close(result.model_params(i), fitted.state.params, atol=2e-3)
    assert not np.array_equal(result.history["loss"], fp32.history["loss"])  # bfloat16 really computed


def test_a_dropout_rate_needs_a_module_that_takes_keep_prob():
    x, y = _two_inputs(16, 9)
    engine = ManyModels(TwoInputNet(), Task("mse"), epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="keep_prob"):
        engine.fit([ModelSpec(dropout=0.3)], SweepData.holdout(x, y))
    with pytest.raises(ValueError, match="monitors 'val_auc', which fit does not log"):
        ManyModels(TwoInputNet(), Task("mse"), early_stopping=EarlyStopping("val_auc"))


def test_an_interrupted_sweep_resumes_from_its_checkpoint_exactly(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dlchapter.engine.train")
    x, y = _two_inputs(48, 11)
    data = SweepData.holdout(x, y, *_two_inputs(24, 12))
    specs = [ModelSpec(seed=0, learning_rate=lr) for lr in (3e-1, 3e-2, 3e-3)]
    engine = ManyModels(
        TwoInputNet(),
        Task("mse", ("mae",)),
        epochs=6,
        batch_size=16,
        early_stopping=EarlyStopping("val_loss", patience=1),
    )
    whole = engine.fit(specs, data)

    def preempt(epoch, logs):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as a cluster's preemption: saved at the epoch's end

    where = SweepCheckpoint(tmp_path / "ckpt", every_epochs=5)
    with pytest.raises(TrainingInterrupted, match="SIGTERM received: stopped after epoch 2"):
        engine.fit(specs, data, checkpoint=where, on_epoch_end=preempt)
    seen = []
    resumed = engine.fit(specs, data, checkpoint=where, on_epoch_end=lambda epoch, logs: seen.append(epoch))
    assert seen and seen[0] == 3  # it went on after epoch 2, not from the start
    assert f"resuming from checkpoint step 2 in {tmp_path / 'ckpt'} at epoch 3 of 6" in caplog.text  # as Trainer.fit
    assert engine.traces == {"init": 1, "epoch": 1}
    chex.assert_trees_all_equal(resumed.params, whole.params)
    chex.assert_trees_all_equal(resumed.model_state, whole.model_state)
    for name, values in whole.history.items():
        np.testing.assert_array_equal(resumed.history[name], values, err_msg=name)
    for name in ("best_epoch", "epochs_run", "stopped_early", "diverged"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)

    caplog.clear()
    engine.fit(specs, data, checkpoint=where)  # a rerun of the finished sweep says so
    assert f"checkpoint step {int(whole.epochs_run.max())} in {tmp_path / 'ckpt'}: " in caplog.text
    assert "; nothing to train" in caplog.text
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "ckpt").rglob("*"))
    with pytest.raises(RunMismatch, match="learning_rate"):  # another sweep never reuses these checkpoints
        engine.fit([ModelSpec(seed=0, learning_rate=lr) for lr in (1e-1, 3e-2, 3e-3)], data, checkpoint=where)
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "ckpt").rglob("*")) == before


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda d: ([ModelSpec(learning_rate=-1.0)], d), ValueError, "learning_rate must be finite and > 0"),
        (lambda d: ([ModelSpec(learning_rate=float("nan"))], d), ValueError, "learning_rate must be finite"),
        (lambda d: ([ModelSpec(l2=-0.1)], d), ValueError, "l2 must be finite and >= 0"),
        (lambda d: ([ModelSpec(decay=float("inf"))], d), ValueError, "decay must be finite and >= 0"),
        (lambda d: ([ModelSpec(seed=2**40)], d), ValueError, r"seed must be an integer in \[0, 2\*\*31\)"),
        (lambda d: ([{"seed": 0}], d), TypeError, "specs must be ModelSpec objects, got dict"),
        (lambda d: ([ModelSpec(fold=-1)], d), ValueError, r"fold in \[0, 1\)"),
        (
            lambda d: ([ModelSpec()], SweepData.holdout(d[0], d[1][:30])),
            ValueError,
            "x has 40 rows per fold but y has 30",
        ),
        (
            lambda d: ([ModelSpec()], SweepData.holdout(d[0], d[1], d[0][:8], d[1][:5])),
            ValueError,
            "validation data: x has 8 rows per fold but y has 5",
        ),
        (
            lambda d: ([ModelSpec()], SweepData(d[0][None], d[1][None], (np.arange(50),))),
            ValueError,
            r"fold 0's rows index outside \[0, 40\)",
        ),
    ],
)
def test_bad_specs_and_data_are_refused_before_training(make, error, match):
    """Each of these trained silently (a gather clamps out-of-range rows; a negative rate ascends) or raised
    AttributeError / OverflowError from inside the program."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = x.sum(1).astype(np.float32)
    many = ManyModels(_Linear(), Task("mse"), epochs=1, batch_size=8)
    specs, data = make((x, y))
    if isinstance(data, tuple):
        data = SweepData.holdout(*data)
    with pytest.raises(error, match=match):
        many.fit(specs, data)
    assert not many.traces  # refused before any program was traced


@pytest.mark.parametrize("field,value", [("learning_rate", 0.05), ("decay", 0.5), ("l2", 0.01)])
def test_a_shared_optimizer_setting_a_per_model_hyperparameter_is_refused(field, value):
    """Each model's learning rate, decay and L2 come from its ModelSpec: one set on the shared OptimizerConfig
    used to be ignored without a word."""
    with pytest.raises(ValueError, match=f"OptimizerConfig\\({field}={value}\\) would be ignored.*ModelSpec"):
        ManyModels(_Linear(), Task("mse"), OptimizerConfig("sgd", **{field: value}))
    ManyModels(_Linear(), Task("mse"), OptimizerConfig("sgd", momentum=0.5, clip_global_norm=1.0))  # shared: fine


def test_bad_loop_sizes_and_evaluate_rows_are_refused():
    for kwargs in ({"epochs": 0}, {"batch_size": 0}, {"eval_batch_size": -1}):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be an integer >= 1"):
            ManyModels(_Linear(), Task("mse"), **kwargs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = x.sum(1).astype(np.float32)
    many = ManyModels(_Linear(), Task("mse"), epochs=1, batch_size=8)
    result = many.fit([ModelSpec(seed=0), ModelSpec(seed=1)], SweepData.holdout(x, y))
    with pytest.raises(ValueError, match="evaluate: x has 40 rows per fold but y has 10"):  # was a score
        many.evaluate(result, x, y[:10])


def test_restart_keeps_the_earlier_checkpoints_until_its_first_save(tmp_path, caplog):
    """A restarted sweep (an --ensemble run with --restart) deleted the earlier checkpoints at once, so a
    failed or killed restart lost them; now they are set aside as for a single run (checkpoint.set_aside)."""
    caplog.set_level(logging.INFO, logger="dlchapter.engine.train")
    x, y = _two_inputs(32, 3)
    data = SweepData.holdout(x, y)
    specs = [ModelSpec(seed=s) for s in (0, 1)]
    engine = ManyModels(TwoInputNet(), Task("mse"), epochs=3, batch_size=16)
    directory = tmp_path / "ckpt"
    engine.fit(specs, data, checkpoint=SweepCheckpoint(directory, every_epochs=1))

    def listing():
        return sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))

    before = listing()

    def fail(epoch, logs):
        raise RuntimeError("the new run fails before its first save")

    restart = SweepCheckpoint(directory, every_epochs=3, restart=True)  # first save at epoch 3
    with pytest.raises(RuntimeError, match="before its first save"):
        engine.fit(specs, data, checkpoint=restart, on_epoch_end=fail)
    assert listing() == before  # put back, untouched

    from dlchapter.engine.sweep_progress import SweepCheckpointer

    killed = SweepCheckpointer(restart, engine.identity(specs, data))  # set aside, then "killed": never closed
    del killed
    assert not (directory / "3").exists() and len(list(tmp_path.glob("ckpt.replaced-*"))) == 1
    with pytest.warns(UserWarning, match="interrupted --restart run had set aside"):
        engine.fit(specs, data, checkpoint=SweepCheckpoint(directory, every_epochs=1))
    assert "the run finished its 3 epochs; nothing to train" in caplog.text  # the earlier run, resumed
    assert not list(tmp_path.glob("ckpt.replaced-*"))

    engine.fit(specs, data, checkpoint=SweepCheckpoint(directory, every_epochs=1, restart=True))  # a full restart
    assert not list(tmp_path.glob("ckpt.replaced-*")) and (directory / "3").exists()


def test_an_nnx_module_is_refused_with_a_type_error_naming_trainer():
    from flax import nnx

    class _NnxLinear(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 1, rngs=rngs)

        def __call__(self, x):
            return self.linear(x)

    with pytest.raises(TypeError, match="ManyModels trains flax.linen modules.*Trainer.fit"):  # was AttributeError
        ManyModels(_NnxLinear(nnx.Rngs(0)), Task("mse"))
