"""The Trainer's CPU compiler options: each one changes the compiled program, none changes a result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlchapter.engine import train
from dlchapter.engine.loop import batch_plan
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.models.dense import MLP

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")
REGION = "xla_cpu_copy_insertion_use_region_analysis"


def _train(options: dict, n_steps: int = 4) -> tuple[object, str]:
    """Four fused adam steps of a small MLP under `options`: (params and optimizer state, compiled HLO)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype(np.float32), rng.normal(size=64).astype(np.float32)
    model = MLP(widths=(16, 16))
    state = train.create_train_state(model, make_optimizer(OptimizerConfig("adam")), x, jax.random.key(0))
    trainer = train.Trainer(train.TASKS["regression"], steps_per_call=n_steps, cpu_compiler_options=options)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    idx, weight = batch_plan(rng.permutation(64), 16, n_steps)
    args = (
        state,
        trainer._zero_sums(state, data, 16),
        jnp.asarray(-1, jnp.int32),
        data,
        jnp.asarray(idx),
        jnp.asarray(weight),
        0,
        jax.random.key(1),
    )
    program = trainer.train_program(n_steps)
    hlo = program.lower(*args).compile().as_text()
    state, sums, _ = program(*args)
    return jax.device_get((state.params, state.opt_state, sums)), hlo


def test_region_analysis_drops_loop_copies_and_keeps_every_bit() -> None:
    without = {k: v for k, v in train.CPU_COMPILER_OPTIONS.items() if k != REGION}
    assert train.CPU_COMPILER_OPTIONS[REGION] is True
    ours, hlo = _train(train.CPU_COMPILER_OPTIONS)
    ref, hlo_ref = _train(without)
    assert hlo.count(" copy(") < hlo_ref.count(" copy("), "the option no longer removes the loop's weight copies"
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = jax.tree.leaves(ours[0])[0]
    assert not np.array_equal(moved, jax.tree.leaves(_train(without, n_steps=1)[0][0])[0])  # 4 steps != 1 step
