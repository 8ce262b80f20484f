"""The chapter CNN's three convolutions one by one: `conv_canonical` against `conv_im2col`, forward and backward.

    python -m benchmarks.cnn_layers [--rounds 9] [--batch 64] [--out benchmarks/results/cnn_layers-<device>.json]

Per convolution of `ChapterCNN` (its input shape at `--batch`), each implementation in
`dlchapter.models.conv_ops` runs as one jitted program of the forward pass and the gradients a
train step needs (dW always, dX for all but the first layer), compiled with the Trainer's CPU options.
Programs are interleaved round by round; reported: wall and process CPU ms per call, median
[min-max], and the patch matrix's size, which is what `IM2COL_MAX_PATCH_BYTES` decides on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LAYERS = (((28, 28, 1), 32), ((13, 13, 32), 64), ((5, 5, 64), 128))  # (input H, W, C), output channels
REPEATS = 10  # calls per timing, so dispatch is a small part


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dlchapter.engine.train import CPU_COMPILER_OPTIONS
    from dlchapter.models.conv_ops import conv_canonical, conv_im2col

    options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    rng = np.random.default_rng(0)
    programs, patch_mib = {}, {}
    for i, ((h, w, c), f) in enumerate(LAYERS):
        x = jnp.asarray(rng.random((args.batch, h, w, c), np.float32))
        k = jnp.asarray(rng.normal(size=(3, 3, c, f)).astype(np.float32))
        g = jnp.asarray(rng.normal(size=(args.batch, h - 2, w - 2, f)).astype(np.float32))
        patch_mib[f"conv_{i}"] = args.batch * (h - 2) * (w - 2) * 9 * c * 4 / 2**20
        for name, conv in (("canonical", conv_canonical), ("im2col", conv_im2col)):

            def step(x, k, g, conv=conv, first=i == 0):
                if first:  # the first layer's input needs no gradient
                    y, vjp = jax.vjp(lambda k: conv(x, k), k)
                else:
                    y, vjp = jax.vjp(conv, x, k)
                return y, vjp(g)

            programs[f"conv_{i} {name}"] = (jax.jit(step, compiler_options=options), (x, k, g))
    for fn, a in programs.values():
        jax.block_until_ready(fn(*a))
    wall: dict[str, list[float]] = {k: [] for k in programs}
    cpu: dict[str, list[float]] = {k: [] for k in programs}
    names = list(programs)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, a = programs[name]
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(REPEATS):
                out = fn(*a)
            jax.block_until_ready(out)
            wall[name].append((time.perf_counter() - started) / REPEATS * 1e3)
            cpu[name].append((time.process_time() - cpu_started) / REPEATS * 1e3)

    def stats(v):
        return {"median": statistics.median(v), "min": min(v), "max": max(v)}

    report = {
        "command": " ".join(["python -m benchmarks.cnn_layers", *(sys.argv[1:] if argv is None else argv)]),
        "load_end": os.getloadavg()[0],
        "batch": args.batch,
        "patch_mib": patch_mib,
        "wall_ms": {k: stats(v) for k, v in wall.items()},
        "cpu_ms": {k: stats(v) for k, v in cpu.items()},
    }
    title = f"forward + train-step gradients (batch {args.batch}; load {report['load_end']:.2f})"
    lines = [
        f"## Chapter CNN convolutions, {title}",
        "",
        "| layer, implementation | patch MiB | wall ms | CPU ms |",
        "|---|---|---|---|",
    ]
    for k in names:
        w_, c_ = report["wall_ms"][k], report["cpu_ms"][k]
        lines.append(
            f"| {k} | {patch_mib[k.split()[0]]:.2f} | {w_['median']:.3f} [{w_['min']:.3f}-{w_['max']:.3f}] | "
            f"{c_['median']:.3f} [{c_['min']:.3f}-{c_['max']:.3f}] |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return report


if __name__ == "__main__":
    main()
