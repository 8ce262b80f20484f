"""`early_stopping_update` against hand-written cases of Keras's documented EarlyStopping rule.

Reference (Keras docs, `keras.callbacks.EarlyStopping`): "min_delta: minimum change in the monitored quantity to
qualify as an improvement, i.e. an absolute change of less than min_delta, will count as no improvement";
"patience: number of epochs with no improvement after which training will be stopped"; mode "min" stops when the
quantity stops decreasing, "max" when it stops increasing. Each expected sequence below is written out by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlchapter.engine.callbacks import EarlyStopping, early_stopping_update

# (mode, min_delta, patience, values, expected improved per epoch, epoch index (0-based) at which stop is signalled)
CASES = [
    (
        "min",
        0.0,
        2,
        [1.0, 0.9, 0.95, 0.91, 0.8],
        [True, True, False, False, True],
        3,
    ),  # stop signalled at 4th; rule runs on
    ("min", 0.0, 0, [1.0, 1.0], [True, False], 1),
    ("min", 0.1, 1, [1.0, 0.95, 0.85], [True, False, True], 1),  # 0.05 < min_delta: no improvement
    ("min", 0.1, 3, [1.0, 0.95, 0.85, 0.7], [True, False, True, True], None),
    ("max", 0.0, 1, [0.5, 0.6, 0.6, 0.7], [True, True, False, True], 2),  # equal is not better
    ("max", 0.01, 2, [0.5, 0.505, 0.52, 0.52, 0.525], [True, False, True, False, False], 4),
    ("max", 0.0, 5, [0.9, 0.1, 0.2, 0.3], [True, False, False, False], None),
]


def _host_run(mode, min_delta, patience, values):
    best, wait, improved, stop_at = (np.inf if mode == "min" else -np.inf), 0, [], None
    for i, v in enumerate(values):
        imp, best, wait, stop = early_stopping_update(
            best, wait, v, mode=mode, min_delta=min_delta, patience=patience, first=i == 0
        )
        improved.append(bool(imp))
        if stop and stop_at is None:
            stop_at = i
    return improved, stop_at


@pytest.mark.parametrize("mode,min_delta,patience,values,want_improved,want_stop", CASES)
def test_host_scalars_follow_keras_cases(mode, min_delta, patience, values, want_improved, want_stop):
    assert _host_run(mode, min_delta, patience, values) == (want_improved, want_stop)


@pytest.mark.parametrize("mode,min_delta,patience,values,want_improved,want_stop", CASES)
def test_tracker_follows_keras_cases(mode, min_delta, patience, values, want_improved, want_stop):
    tracker = EarlyStopping("val_loss", patience=patience, min_delta=min_delta, mode=mode).start()
    stops = [tracker.update(i + 1, {"val_loss": v}, {"w": jnp.zeros(1)}) for i, v in enumerate(values)]
    assert (stops.index(True) if True in stops else None) == want_stop
    assert tracker.best_epoch == max(i + 1 for i, imp in enumerate(want_improved) if imp)


def test_jit_vmap_over_many_runs_matches_the_cases():
    """All cases with the same (mode, min_delta, patience) batched through one jitted, vmapped scan."""
    mode, min_delta, patience = "min", 0.1, 1
    runs = np.array([[1.0, 0.95, 0.85], [1.0, 0.8, 0.79], [1.0, 1.2, 0.5]], np.float32)
    want = [([True, False, True], 1), ([True, True, False], 2), ([True, False, True], 1)]

    def one(values):
        def body(carry, x):
            best, wait, i = carry
            imp, best, wait, stop = early_stopping_update(
                best, wait, x, mode=mode, min_delta=min_delta, patience=patience, first=i == 0
            )
            return (best, wait, i + 1), (imp, stop)

        return jax.lax.scan(body, (jnp.float32(jnp.inf), jnp.int32(0), jnp.int32(0)), values)[1]

    imp, stop = jax.jit(jax.vmap(one))(jnp.asarray(runs))
    for r, (want_imp, want_stop) in enumerate(want):
        assert np.asarray(imp[r]).tolist() == want_imp
        assert int(np.argmax(np.asarray(stop[r]))) == want_stop


def test_first_epoch_counts_even_when_not_better():
    imp, best, wait, stop = early_stopping_update(np.inf, 0, np.nan, mode="min", min_delta=0.0, patience=0, first=True)
    assert bool(imp) and np.isnan(best) and int(wait) == 0 and not bool(stop)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="mode must be"):
        early_stopping_update(0.0, 0, 1.0, mode="auto", min_delta=0.0, patience=1)
