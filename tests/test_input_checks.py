"""Bad labels, shapes, NaN/inf, losses, monitors and pandas inputs stop `fit`/`evaluate` (and ManyModels)
before any step (`dlchapter.engine.input_checks`); valid variants still train, with numbers checked in numpy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dlchapter as dl
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.losses import binary_cross_entropy
from dlchapter.engine.many_models import ManyModels, ModelSpec, SweepData
from dlchapter.engine.train import TASKS, FitConfig, Task, Trainer, create_train_state

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype(np.float32)
Y_REG = (X @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)).astype(np.float32)
Y_CLS = ((X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0)).astype(np.int32)  # 3 classes 0..2


class Lin(nn.Module):
    out: int = 1

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.out)(x)


class Started(dl.Callback):
    def __init__(self):
        self.began = False

    def on_train_begin(self, run):
        self.began = True


def _refused(task, out, x, y, match, error=ValueError, config=None, callbacks=(), **fit_kwargs):
    """fit raises `error` matching `match`, and no step ran: the train program was never traced."""
    trainer, started = Trainer(task), Started()
    state = create_train_state(Lin(out), optax.adam(1e-2), X, jax.random.key(0))
    with pytest.raises(error, match=match):
        config = config or FitConfig(epochs=2)
        trainer.fit(state, x, y, config, jax.random.key(1), callbacks=[started, *callbacks], **fit_kwargs)
    assert trainer.traces["train"] == 0 and not started.began
    return trainer, state


def _fit(task, out, x, y, epochs=2, **kwargs):
    trainer = Trainer(task)
    state = create_train_state(Lin(out), optax.adam(1e-2), x, jax.random.key(0))
    state, history = trainer.fit(state, x, y, FitConfig(epochs=epochs, shuffle=False), jax.random.key(1), **kwargs)
    return trainer, state, history


SPARSE, BINARY, MULTI, REG = (TASKS[k] for k in ("sparse_multiclass", "binary", "multiclass", "regression"))


@pytest.mark.parametrize(
    "task, out, y, match",
    [
        (SPARSE, 3, Y_CLS + 0.5, r"fit: y holds 1.5 at row 0; sparse class labels must be whole numbers 0..2"),
        (SPARSE, 3, Y_CLS - 1, r"y holds label -1 at row \d+, outside the classes 0..2 .*LabelEncoder"),
        (SPARSE, 3, np.where(Y_CLS == 2, 5, Y_CLS), r"label 5 at row \d+, outside the classes 0..2.*Dense\(6\)"),
        (SPARSE, 2, Y_CLS, r"label 2 at row \d+, outside the classes 0..1 of a model with 2 outputs.*Dense\(3\)"),
        (SPARSE, 1, Y_CLS, r"outputs 1 value per row, but sparse_categorical_crossentropy needs one output per class"),
        (SPARSE, 3, np.eye(3)[Y_CLS], r"y has shape \(64, 3\): one-hot rows.*argmax"),
        (SPARSE, 3, np.array(["a", "b", "c"])[Y_CLS], r"y has dtype <U1.*LabelEncoder"),
        (MULTI, 3, Y_CLS, r"y has shape \(64,\): class indices, but categorical_crossentropy takes one-hot"),
        (MULTI, 3, np.eye(4)[Y_CLS], r"y has shape \(64, 4\) but the model outputs 3 values per row"),
        (MULTI, 3, np.eye(3)[Y_CLS] * 2, r"y's row \d+ is \[.*\]; categorical_crossentropy needs rows >= 0 summing"),
        (BINARY, 1, Y_CLS, r"y holds 2 at row \d+; binary labels must be 0 or 1.*soft targets"),
        (BINARY, 3, (Y_CLS > 0).astype(np.float32), r"model outputs 3 values per row but y has 1 .*Dense\(1\)"),
        (REG, 3, Y_REG, r"outputs 3 values per row \(outputs \(32, 3\)\) but y has 1 value per row.*Dense\(1\)"),
        (REG, 1, np.stack([Y_REG] * 3, 1), r"outputs 1 value per row .* but y has 3 values per row.*Dense\(3\)"),
    ],
)
def test_bad_labels_and_output_shapes_are_refused_before_any_step(task, out, y, match):
    _refused(task, out, X, y, match)


def test_sparse_out_of_range_row_is_the_first_bad_one():
    y = Y_CLS.copy()
    y[[9, 20]] = 7
    _refused(SPARSE, 3, X, y, "label 7 at row 9,")


@pytest.mark.parametrize("which, value, found", [("x", np.nan, "NaN"), ("x", np.inf, "inf"), ("y", np.nan, "NaN")])
def test_nan_or_inf_is_named_with_its_first_row(which, value, found):
    x, y = X.copy(), Y_REG.copy()
    if which == "x":
        x[[5, 40], 1] = value
        match = rf"fit: x holds {found} at row 5 \(2 such rows in all\)"
    else:
        y[7] = value
        match = rf"fit: y holds {found} at row 7 \(1 such row in all\)"
    _refused(REG, 1, x, y, match)


def test_nan_in_validation_data_is_named():
    x_val = X[:10].copy()
    x_val[3, 0] = np.nan
    _refused(REG, 1, X, Y_REG, r"fit: validation_data: x holds NaN at row 3", validation_data=(x_val, Y_REG[:10]))


def test_a_loss_returning_a_vector_or_of_the_wrong_arity_is_named():
    def per_example(outputs, targets, weights):
        return (outputs[:, 0] - targets) ** 2

    _refused(Task(per_example), 1, X, Y_REG, r"the loss .*per_example returns shape \(32,\) for a batch of 32 rows")

    def two_args(outputs, targets):
        return jnp.mean((outputs[:, 0] - targets) ** 2)

    _refused(Task(two_args), 1, X, Y_REG, r"the loss .*two_args cannot be called as loss\(outputs", error=TypeError)


def test_monitors_are_checked_at_fit_start():
    val = FitConfig(epochs=3, validation_split=0.2)
    _refused(REG, 1, X, Y_REG, r"monitors 'val_los', which fit does not log; did you mean 'val_loss'\?",
             config=val, early_stopping=EarlyStopping("val_los"))  # fmt: skip
    _refused(REG, 1, X, Y_REG, r"monitors 'val_loss', but fit has no validation data: pass validation_data",
             early_stopping=EarlyStopping("val_loss"))  # fmt: skip

    class Saver(dl.Callback):  # a ModelCheckpoint-like callback with its own monitor
        monitor = "val_mea"

    _refused(REG, 1, X, Y_REG, r"Saver monitors 'val_mea'.*did you mean 'val_mae'", config=val, callbacks=[Saver()])


@pytest.mark.parametrize("split", [1.0, 1.5, -0.2])
def test_validation_split_is_named(split):
    config = FitConfig(epochs=1, validation_split=split)
    match = rf"FitConfig.validation_split must be a fraction in \[0, 1\).*got {split}"
    _refused(REG, 1, X, Y_REG, match, config=config)


def test_evaluate_checks_labels_too():
    trainer, state, _ = _fit(SPARSE, 3, X, Y_CLS, epochs=1)
    with pytest.raises(ValueError, match=r"evaluate: y holds label 5 at row 0"):
        trainer.evaluate(state, X[:4], np.array([5, 0, 1, 2]))
    assert trainer.traces["eval"] == 0


def test_valid_variants_train_alike_and_match_numpy():
    _, state_int, history_int = _fit(SPARSE, 3, X, Y_CLS)
    trainer, state_f, history_f = _fit(SPARSE, 3, X, Y_CLS.astype(np.float32))  # floats holding integers
    _, state_col, history_col = _fit(SPARSE, 3, X, Y_CLS[:, None])  # (N, 1), squeezed as Keras does
    assert history_int.values["loss"] == history_f.values["loss"] == history_col.values["loss"]
    chex_close = np.testing.assert_allclose
    for other in (state_f, state_col):
        jax.tree.map(lambda a, b: chex_close(np.asarray(a), np.asarray(b)), state_int.params, other.params)
    logits = trainer.predict(state_int, X, raw=True).astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    logs = trainer.evaluate(state_int, X, Y_CLS[:, None])
    np.testing.assert_allclose(logs["loss"], -log_softmax[np.arange(64), Y_CLS].mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], np.mean(logits.argmax(1) == Y_CLS), rtol=1e-6)


def test_soft_binary_targets_train_with_the_loss_as_a_callable():
    soft = np.clip((X[:, 0] + 2) / 4, 0, 1).astype(np.float32)
    _refused(BINARY, 1, X, soft, "binary labels must be 0 or 1")
    trainer, state, _ = _fit(Task(binary_cross_entropy, (), "sigmoid"), 1, X, soft, epochs=1)
    z = trainer.predict(state, X, raw=True)[:, 0].astype(np.float64)
    expected = np.mean(np.logaddexp(0, z) - soft * z)  # -[y log s(z) + (1-y) log(1-s(z))]
    np.testing.assert_allclose(trainer.evaluate(state, X, soft)["loss"], expected, rtol=1e-5)


def test_pandas_inputs_train_as_numpy():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=list("abcd"))
    series = pd.Series(Y_REG, index=np.arange(64) + 1000)  # the index is dropped, as Keras does
    trainer, state_pd, history_pd = _fit(REG, 1, frame, series)
    _, state_np, history_np = _fit(REG, 1, X, Y_REG)
    assert history_pd.values["loss"] == history_np.values["loss"]
    assert trainer.evaluate(state_pd, frame, series) == trainer.evaluate(state_pd, X, Y_REG)
    np.testing.assert_array_equal(trainer.predict(state_pd, frame), trainer.predict(state_np, X))
    text = frame.assign(city=["x"] * 64)
    _refused(REG, 1, text, Y_REG, r"fit: x: the DataFrame's columns \['city'\] are not numeric")
    with pytest.raises(ValueError, match=r"sample_x: the DataFrame's columns \['city'\] are not numeric"):
        create_train_state(Lin(1), optax.adam(1e-2), text, jax.random.key(0))


def test_nullable_and_bool_pandas_columns_and_plain_lists_train_as_numbers():
    pd = pytest.importorskip("pandas")
    _, _, reference = _fit(REG, 1, X, Y_REG)
    nullable = pd.DataFrame(X).astype("Float64")  # to_numpy() alone gives an object array here
    assert _fit(REG, 1, nullable, pd.Series(Y_REG).astype("Float64"))[2].values["loss"] == reference.values["loss"]
    assert _fit(REG, 1, X.tolist(), Y_REG.tolist())[2].values["loss"] == reference.values["loss"]
    mixed = pd.DataFrame(X)
    mixed[3] = mixed[3] > 0  # a bool column beside floats: 0.0 / 1.0
    expected = X.copy()
    expected[:, 3] = X[:, 3] > 0
    assert _fit(REG, 1, mixed, Y_REG)[2].values["loss"] == _fit(REG, 1, expected, Y_REG)[2].values["loss"]
    nullable.iloc[5, 2] = pd.NA
    _refused(REG, 1, nullable, Y_REG, r"fit: x holds NaN at row 5")


def test_many_models_checks_the_same_way_before_any_step():
    engine = ManyModels(Lin(3), SPARSE, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match=r"ManyModels.fit: y holds label 5 at row 2"):
        engine.fit([ModelSpec(seed=0)], SweepData.holdout(X, np.where(np.arange(64) == 2, 5, Y_CLS)))
    x_bad = X.copy()
    x_bad[11, 0] = np.inf
    with pytest.raises(ValueError, match=r"ManyModels.fit: x holds inf at row 11"):
        engine.fit([ModelSpec(seed=0)], SweepData.holdout(x_bad, Y_CLS))
    assert engine.traces["epoch"] == 0
    with pytest.raises(ValueError, match=r"did you mean 'val_loss'"):
        ManyModels(Lin(3), SPARSE, early_stopping=EarlyStopping("val_lss"))
    result = engine.fit([ModelSpec(seed=0)], SweepData.holdout(X, Y_CLS[:, None].astype(np.float32)))
    direct = engine.fit([ModelSpec(seed=0)], SweepData.holdout(X, Y_CLS))
    np.testing.assert_array_equal(result.history["loss"], direct.history["loss"])


def test_check_finite_names_the_leaf_of_a_pytree_and_reads_bfloat16():
    from dlchapter.engine.input_checks import check_finite

    image = np.ones((6, 2), jnp.bfloat16)
    image[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"x\['image'\] holds inf at row 4 \(1 such row in all\)"):
        check_finite({"table": np.zeros((6, 3), np.float32), "image": image, "ids": np.arange(6)}, "x")
    check_finite({"table": np.zeros((6, 3), np.float32), "ids": np.arange(6)}, "x")  # finite: no error
