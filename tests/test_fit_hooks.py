"""Trainer.fit's hooks: the user's Callback objects see every phase in order, can stop training, and whatever ends
fit releases what the hooks hold; hooks change no number."""

import signal

import jax
import numpy as np
import pytest

from dlchapter.checkpoint.resume import CheckpointConfig
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.fit_hooks import Callback, FitRun
from dlchapter.engine.train import TASKS, FitConfig, Trainer
from tests.test_train import _regression_data, _state


class _Recorder(Callback):
    """Records each call; stops after `stop_after` epochs when given."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def on_train_begin(self, run: FitRun):
        self.calls.append(("begin", run.position.epoch))

    def on_train_batch_end(self, run, steps_before, steps_done):
        self.calls.append(("batch", steps_before, steps_done, run.mid_epoch))

    def on_epoch_end(self, run, epoch, logs):
        self.calls.append(("epoch", epoch, sorted(logs)))
        if epoch == self.stop_after:
            run.stop_training = True

    def on_train_end(self, run):
        self.calls.append(("end", run.history.epochs_run))

    def close(self):
        self.calls.append(("close",))


def _fit(epochs=2, steps_per_call=2, **kwargs):
    x, y = _regression_data(n=64)  # 4 steps of 16 per epoch
    trainer = Trainer(TASKS["regression"], steps_per_call=steps_per_call)
    config = FitConfig(epochs=epochs, batch_size=16, progress=False)
    return trainer.fit(
        _state(x), x, y, config, jax.random.key(1), validation_data=_regression_data(32, seed=1), **kwargs
    )


def test_a_callback_sees_every_phase_in_order():
    recorder = _Recorder()
    _, history = _fit(callbacks=[recorder])
    logs = ["epoch_seconds", "loss", "lr", "mae", "rmse", "val_loss", "val_mae", "val_rmse"]
    assert recorder.calls == [
        ("begin", 0),
        ("batch", 0, 2, True),
        ("batch", 2, 4, False),
        ("epoch", 1, logs),
        ("batch", 4, 6, True),
        ("batch", 6, 8, False),
        ("epoch", 2, logs),
        ("end", 2),
        ("close",),
    ]
    assert history.epochs_run == 2 and not history.stopped_early


def test_stop_training_ends_after_that_epoch_and_is_recorded(tmp_path):
    _, history = _fit(epochs=6, callbacks=[_Recorder(stop_after=2)], checkpoint=CheckpointConfig(tmp_path / "run"))
    assert history.epochs_run == 2 and history.stopped_early
    again = _Recorder()
    _, rerun = _fit(epochs=6, callbacks=[again], checkpoint=CheckpointConfig(tmp_path / "run"))
    assert rerun.epochs_run == 2 and not any(call[0] == "epoch" for call in again.calls)  # the stop was saved


def test_user_hooks_run_before_early_stopping_and_see_its_counters_unchanged():
    seen = []

    class Watch(Callback):
        def on_epoch_end(self, run, epoch, logs):
            seen.append(run.stop_training)  # early stopping has not judged this epoch yet

    _, history = _fit(
        epochs=30, callbacks=[Watch()], early_stopping=EarlyStopping("val_loss", patience=0, min_delta=1e9)
    )
    assert history.stopped_early and history.epochs_run == 2 and seen == [False, False]


def test_hooks_change_no_number():
    plain, plain_history = _fit(epochs=3)
    hooked, hooked_history = _fit(epochs=3, callbacks=[_Recorder()], on_epoch_end=lambda e, logs, s: None)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), plain.params, hooked.params)
    assert plain_history.values["loss"] == hooked_history.values["loss"]


def test_whatever_ends_fit_the_signal_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)

    class Boom(Callback):
        def on_epoch_end(self, run, epoch, logs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _fit(callbacks=[Boom()], checkpoint=CheckpointConfig(tmp_path / "run"))
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("last_epoch", [True, False])
def test_a_stop_during_the_last_epoch_still_stops_the_run(tmp_path, last_epoch, stop):
    """Too late for the loop to stop training (it finished and saved): delivered again when fit ends, to the
    handler outside fit (the CLI's: Ctrl-C raises KeyboardInterrupt, SIGTERM `Terminated`)."""
    from dlchapter.checkpoint.resume import TrainingInterrupted
    from dlchapter.reporting.run_guard import Terminated, sigterm_unwinds

    class Stop(Callback):
        def on_epoch_end(self, run, epoch, logs):
            if epoch == (2 if last_epoch else 1):
                signal.raise_signal(getattr(signal, stop))

    late = KeyboardInterrupt if stop == "SIGINT" else Terminated
    with pytest.raises(late if last_epoch else TrainingInterrupted), sigterm_unwinds():
        _fit(epochs=2, callbacks=[Stop()], checkpoint=CheckpointConfig(tmp_path / "run"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    steps = [int(p.name) for p in (tmp_path / "run").iterdir() if p.name.isdigit()]
    assert max(steps) == (8 if last_epoch else 4)  # the checkpoint of the epoch the signal came in (4 steps each)


def test_a_callback_that_is_not_a_callback_object_is_refused_before_training():
    with pytest.raises(TypeError, match="callbacks must be dlchapter Callback objects, got function"):
        _fit(callbacks=[lambda *a: None])
