"""The chapter's CNN trained N-at-once in one compiled program: images per second and device memory.

    python -m benchmarks.many_models [--n 1,16,64,256] [--precision fp32|bf16] [--steps 50] [--rows 60000]

This benchmark predates `dlchapter.engine.many_models.ManyModels` (which now trains any module N-at-once) and
builds the CNN's on the library's public pieces: `jax.vmap` over
`dlchapter.engine.train.train_step` (the step `Trainer.fit` runs) for N `ChapterCNN`s
(rmsprop, sparse categorical cross-entropy, batch 64), each with its own seed
(initial weights, dropout key) and its own batch order, stacked on a leading
axis. One compiled call runs `steps` steps of all N models (`lax.fori_loop`),
gathering each model's batches on the device from one shared copy of the images.
Precision "bf16" is `dlchapter.engine.precision.apply_policy` (bf16 compute, float32
parameters, loss and metrics). Compile is timed apart (lower + compile);
warm calls are timed with `block_until_ready` until at least `min_seconds`.
Memory: XLA's estimate for the program (`memory_analysis`) and, where the
backend reports it (GPU, TPU; not CPU), `device.memory_stats()` after the run
(`peak_bytes_in_use` is the process's peak so far: N runs in ascending order).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from dlchapter.engine import losses, precision
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.loop import gather
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import train_step
from dlchapter.models.conv import ChapterCNN

BATCH_SIZE = 64


def init_states(
    n_models: int, precision_name: str, sample_x: np.ndarray, steps_per_epoch: int, seed: int = 0
) -> TrainState:
    """N train states stacked on a leading axis; model i is initialised from `fold_in(key(seed), i)`."""
    model = ChapterCNN()
    tx = make_optimizer(OptimizerConfig("rmsprop"), steps_per_epoch)
    x1 = jnp.asarray(sample_x[:1])

    def one(key: jax.Array) -> TrainState:
        params = model.init({"params": key}, x1, train=False)["params"]
        return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n_models))
    states = jax.jit(jax.vmap(one))(keys)
    _, states = precision.apply_policy(model, states, precision_name)  # apply_fn is static: one wrapper for all N
    return states


def chunk_program(n_steps: int) -> Callable:
    """jit(states, data, idx_NxSxB, w_NxSxB, keys_N) -> (states, loss sums (N,)): `n_steps` steps of every model."""
    step = functools.partial(
        train_step,
        loss_fn=losses.get_loss("sparse_categorical_crossentropy"),
        metrics=metrics_lib.get_metrics(("accuracy",)),
    )

    def chunk(states: TrainState, data: dict, idx_NxSxB: jax.Array, w_NxSxB: jax.Array, keys_N: jax.Array):
        def body(i: jax.Array, carry: tuple) -> tuple:
            states, loss_N = carry
            batch = jax.vmap(lambda idx_B, w_B: gather(data, idx_B, w_B))(idx_NxSxB[:, i], w_NxSxB[:, i])
            states, sums = jax.vmap(step)(states, batch, keys_N)
            return states, loss_N + sums["loss"]["sum"]

        return jax.lax.fori_loop(0, n_steps, body, (states, jnp.zeros(idx_NxSxB.shape[0], jnp.float32)))

    return jax.jit(chunk, donate_argnums=0)


def _plan(n_models: int, n_rows: int, n_steps: int, call: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, steps, batch) row indices: model i's own seeded order, call `call` of it; all weights 1."""
    idx = np.stack(
        [
            np.random.default_rng([i, call]).integers(0, n_rows, (n_steps, BATCH_SIZE), dtype=np.int32)
            for i in range(n_models)
        ]
    )
    return idx, np.ones(idx.shape, np.float32)


def _mib(value: Any) -> float | None:
    return None if value is None else float(value) / 2**20


def measure(
    n_models: int,
    precision_name: str,
    x: np.ndarray,
    y: np.ndarray,
    n_steps: int,
    min_seconds: float = 0.5,
    data: dict | None = None,
) -> dict[str, Any]:
    """Compile seconds, warm images per second and memory of N CNNs trained together for `n_steps` per call."""
    data = data if data is not None else {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    states = init_states(n_models, precision_name, x, -(-len(y) // BATCH_SIZE))
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(n_models))
    program = chunk_program(n_steps)
    idx, w = _plan(n_models, len(y), n_steps, 0)
    args = (states, data, jnp.asarray(idx), jnp.asarray(w), keys)
    started = time.perf_counter()
    lowered = program.lower(*args)
    lower_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - started
    analysis = compiled.memory_analysis()
    started = time.perf_counter()
    states, loss_N = compiled(*args)
    jax.block_until_ready(loss_N)
    first_call_s = time.perf_counter() - started
    plans = [tuple(map(jnp.asarray, _plan(n_models, len(y), n_steps, call))) for call in (1, 2)]
    calls, elapsed = 0, 0.0
    while calls < 2 or elapsed < min_seconds:
        idx_dev, w_dev = plans[calls % 2]
        started = time.perf_counter()
        states, loss_N = compiled(states, data, idx_dev, w_dev, keys)
        jax.block_until_ready(loss_N)
        elapsed += time.perf_counter() - started
        calls += 1
    loss = np.asarray(loss_N) / (n_steps * BATCH_SIZE)
    stats = jax.devices()[0].memory_stats()
    images = n_models * n_steps * BATCH_SIZE * calls
    return {
        "n_models": n_models,
        "precision": precision_name,
        "steps_per_call": n_steps,
        "batch_size": BATCH_SIZE,
        "lower_s": lower_s,
        "compile_s": compile_s,
        "first_call_s": first_call_s,
        "timed_calls": calls,
        "timed_s": elapsed,
        "images_per_s": images / elapsed,
        "ms_per_step": elapsed / (calls * n_steps) * 1e3,
        "last_loss_mean": float(np.mean(loss)),
        "last_loss_spread": float(np.ptp(loss)),
        "all_finite": bool(np.all(np.isfinite(loss))),
        "xla_temp_mib": _mib(analysis.temp_size_in_bytes) if analysis else None,
        "xla_args_out_mib": _mib(analysis.argument_size_in_bytes + analysis.output_size_in_bytes) if analysis else None,
        "device_bytes_in_use_mib": _mib(stats.get("bytes_in_use")) if stats else None,
        "device_peak_mib": _mib(stats.get("peak_bytes_in_use")) if stats else None,
        "device_memory_note": None if stats else f"{jax.default_backend()}: device.memory_stats() reports nothing",
    }


def run(
    ns: Sequence[int],
    precision_name: str,
    x: np.ndarray,
    y: np.ndarray,
    n_steps: int,
    min_seconds: float,
    emit: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """`measure` for each N in ascending order (one shared device copy of the images); `emit` after each."""
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    rows: list[dict[str, Any]] = []
    for n in sorted(ns):
        row = measure(n, precision_name, x, y, n_steps, min_seconds, data)
        base = rows[0]["images_per_s"] if rows and rows[0]["n_models"] == 1 else row["images_per_s"] if n == 1 else None
        rows.append({**row, "speedup_vs_one": row["images_per_s"] / base if base else None})
        if emit is not None:
            emit(rows)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="1,16,64,256", help="comma-separated numbers of models")
    parser.add_argument("--precision", choices=sorted(precision.POLICIES), default="fp32")
    parser.add_argument("--steps", type=int, default=50, help="steps of every model per compiled call")
    parser.add_argument(
        "--rows", type=int, default=60_000, help="synthetic images (throughput does not depend on values)"
    )
    parser.add_argument("--min-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random((args.rows, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.rows).astype(np.int32)
    rows = run([int(n) for n in args.n.split(",")], args.precision, x, y, args.steps, args.min_seconds)
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
