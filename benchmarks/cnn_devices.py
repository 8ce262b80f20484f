"""The chapter CNN on one CPU device vs data parallel over N host devices, alternating processes.

    python -m benchmarks.cnn_devices --devices 1,2 --rounds 5 --epochs 8

One process cannot mix device counts (`--xla_force_host_platform_device_count` is read when JAX
starts), so each round starts one child process per device count, in rotating order, and each child
times `Trainer.fit` (the library's loop, `steps_per_call` as given; the whole 24-step epoch in one call
by default) over `--epochs` epochs of the `mnist_cnn` spec's synthetic data (batch 64, rmsprop). With
N > 1 devices the trainer has `placement=DataParallel.create()`: each device takes 64/N rows of every
batch, the gradient is all-reduced. Per child: the median over
its warm epochs (the first is dropped) of wall (`History`'s epoch_seconds) and process CPU ms per step
(the whole `fit` call); per device count: the median [min-max] over rounds, and the per-round ratio of
each count's wall to the first count's. Prints one JSON line per child and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(n_devices: int, epochs: int, steps_per_call: int | None) -> dict:
    if n_devices > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    import jax

    from benchmarks.specs import SPECS, synthetic_data
    from benchmarks.throughput import build
    from dlchapter.engine.parallel import DataParallel
    from dlchapter.engine.train import FitConfig

    spec = SPECS["mnist_cnn"]
    trainer, state, _ = build(spec, steps_per_call)
    if n_devices > 1:
        trainer.placement = DataParallel.create()
    x, y = synthetic_data(spec)
    walls, cpus = [], []
    for epoch in range(epochs):
        cfg = FitConfig(epochs=1, batch_size=spec.batch_size, progress=False)
        c0 = time.process_time()
        state, hist = trainer.fit(state, x, y, cfg, jax.random.key(epoch))
        jax.block_until_ready(state)
        cpu = time.process_time() - c0
        if epoch:  # the first epoch compiles
            walls.append(hist.values["epoch_seconds"][-1] / spec.steps_per_epoch * 1e3)
            cpus.append(cpu / spec.steps_per_epoch * 1e3)
    loss = float(hist.values["loss"][-1])
    return {
        "devices": n_devices,
        "devices_seen": jax.device_count(),
        "wall_ms": statistics.median(walls),
        "cpu_ms": statistics.median(cpus),
        "loss": loss,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="1,2", help="comma-separated host device counts")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8, help="epochs per child (the first is dropped)")
    ap.add_argument("--steps-per-call", type=int, default=0, help="0: the whole epoch in one call")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    spc = args.steps_per_call or None
    if args.child:
        print(json.dumps(child(args.child, args.epochs, spc)), flush=True)
        return
    counts = [int(n) for n in args.devices.split(",")]
    results: dict[int, list[dict]] = {n: [] for n in counts}
    for r in range(args.rounds):
        order = counts[r % len(counts) :] + counts[: r % len(counts)]
        for n in order:
            cmd = [sys.executable, "-m", "benchmarks.cnn_devices", "--child", str(n), "--epochs", str(args.epochs)]
            cmd += ["--steps-per-call", str(args.steps_per_call)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ.copy())
            if out.returncode:
                sys.exit(f"error: child with {n} devices failed:\n{out.stderr[-2000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[n].append(res)
            print(json.dumps({"round": r, **res}), flush=True)
    base = results[counts[0]]
    for n in counts:
        rs = results[n]
        wall, cpu = [r["wall_ms"] for r in rs], [r["cpu_ms"] for r in rs]
        ratio = [r["wall_ms"] / b["wall_ms"] for r, b in zip(rs, base, strict=True)]
        print(
            f"{n} device(s): wall {statistics.median(wall):.2f} [{min(wall):.2f}-{max(wall):.2f}] ms/step, "
            f"CPU {statistics.median(cpu):.2f} [{min(cpu):.2f}-{max(cpu):.2f}], "
            f"wall / {counts[0]} device(s) {statistics.median(ratio):.3f} [{min(ratio):.3f}-{max(ratio):.3f}]"
        )


if __name__ == "__main__":
    main()
