"""Where the diamonds MLP's training step goes: its parts timed in one process, against the FLOP floor.

    python -m benchmarks.mlp_breakdown [--rounds 15] [--out benchmarks/results/mlp_breakdown-<device>.json]

Parts, each a jitted program over 24 steps (a `lax.fori_loop`, so dispatch is paid once), with
the library's CPU compiler options (Eigen dots) and with XLA's defaults (YNNPACK dots):
``forward`` (the MLP on a batch), ``grad`` (value and gradient of the MSE), ``grad+adam``
(plus optax's adam update), and ``trainer`` (the library's `Trainer.train_program` over the same
24 steps: batch gather from device data, metrics, non-finite check). Reported: wall and process
CPU ms per step (median [min-max] over rounds, parts interleaved), and the floor: 6 x parameters x
batch FLOPs (forward 2, backward 4) at the machine's peak, 2 cores x 2 AVX-512 FMA units x 16 fp32
lanes x 2 FLOPs x the clock (`--ghz`; the AMD EPYC here reports no clock, 3.0 GHz assumed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.specs import SPECS, synthetic_data

STEPS = 24


def programs(options: dict[str, str] | None) -> tuple[dict[str, tuple[Callable, tuple]], int]:
    """name -> (jitted program over STEPS steps, its arguments); and the parameter count."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks.throughput import build
    from dlchapter.engine import trainer_programs  # where the Trainer reads CPU_COMPILER_OPTIONS
    from dlchapter.engine.loop import batch_plan

    spec = SPECS["diamonds_mlp"]
    saved = trainer_programs.CPU_COMPILER_OPTIONS
    trainer_programs.CPU_COMPILER_OPTIONS = options or {}
    try:
        trainer, state, model = build(spec, STEPS)
    finally:
        trainer_programs.CPU_COMPILER_OPTIONS = saved
    x, y = synthetic_data(spec)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    b = spec.batch_size
    xb, yb = data["x"][:b], data["y"][:b]
    params, tx = state.params, optax.adam(1e-3)
    n_params = sum(p.size for p in jax.tree.leaves(params))

    def jit(f):
        return jax.jit(f, compiler_options=options or None)

    def loss(p):
        return jnp.mean((model.apply({"params": p}, xb)[:, 0] - yb) ** 2)

    def forward(p):
        return jax.lax.fori_loop(0, STEPS, lambda i, acc: acc + model.apply({"params": p}, xb + acc * 0)[0, 0], 0.0)

    def grad(p):
        return jax.lax.fori_loop(
            0, STEPS, lambda i, p: jax.tree.map(lambda a, g: a - 1e-9 * g, p, jax.grad(loss)(p)), p
        )

    def grad_adam(p, opt):
        def body(i, carry):
            p, opt = carry
            updates, opt = tx.update(jax.grad(loss)(p), opt, p)
            return optax.apply_updates(p, updates), opt

        return jax.lax.fori_loop(0, STEPS, body, (p, opt))

    program = trainer.train_program(STEPS)
    idx, weight = batch_plan(np.arange(STEPS * b), b, STEPS)
    sums = trainer._zero_sums(state, data, b)
    trainer_args = (
        state,
        sums,
        jnp.asarray(-1, jnp.int32),
        data,
        jnp.asarray(idx),
        jnp.asarray(weight),
        0,
        jax.random.key(1),
    )

    def keep(f):
        return lambda *a: f(*a)

    def copies():
        return jax.tree.map(jnp.copy, trainer_args[:3])

    return {
        "forward": (jit(forward), (params,)),
        "grad": (jit(grad), (params,)),
        "grad+adam": (jit(grad_adam), (params, tx.init(params))),
        "trainer": (keep(lambda: program(*copies(), *trainer_args[3:])), ()),
    }, n_params


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ghz", type=float, default=3.0, help="clock for the FLOP floor")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import jax

    from dlchapter.engine.train import CPU_COMPILER_OPTIONS

    runs: dict[str, tuple[Callable, tuple]] = {}
    for label, options in (("eigen", CPU_COMPILER_OPTIONS), ("ynn", None)):
        progs, n_params = programs(options)
        runs.update({f"{name} [{label}]": prog for name, prog in progs.items()})
    for fn, a in runs.values():
        jax.block_until_ready(fn(*a))
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, (fn, a) in runs.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(*a))
            wall[name].append((time.perf_counter() - started) / STEPS * 1e3)
            cpu[name].append((time.process_time() - cpu_started) / STEPS * 1e3)
    batch = SPECS["diamonds_mlp"].batch_size
    flops = 6 * n_params * batch
    floor_ms = flops / (2 * 2 * 16 * 2 * args.ghz * 1e9) * 1e3

    def stats(v):
        return {"median": statistics.median(v), "min": min(v), "max": max(v)}

    report = {
        "command": " ".join(["python -m benchmarks.mlp_breakdown", *(sys.argv[1:] if argv is None else argv)]),
        "load": os.getloadavg()[0],
        "params": n_params,
        "flops_per_step": flops,
        "floor_ms_2cores": floor_ms,
        "wall_ms": {k: stats(v) for k, v in wall.items()},
        "cpu_ms": {k: stats(v) for k, v in cpu.items()},
    }
    lines = [
        (
            f"## Diamonds MLP step, by part (batch {batch}; {n_params:,} parameters; {flops / 1e6:.0f} MFLOP per "
            f"step; floor {floor_ms:.2f} ms on 2 cores at {args.ghz} GHz; load {report['load']:.2f})"
        ),
        "",
        "| part [dots] | wall ms per step | CPU ms per step |",
        "|---|---|---|",
    ]
    for k in runs:
        w, c = report["wall_ms"][k], report["cpu_ms"][k]
        lines.append(
            f"| {k} | {w['median']:.3f} [{w['min']:.3f}-{w['max']:.3f}] | "
            f"{c['median']:.3f} [{c['min']:.3f}-{c['max']:.3f}] |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return report


if __name__ == "__main__":
    main()
