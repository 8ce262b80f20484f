"""A small data-parallel training run, started as a subprocess by tests/test_parallel.py.

    python -m tests.parallel_worker OUT.npz --devices 4
        one process with 4 CPU devices (set before JAX starts)
    python -m tests.parallel_worker OUT.npz --coordinator 127.0.0.1:PORT --num-processes 2 --process-id I
        one of several processes joined with jax.distributed (gloo collectives on CPU)

Trains `problem()`'s MLP with `parallel.fit_data_parallel` over every device
of every process and writes the final parameters (this process's replica),
the per-epoch logs and the run's layout to OUT.npz. Where the Trainer takes a
`placement` (the issue-9 patch), it also trains with
`Trainer(placement=DataParallel.create())` (validation data, several steps per
call, evaluate, predict) and writes those results under "trainer/". The test
trains the same problem on one device with the Trainer and compares.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Any

import numpy as np

EPOCHS, BATCH, SEED, N_FIT = 3, 25, 3, 160
TRAINER_STEPS_PER_CALL = 3  # 7 batches an epoch: padded with 2 all-zero batches, run in lax.scan
LOSS, METRICS = "sparse_categorical_crossentropy", ("accuracy",)


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_fit, y_fit, x_val, y_val): 160 training rows (the last batch has 10) and 43 validation rows, two classes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(203, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return x[:N_FIT], y[:N_FIT], x[N_FIT:], y[N_FIT:]


def trainer_takes_placement() -> bool:
    """Whether `Trainer` has the data-parallel hook (the issue-9 patch to dlchapter/train.py)."""
    from dlchapter.train import Trainer

    return "placement" in inspect.signature(Trainer).parameters


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


def _trainer_run(placement: Any) -> dict[str, np.ndarray]:
    """The Trainer with `placement`: parameters, history, evaluation and predictions."""
    from dlchapter.train import TASKS, FitConfig, Trainer, create_train_state

    x, y, x_val, y_val = data()
    model, tx, init_key, dropout_key = problem()
    trainer = Trainer(TASKS["sparse_multiclass"], steps_per_call=TRAINER_STEPS_PER_CALL, placement=placement)
    state = create_train_state(model, tx, x, init_key)
    config = FitConfig(epochs=EPOCHS, batch_size=BATCH, seed=SEED, progress=False)
    state, history = trainer.fit(state, x, y, config, dropout_key, validation_data=(x_val, y_val))
    out = {f"trainer/{k}": v for k, v in flat_params(placement.fetch(state.params)).items()}
    out["trainer_history"] = np.asarray(json.dumps({k: v for k, v in history.values.items() if k != "epoch_seconds"}))
    out["trainer_evaluate"] = np.asarray(json.dumps(trainer.evaluate(state, x_val, y_val)))
    out["trainer_predict"] = trainer.predict(state, x_val)
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
    from dlchapter import parallel

    joined = parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id, timeout_s=60, heartbeat_timeout_s=30, shutdown_timeout_s=30)
    from dlchapter.train import create_train_state

    x, y, x_val, y_val = data()
    model, tx, init_key, dropout_key = problem()
    state = create_train_state(model, tx, x, init_key)
    placement = parallel.DataParallel.create()
    state, logs = parallel.fit_data_parallel(
        state, x, y, dropout_key, loss=LOSS, metrics=METRICS, epochs=EPOCHS, batch_size=BATCH, seed=SEED, placement=placement
    )
    results = {f"loop/{k}": v for k, v in flat_params(placement.fetch(state.params)).items()}
    if trainer_takes_placement():
        results.update(_trainer_run(placement))
    from dlchapter.loop import batch_plan, epoch_order

    idx, _ = placement.plan(*batch_plan(epoch_order(len(y), SEED, 0), BATCH))
    fed = sum(shard.data.shape[1] for shard in idx.addressable_shards)  # columns of each global batch this process holds
    batch = placement.batch({"x": x[:5], "y": y[:5]})  # 5 rows fed as a batch: padded to a multiple of the devices
    rows = {"shape": batch["x"].shape, "weight_sum": float(placement.fetch(batch["weight"].sum())), "shard_rows": batch["x"].addressable_shards[0].data.shape[0]}
    layout = {**parallel.describe(placement.mesh), "joined": joined, "primary": parallel.is_primary(), "global_batch": idx.shape[1], "fed_columns": fed, "batch": rows}
    np.savez(args.out, logs=json.dumps(logs), layout=json.dumps(layout), **results)
    if joined:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
