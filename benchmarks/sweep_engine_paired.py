"""The many-models engine of two checkouts, interleaved round by round: warm seconds per sweep.

    python -m benchmarks.sweep_engine_paired --before /work/main --after . [--n 64] [--epochs 20] [--rounds 3]

Each round runs one child process per checkout (the order alternates), so both see the same load on a
shared machine. A child builds the chapter's Pima network sweep on synthetic data of Pima's size (492
training and 122 validation rows, 8 features, binary; 8 -> 100 -> 8 -> 1, batch 32, no early stopping),
`SweepTrainer.fit`s N models once (compiles), then `--fits` more times, and reports the median warm
seconds (`SweepResult.run_seconds`, which includes fetching every epoch's metrics) and the compile seconds.
Output: per checkout the median over rounds with min and max, and the median per-round ratio after/before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, os, statistics, sys
import jax, numpy as np
from dlchapter.engine.sweep import ModelSpec, SweepConfig, SweepData, SweepTrainer
n, epochs, fits = (int(v) for v in sys.argv[1:4])
rng = np.random.default_rng(0)
x, x_val = rng.normal(size=(492, 8)).astype(np.float32), rng.normal(size=(122, 8)).astype(np.float32)
y, y_val = (x[:, 0] + x[:, 1] > 0).astype(np.float32), (x_val[:, 0] + x_val[:, 1] > 0).astype(np.float32)
trainer = SweepTrainer(SweepConfig("binary", (100, 8), epochs=epochs, batch_size=32, monitor=None))
specs = [ModelSpec(seed=i, learning_rate=float(r)) for i, r in enumerate(np.geomspace(3e-4, 3e-3, n))]
data = SweepData.holdout(x, y, x_val, y_val)
first = trainer.fit(specs, data)
runs = [trainer.fit(specs, data).run_seconds for _ in range(fits)]
print(json.dumps({"run_s": statistics.median(runs), "compile_s": first.compile_seconds,
                  "device": str(jax.devices()[0].device_kind)}))
"""


def _child(checkout: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.n), str(args.epochs), str(args.fits)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.abspath(checkout),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print a JSON summary (seconds are wall clock, warm, per sweep of N models)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for name in order:
            rows[name].append(_child(getattr(args, name), args))
    summary = {"n_models": args.n, "epochs": args.epochs, "device": rows["after"][0]["device"], "load": os.getloadavg()}
    for name, found in rows.items():
        runs = [f["run_s"] for f in found]
        summary[name] = {
            "run_s_median": statistics.median(runs),
            "min": min(runs),
            "max": max(runs),
            "compile_s_median": statistics.median(f["compile_s"] for f in found),
        }
    ratios = [a["run_s"] / b["run_s"] for a, b in zip(rows["after"], rows["before"])]
    summary["after_over_before"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
