"""What `fit`'s input gate (`dlchapter.engine.input_checks`, `Trainer.check_inputs`) costs, beside one warm epoch.

    PYTHONPATH=$PWD python -m benchmarks.input_checks_cost --rounds 5

Two cases at the chapter's sizes: MNIST's CNN data (60,000 x 28 x 28 x 1 float32, sparse labels, the
chapter's CNN, batch 64) and the diamonds MLP's (53,940 x 26 float32 regression, batch 128), on synthetic
data of those shapes. Per round and case: the gate on a fresh Trainer (x finite, y's labels or widths, the
model's output struct by `jax.eval_shape`, the loss's scalar: the first fit's cost) and on the same Trainer
again (output struct cached), then, once, a warm epoch of `Trainer.train_program` for scale (host time, after
`block_until_ready`). Prints medians [min-max] in ms.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import numpy as np
import optax

from dlchapter.engine.loop import batch_plan
from dlchapter.engine.train import TASKS, Trainer, create_train_state
from dlchapter.models.conv import ChapterCNN
from dlchapter.models.dense import MLP


def _cases() -> dict:
    rng = np.random.default_rng(0)
    images = rng.random((60_000, 28, 28, 1), dtype=np.float32)
    digits = rng.integers(0, 10, 60_000).astype(np.int32)
    table = rng.normal(size=(53_940, 26)).astype(np.float32)
    price = rng.normal(size=53_940).astype(np.float32)
    return {
        "mnist_cnn": (TASKS["sparse_multiclass"], ChapterCNN(), images, digits, 64),
        "diamonds_mlp": (TASKS["regression"], MLP((200, 200, 200, 200), 1), table, price, 128),
    }


def _epoch_ms(trainer: Trainer, state, x, y, batch: int) -> float:
    steps = math.ceil(len(x) / batch)
    idx, w = batch_plan(np.arange(len(x)), batch)
    data = {"x": jax.device_put(x), "y": jax.device_put(y)}
    sums = trainer._zero_sums(state, data, batch)
    program = trainer.train_program(steps)
    args = lambda s: (s, sums, np.int32(-1), data, idx, w, 0, jax.random.key(1))  # noqa: E731
    state, *_ = program(*args(state))  # compile and warm up
    jax.block_until_ready(state)
    started = time.perf_counter()
    state, *_ = program(*args(state))
    jax.block_until_ready(state)
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epoch", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), rounds {args.rounds}")
    for name, (task, model, x, y, batch) in _cases().items():
        state = create_train_state(model, optax.adam(1e-3), x, jax.random.key(0))
        first, again = [], []
        for _ in range(args.rounds):
            trainer = Trainer(task)
            for times in (first, again):
                started = time.perf_counter()
                trainer.check_inputs(state, x, y, batch, "fit")
                times.append((time.perf_counter() - started) * 1e3)
        line = f"{name}: x {x.shape} batch {batch}: gate first {statistics.median(first):.1f} ms "
        line += f"[{min(first):.1f}-{max(first):.1f}], again {statistics.median(again):.1f} ms "
        line += f"[{min(again):.1f}-{max(again):.1f}]"
        if args.epoch:
            line += f"; one warm epoch {_epoch_ms(Trainer(task), state, x, y, batch):.0f} ms"
        print(line, flush=True)


if __name__ == "__main__":
    main()
