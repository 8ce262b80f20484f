"""The host-side cost of `Trainer.fit`'s loop per compiled call, two checkouts interleaved round by round.

    python -m benchmarks.fit_overhead --trees /path/to/base/checkout,. --rounds 7

Each round runs, for every checkout in turn (the order rotates), a child process that trains a small MLP
(4,096 rows of 16 features, widths 64-64, batch 32: 128 steps per epoch) with `steps_per_call=1`, so every
step is one compiled call followed by the loop's host work (bar, hooks, checkpoint tests): the case where that
work weighs most. The child reports the median of its warm epochs' `epoch_seconds` (compilation is timed
apart by `fit` and epoch 1 is dropped) as microseconds per step. Printed: per checkout, the median over rounds
[min-max], and the per-round ratio of each checkout to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROWS, FEATURES, BATCH, EPOCHS = 4096, 16, 32, 5


def child() -> None:
    """Train, then print {"us_per_step": median over warm epochs} (runs in the checkout on PYTHONPATH)."""
    import jax
    import numpy as np
    import optax

    from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state
    from dlchapter.models.dense import MLP

    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = (x @ rng.normal(size=FEATURES)).astype(np.float32)
    state = create_train_state(MLP((64, 64), 1), optax.adam(1e-3), x, jax.random.key(0))
    trainer = Trainer(TASKS["regression"], steps_per_call=1)
    _, history = trainer.fit(state, x, y, FitConfig(epochs=EPOCHS, batch_size=BATCH, progress=False), jax.random.key(1))
    seconds = history.values["epoch_seconds"][1:]
    print(json.dumps({"us_per_step": statistics.median(seconds) / (ROWS // BATCH) * 1e6}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", default=".", help="comma-separated checkout roots; the first is the reference")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    script = str(Path(__file__).resolve())
    times: dict[str, list[float]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for tree in trees[r % len(trees) :] + trees[: r % len(trees)]:
            env = {**os.environ, "PYTHONPATH": tree}  # that checkout's dlchapter; this script's child()
            out = subprocess.run(
                [sys.executable, script, "--child"], capture_output=True, text=True, check=True, cwd=tree, env=env
            )
            times[tree].append(json.loads(out.stdout.splitlines()[-1])["us_per_step"])
    first = trees[0]
    print(
        f"fit loop, steps_per_call=1, MLP 64-64, batch {BATCH}; us per step, median [min-max] of {args.rounds} rounds"
    )
    for tree, values in times.items():
        ratios = [a / b for a, b in zip(times[first], values)]
        print(
            f"{tree}: {statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]; "
            f"ratio first/this {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
        )


if __name__ == "__main__":
    main()
