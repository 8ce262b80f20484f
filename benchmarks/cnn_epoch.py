"""Seconds per epoch of 60,000 images for the chapter's CNN, measured through `Trainer.fit`: the GPU target's number.

    python -m benchmarks.cnn_epoch [--epochs 3] [--steps-per-call N] [--rows 60000] [--synthetic]

The chapter's CNN (rmsprop, sparse categorical cross-entropy, batch 64) on
Fashion-MNIST's 60,000 training images (synthetic images of the same shape
with `--synthetic` or when the data are not found). The train program is
compiled first and timed on its own (`Trainer.compile_train`); then `fit` runs
`--epochs` epochs and each epoch's wall time is `History`'s `epoch_seconds`
(it ends by fetching the epoch's metrics, so the device work is finished).
`--steps-per-call` is the Trainer's (default: the library's choice for this
backend, `dlchapter.runs.image_runs.resolve_steps_per_call`; 0 = the whole epoch
in one call). The target (issue: benchmarks) is under 1 s per epoch after
compilation on a GPU. Writes `benchmarks/results/cnn_epoch-<device>.json` (device named as in
`benchmarks.throughput`, e.g. cpu-amd-epyc-2core or gpu-nvidia-h100-80gb-hbm3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.throughput import device_name, versions
from dlchapter.data import DataError, load
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
from dlchapter.models.conv import ChapterCNN
from dlchapter.runs.image_runs import resolve_steps_per_call

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZE = 64


def images(rows: int, synthetic: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(x uint8→float32 in [0, 1], labels, where they came from): Fashion-MNIST, or seeded noise of its shape."""
    if not synthetic:
        try:
            ds = load("fashion_mnist", split="train", download=False)
            x, y = ds.x[:rows], ds.y[:rows]
            return (x.astype(np.float32) / 255.0)[..., None], y.astype(np.int32), ds.source
        except DataError:
            pass
    rng = np.random.default_rng(0)
    return rng.random((rows, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, rows).astype(np.int32), "synthetic"


def measure(rows: int, epochs: int, steps_per_call: int | None, synthetic: bool) -> dict[str, Any]:
    """Compile seconds and per-epoch seconds of `Trainer.fit` on `rows` images."""
    x, y, source = images(rows, synthetic)
    steps_per_epoch = -(-rows // BATCH_SIZE)
    model = ChapterCNN()
    tx = make_optimizer(OptimizerConfig("rmsprop"), steps_per_epoch)
    init_key, dropout_key = jax.random.split(jax.random.key(0))
    state = create_train_state(model, tx, x, init_key)
    trainer = Trainer(TASKS["sparse_multiclass"], steps_per_call=resolve_steps_per_call(steps_per_call))
    compile_s = trainer.compile_train(state, x, y, BATCH_SIZE, dropout_key)
    started = time.perf_counter()
    state, history = trainer.fit(
        state, x, y, FitConfig(epochs=epochs, batch_size=BATCH_SIZE, progress=False), dropout_key
    )
    jax.block_until_ready(state.params)
    total_s = time.perf_counter() - started
    seconds = history.values["epoch_seconds"]
    return {
        **versions(),
        "data": source,
        "rows": rows,
        "batch_size": BATCH_SIZE,
        "steps_per_epoch": steps_per_epoch,
        "steps_per_call": trainer.steps_per_call or steps_per_epoch,
        "compile_s": compile_s,
        "epoch_s": seconds,
        "warm_epoch_s": statistics.median(seconds[1:] or seconds),
        "fit_s": total_s,
        "final_accuracy": history.values["accuracy"][-1],
        "load_avg": os.getloadavg()[0],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--steps-per-call", type=int, default=None)
    parser.add_argument("--synthetic", action="store_true", help="seeded noise images instead of Fashion-MNIST")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.rows < BATCH_SIZE:
        parser.error(f"need --epochs >= 1 and --rows >= {BATCH_SIZE}")
    result = measure(args.rows, args.epochs, args.steps_per_call, args.synthetic)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"cnn_epoch-{device_name(result)}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['device_kind']}: compile {result['compile_s']:.2f} s, epoch of {result['rows']:,} images "
        f"{result['warm_epoch_s']:.2f} s warm (epochs: {', '.join(f'{s:.2f}' for s in result['epoch_s'])}; "
        f"{result['steps_per_call']} step(s) per call); wrote {path}"
    )
    return result


if __name__ == "__main__":
    main()
