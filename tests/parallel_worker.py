"""A small data-parallel training run, started as a subprocess by tests/test_parallel.py.

    python -m tests.parallel_worker OUT.npz --devices 4
        one process with 4 CPU devices (set before JAX starts)
    python -m tests.parallel_worker OUT.npz --coordinator 127.0.0.1:PORT --num-processes 2 --process-id I
        one of several processes joined with jax.distributed (gloo collectives on CPU)

Trains `problem()`'s MLP with `Trainer(placement=DataParallel.create())` over
every device of every process, twice: one step per call without validation
data ("steps1/"), and several steps per call (lax.scan, padded chunks) with
validation data, evaluate and predict ("steps3/"). Writes this process's
replica of the final parameters, the histories, and the run's layout to
OUT.npz, including which columns of every global batch the Trainer's plans
made this process feed. The test trains the same problem on one device with
the Trainer and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

EPOCHS, BATCH, SEED, N_FIT = 3, 25, 3, 160
TRAINER_STEPS_PER_CALL = 3  # 7 batches an epoch: padded with 2 all-zero batches, run in lax.scan


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_fit, y_fit, x_val, y_val): 160 training rows (the last batch has 10) and 43 validation rows, two classes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(203, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return x[:N_FIT], y[:N_FIT], x[N_FIT:], y[N_FIT:]


class RecordingPlacement:
    """A placement that passes every call to `inner` and records which plan columns this process feeds."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.plans: list[list[int]] = []  # [global columns, first fed column, end of fed columns] per plan call

    def plan(self, idx_SxB: np.ndarray, w_SxB: np.ndarray) -> Any:
        idx, weight = self.inner.plan(idx_SxB, w_SxB)
        cols = sorted({shard.index[1].indices(idx.shape[1])[:2] for shard in idx.addressable_shards})
        fed = sum(stop - start for start, stop in cols)
        assert fed == cols[-1][1] - cols[0][0], f"this process's columns are not contiguous: {cols}"
        self.plans.append([int(idx.shape[1]), int(cols[0][0]), int(cols[-1][1])])
        return idx, weight

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def problem() -> tuple[Any, Any, Any, Any]:
    """(model, optimizer, init key, dropout key): an MLP with dropout, so the step's key matters too."""
    import jax
    import optax

    from dlchapter.models.dense import MLP

    init_key, dropout_key = jax.random.split(jax.random.key(11))
    return MLP(widths=(16, 16), out_features=2, dropout=0.2, head="softmax"), optax.adam(1e-2), init_key, dropout_key


def flat_params(params: Any) -> dict[str, np.ndarray]:
    import jax

    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def _trainer_run(placement: Any, steps_per_call: int, validation: bool) -> dict[str, Any]:
    """The Trainer with `placement`: parameters, history, and with `validation` evaluation and predictions."""
    from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state

    x, y, x_val, y_val = data()
    model, tx, init_key, dropout_key = problem()
    recording = RecordingPlacement(placement)
    trainer = Trainer(TASKS["sparse_multiclass"], steps_per_call=steps_per_call, placement=recording)
    state = create_train_state(model, tx, x, init_key)
    config = FitConfig(epochs=EPOCHS, batch_size=BATCH, seed=SEED, progress=False)
    validation_data = (x_val, y_val) if validation else None
    state, history = trainer.fit(state, x, y, config, dropout_key, validation_data=validation_data)
    prefix = f"steps{steps_per_call}"
    out: dict[str, Any] = {f"{prefix}/{k}": v for k, v in flat_params(placement.fetch(state.params)).items()}
    logs = {k: v for k, v in history.values.items() if k != "epoch_seconds"}
    summary: dict[str, Any] = {"history": logs, "plans": recording.plans}
    if validation:
        summary["evaluate"] = trainer.evaluate(state, x_val, y_val)
        out[f"{prefix}_predict"] = trainer.predict(state, x_val)
    out[f"{prefix}_summary"] = np.asarray(json.dumps(summary))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=None, help="CPU devices in this process")
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    args = parser.parse_args(argv)

    import jax

    if args.devices:
        jax.config.update("jax_num_cpu_devices", args.devices)
    from dlchapter.engine import parallel

    joined = parallel.initialize_distributed(
        args.coordinator,
        args.num_processes,
        args.process_id,
        timeout_s=60,
        heartbeat_timeout_s=30,
        shutdown_timeout_s=30,
    )
    placement = parallel.DataParallel.create()
    results = _trainer_run(placement, 1, validation=False)
    results.update(_trainer_run(placement, TRAINER_STEPS_PER_CALL, validation=True))
    x, y = data()[:2]
    batch = placement.batch({"x": x[:5], "y": y[:5]})  # 5 rows fed as a batch: padded to a multiple of the devices
    rows = {
        "shape": batch["x"].shape,
        "weight_sum": float(placement.fetch(batch["weight"].sum())),
        "shard_rows": batch["x"].addressable_shards[0].data.shape[0],
    }
    layout = {**parallel.describe(placement.mesh), "joined": joined, "primary": parallel.is_primary(), "batch": rows}
    np.savez(args.out, layout=json.dumps(layout), **results)
    if joined:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
