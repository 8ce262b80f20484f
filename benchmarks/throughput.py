"""Training and evaluation throughput of the chapter's models: ours (JAX/Flax) beside Keras 3 and PyTorch.

Full run (documented command; peers need the `[peers]` extra, best in their own venv)::

    python3 -m venv /work/peers-venv && /work/peers-venv/bin/pip install -e '.[peers]'
    /work/peers-venv/bin/python -m benchmarks.throughput

Smoke size (what the test suite runs; no peers)::

    python -m benchmarks.throughput --smoke --peers none --out-dir /tmp/bench

For each model of `benchmarks.specs` and each training-loop variant ("step":
one jitted step per call; "fused8": 8 steps in one `lax.scan` per call;
"epoch": the whole epoch in one `lax.scan`) it reports the trace+lowering and
the compile times of the train program (separately), the first call, the
warm step time (median over timed blocks of one epoch each, after warm-up,
ended by `block_until_ready`), samples per second, evaluation throughput
(`Trainer.evaluate_on_device`, batch 1024), XLA's memory estimate of the
program and the process's peak RSS. Our step runs through the library's own
code path: `Trainer.train_program(n)` on device-resident data walking a
`batch_plan` index matrix, exactly as `Trainer.fit` calls it. Every model (and
every peer) runs in its own process, so peak RSS is per model and Keras can
pick its backend. Results go to `benchmarks/results/<device>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.specs import EVAL_BATCH, SPECS, ModelSpec, epoch_orders, smoke, synthetic_data

ROOT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, int | None] = {"step": 1, "fused8": 8, "epoch": None}
PEERS = ("keras_tf", "keras_jax", "torch")


# ---------------------------------------------------------------- ours
def build(spec: ModelSpec, steps_per_call: int | None, cpu_compiler_options: Any = "model") -> tuple[Any, Any, Any]:
    """(trainer, initial state, model) for `spec`, through the library's factories.

    `cpu_compiler_options`: "model" for the model's own `cpu_compiler_options()` where it has one (as the
    runs pass it), else the Trainer's argument (None: `trainer_programs.CPU_COMPILER_OPTIONS` as read then).
    """
    import jax  # noqa: PLC0415 - keeps this module importable where only a peer framework is wanted

    from dlchapter.engine.optim import OptimizerConfig, make_optimizer
    from dlchapter.engine.train import TASKS, Trainer, create_train_state
    from dlchapter.models.conv import ChapterCNN
    from dlchapter.models.dense import MLP
    from dlchapter.models.recurrent import RecurrentNet

    if spec.kind == "mlp":
        dropout = spec.dropout or 0.0
        model = MLP(widths=spec.hidden, out_features=spec.out_features, dropout=dropout, head=TASKS[spec.task].head)
    elif spec.kind == "cnn":
        model = ChapterCNN()
    else:
        model = RecurrentNet(cell=spec.kind, hidden=spec.hidden[0], out_features=spec.out_features)
    optimizer = OptimizerConfig(spec.optimizer, spec.learning_rate, clip_global_norm=spec.clip_global_norm)
    tx = make_optimizer(optimizer, spec.steps_per_epoch)
    x, _ = synthetic_data(spec, 2)
    state = create_train_state(model, tx, x, jax.random.key(0))
    options = cpu_compiler_options
    if isinstance(cpu_compiler_options, str) and cpu_compiler_options == "model":  # as the runs pass it
        options = getattr(model, "cpu_compiler_options", lambda: None)()
    trainer = Trainer(
        TASKS[spec.task], steps_per_call=steps_per_call, eval_batch_size=EVAL_BATCH, cpu_compiler_options=options
    )
    return trainer, state, model


def trainer_epoch(
    trainer: Any, state: Any, spec: ModelSpec, steps_per_call: int | None, *, first_call: bool = False
) -> Any:
    """`epoch(order)`: one epoch of `trainer`'s train program as `Trainer.fit` runs it (the index plan of `order`,
    `steps_per_call` steps per call; the whole epoch for None), on `spec`'s synthetic data, blocked until done.

    With `first_call`, the program is called once now, so it is traced and compiled while a caller's module
    patches are still in place.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dlchapter.engine.loop import batch_plan

    x, y = synthetic_data(spec)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    n_steps = min(steps_per_call or spec.steps_per_epoch, spec.steps_per_epoch)
    program = trainer.train_program(n_steps)
    key, nonfinite = jax.random.key(1), jnp.asarray(-1, jnp.int32)
    carried = [state, trainer._zero_sums(state, data, spec.batch_size), nonfinite]

    def epoch(order: np.ndarray) -> None:  # the body of Trainer.fit's epoch loop
        idx, weight = batch_plan(order, spec.batch_size, n_steps)
        idx_dev, w_dev = jnp.asarray(idx), jnp.asarray(weight)
        for start in range(0, idx.shape[0], n_steps):
            carried[:] = program(*carried, data, idx_dev, w_dev, start, key)
        jax.block_until_ready(carried[:2])

    if first_call:
        idx, weight = batch_plan(np.arange(spec.n_rows), spec.batch_size, n_steps)
        carried[:] = program(*carried, data, jnp.asarray(idx), jnp.asarray(weight), 0, key)
        jax.block_until_ready(carried[:2])
    return epoch


def measure_ours(spec: ModelSpec, variant: str, blocks: int, warmup: int) -> dict[str, Any]:
    """Compile and warm step times of one loop variant, timed as `Trainer.fit` runs it."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dlchapter.engine.loop import batch_plan

    requested = VARIANTS[variant]
    trainer, state, _ = build(spec, requested)
    x, y = synthetic_data(spec)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    n_steps = min(requested or spec.steps_per_epoch, spec.steps_per_epoch)
    program = trainer.train_program(n_steps)
    key, nonfinite = jax.random.key(1), jnp.asarray(-1, jnp.int32)
    sums = trainer._zero_sums(state, data, spec.batch_size)
    idx, weight = batch_plan(np.arange(spec.n_rows), spec.batch_size, n_steps)
    args = (state, sums, nonfinite, data, jnp.asarray(idx), jnp.asarray(weight), 0, key)
    started = time.perf_counter()
    lowered = program.lower(*args)
    lower_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - started
    memory = compiled.memory_analysis()
    started = time.perf_counter()
    state, sums, nonfinite = program(*args)
    jax.block_until_ready(state)
    first_call_s = time.perf_counter() - started

    def epoch(order: np.ndarray) -> None:  # the body of Trainer.fit's epoch loop
        nonlocal state, sums, nonfinite
        idx, weight = batch_plan(order, spec.batch_size, n_steps)
        idx_dev, w_dev = jnp.asarray(idx), jnp.asarray(weight)
        for start in range(0, idx.shape[0], n_steps):
            state, sums, nonfinite = program(state, sums, nonfinite, data, idx_dev, w_dev, start, key)
        jax.block_until_ready((state, sums))

    times = []
    for i, order in enumerate(epoch_orders(spec.n_rows, blocks + warmup)):
        started = time.perf_counter()
        epoch(order)
        if i >= warmup:
            times.append((time.perf_counter() - started) / spec.steps_per_epoch * 1e3)
    eval_data = {"x": data["x"], "y": data["y"]}
    eval_s = []
    for _ in range(3):  # the first compiles the eval program
        started = time.perf_counter()
        trainer.evaluate_on_device(state, eval_data)
        eval_s.append(time.perf_counter() - started)
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    step_ms = statistics.median(times)
    return {
        "variant": variant,
        "steps_per_call": requested,
        "steps_fused": n_steps,
        "lower_s": lower_s,
        "compile_s": compile_s,
        "first_call_s": first_call_s,
        "step_ms": step_ms,
        "step_ms_blocks": times,
        "samples_per_s": spec.batch_size / step_ms * 1e3,
        "eval_samples_per_s": spec.n_rows / statistics.median(eval_s[1:]),
        "xla_temp_mib": memory.temp_size_in_bytes / 2**20 if memory else None,
        "xla_args_out_mib": (memory.argument_size_in_bytes + memory.output_size_in_bytes) / 2**20 if memory else None,
        "device_peak_mib": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
        "traces": dict(trainer.traces),
    }


def run_ours(spec: ModelSpec, variants: Sequence[str], blocks: int, warmup: int) -> dict[str, Any]:
    """Every variant of one model in this process, plus the facts of the process."""
    from benchmarks.peers import peak_rss_mib

    results = {v: measure_ours(spec, v, blocks, warmup) for v in variants}
    return {
        "framework": "ours",
        "model": spec.name,
        "variants": results,
        "peak_rss_mib": peak_rss_mib(),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    import flax
    import jax
    import jaxlib
    import optax

    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": str(jax.device_count()),
    }


# ---------------------------------------------------------------- orchestration
def _subprocess(
    argv: list[str], python: str, timeout: float, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a worker module and parse its last stdout line as JSON (an error dict if it failed)."""
    env = {**os.environ, **(extra_env or {})}
    try:
        proc = subprocess.run([python, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def device_name(info: dict[str, Any]) -> str:
    """A file-name slug for the device: 'cpu-amd-epyc-2core' or e.g. 'gpu-nvidia-h100'."""
    if info["backend"] == "cpu":
        return re.sub(r"[^a-z0-9]+", "-", f"cpu {machine()['cpu']} {os.cpu_count()}core".lower()).strip("-")
    return re.sub(r"[^a-z0-9]+", "-", f"{info['backend']} {info['device_kind']}".lower()).strip("-")


def best_variant(ours: dict[str, Any]) -> str | None:
    """The fastest variant measured (None if none was)."""
    names = list(ours.get("variants", {}))
    return min(names, key=lambda v: ours["variants"][v]["step_ms"]) if names else None


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Of one measurement repeated over rounds, the run with the median step time.

    `step_ms_rounds` keeps every round's step time in round order, None where that round failed, so round r of
    ours and round r of a peer (measured minutes apart) can be paired (`paired_ratios`).
    """
    ok = sorted((r for r in runs if "step_ms" in r), key=lambda r: r["step_ms"])
    if not ok:
        return runs[-1]
    return {**ok[(len(ok) - 1) // 2], "step_ms_rounds": [r.get("step_ms") for r in runs]}


def _combine_ours(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "variants" in r]
    if not ok:
        return runs[-1]
    variants = {v: _median_run([r.get("variants", {}).get(v, {}) for r in runs]) for v in ok[0]["variants"]}
    return {**ok[0], "variants": variants, "peak_rss_mib": max(r["peak_rss_mib"] for r in ok)}


def paired_ratios(ours: dict[str, Any], peer: dict[str, Any]) -> list[float]:
    """ours / peer step time within each round both measured (ours: one variant's `_median_run`).

    The rounds alternate frameworks, so a round's two numbers are minutes apart; the ratio of the two medians can
    mix a fast round of one with a slow round of the other when the machine's speed drifts (on the shared 2-core
    CPU here the same program has run 1.8x slower for minutes at a time, load average unchanged).
    """
    pairs = zip(ours.get("step_ms_rounds", []), peer.get("step_ms_rounds", []))
    return [a / b for a, b in pairs if a is not None and b is not None]


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run ours and every peer per model, `args.rounds` times over (models and frameworks alternate)."""
    worker_flags = ["--blocks", str(args.blocks), "--warmup", str(args.warmup)] + (["--smoke"] if args.smoke else [])
    loads = [os.getloadavg()[0]]
    runs: dict[str, dict[str, list]] = {name: {"ours": [], **{p: [] for p in args.peers}} for name in args.models}
    for round_ in range(args.rounds):
        for name in args.models:
            spec = smoke(SPECS[name]) if args.smoke else SPECS[name]
            if args.in_process:
                runs[name]["ours"].append(run_ours(spec, args.variants, args.blocks, args.warmup))
            else:
                runs[name]["ours"].append(
                    _subprocess(
                        [
                            "-m",
                            "benchmarks.throughput",
                            "--worker",
                            name,
                            "--variants",
                            ",".join(args.variants),
                            *worker_flags,
                        ],
                        sys.executable,
                        args.timeout,
                        {"XLA_FLAGS": args.xla_flags} if args.xla_flags else None,
                    )
                )
            for framework in args.peers:
                runs[name][framework].append(
                    _subprocess(
                        ["-m", "benchmarks.peers", "--framework", framework, "--model", name, *worker_flags],
                        args.peers_python,
                        args.timeout,
                    )
                )
            loads.append(os.getloadavg()[0])
            print(f"round {round_ + 1}/{args.rounds} {name}: done (load {loads[-1]:.2f})", file=sys.stderr)
            if args.partial_dir is not None:  # a run cut short still leaves what it measured
                write(_assemble(args, runs, loads), args.partial_dir, args.partial_name)
    return _assemble(args, runs, loads)


def _assemble(args: argparse.Namespace, runs: dict[str, dict[str, list]], loads: list[float]) -> dict[str, Any]:
    """The report from every run so far (models not yet measured are left out)."""
    results = {}
    for name in args.models:
        if not runs[name]["ours"]:
            continue
        spec = smoke(SPECS[name]) if args.smoke else SPECS[name]
        peers = {p: _median_run(runs[name][p]) for p in args.peers if runs[name][p]}
        results[name] = {"spec": dict(vars(spec)), "ours": _combine_ours(runs[name]["ours"]), "peers": peers}
    first = results[next(iter(results))]["ours"] if results else {}
    info = first.get("versions") or versions()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.throughput", *args.argv]),
        "machine": machine(),
        "versions": info,
        "xla_flags": args.xla_flags or os.environ.get("XLA_FLAGS", ""),
        "load_avg": {
            "start": loads[0],
            "end": loads[-1],
            "max": max(loads),
            "min": min(loads),
            "median": statistics.median(loads),
        },
        "rounds": args.rounds,
        "smoke": args.smoke,
        "models": results,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _ratio(ours: float, peer: dict[str, Any]) -> str:
    return f"{ours / peer['step_ms']:.3g}" if "step_ms" in peer else "-"


def _peer_cell(peer: dict[str, Any]) -> str:
    if "step_ms" in peer:
        return _ms(peer["step_ms"])
    return "skipped" if "skipped" in peer else "error"


def _paired_lines(report: dict[str, Any], peers: list[str]) -> list[str]:
    """Per-round ratios ours / peer (`paired_ratios`), median [min-max], where two or more rounds paired up."""
    rows = []
    for name, row in report["models"].items():
        best = best_variant(row["ours"])
        cells = []
        for p in peers:
            ratios = paired_ratios(row["ours"]["variants"][best], row["peers"].get(p, {})) if best else []
            cells.append(
                f"{statistics.median(ratios):.3g} [{min(ratios):.3g}-{max(ratios):.3g}]" if len(ratios) > 1 else "-"
            )
        if any(c != "-" for c in cells):
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "Within each round (ours and the peer minutes apart; median [min-max] over rounds of ours / peer):",
        "",
        "| model | " + " | ".join(peers) + " |",
        "|" + "---|" * (1 + len(peers)),
        *rows,
        "",
    ]


def markdown(report: dict[str, Any], walltime: dict[str, Any] | None = None) -> str:
    """The results as Markdown: headline table with ratios, loop variants, compile/eval/memory."""
    v, m, load = report["versions"], report["machine"], report["load_avg"]
    peers = sorted({p for row in report["models"].values() for p in row["peers"]}, key=PEERS.index)
    lines = [
        f"# Throughput on {v['device_kind']} ({m['cpu']}, {m['cores']} cores)",
        "",
        f"{report['date']}; jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, optax "
        f"{v['optax']}; backend {v['backend']}; "
        f"load average {load['start']:.2f} at start, {load['end']:.2f} at end (median "
        f"{load.get('median', load['max']):.2f}, max {load['max']:.2f}); "
        f"{report.get('rounds', 1)} round(s), each cell its median round (of two, the faster); "
        f"XLA_FLAGS={report['xla_flags']!r}{' (smoke size)' if report['smoke'] else ''}.",
        "",
        f"Command: `{report['command']}`",
        "",
        "## Training step (ms, median over epochs; ratio = ours / peer, below 1 means we are faster)",
        "",
    ]
    head = "| model | batch | ours (variant) | " + " | ".join(f"{p} | ratio" for p in peers) + " |"
    lines += [head, "|" + "---|" * (3 + 2 * len(peers))]
    notes = []
    for name, row in report["models"].items():
        ours = row["ours"]
        if "variants" not in ours:
            lines.append(
                f"| {name} | {row['spec']['batch_size']} | error | " + " | ".join("- | -" for _ in peers) + " |"
            )
            notes.append(f"- {name}: {ours.get('error', ours)}")
            continue
        best = best_variant(ours)
        step = ours["variants"][best]["step_ms"] if best else None
        cells = [f"{_peer_cell(row['peers'][p])} | {_ratio(step, row['peers'][p]) if best else '-'}" for p in peers]
        lines.append(
            f"| {name} | {row['spec']['batch_size']} | {_ms(step)} ({best or '-'}) | " + " | ".join(cells) + " |"
        )
        notes += [
            f"- {name} / {p}: {r.get('skipped') or r.get('error')}"
            for p, r in row["peers"].items()
            if "step_ms" not in r
        ]
    measured = [v for v in VARIANTS if any(v in r["ours"].get("variants", {}) for r in report["models"].values())]
    lines += ["", *notes, *_paired_lines(report, peers)]
    lines += [
        "",
        "## Our training-loop variants (ms per step; steps fused per call)",
        "",
        "| model | " + " | ".join(measured) + " | best |",
        "|" + "---|" * (len(measured) + 2),
    ]
    for name, row in report["models"].items():
        variants = row["ours"].get("variants", {})
        cells = [
            f"{_ms(variants[k]['step_ms'])} ({variants[k]['steps_fused']})" if k in variants else "-" for k in measured
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best_variant(row['ours']) or '-'} |")
    lines += [
        "",
        "## Compile, evaluation, memory",
        "",
        "| model | framework | trace+lower s | compile s | first call s | train samples/s | eval "
        "samples/s | XLA temp MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["models"].items():
        for variant, r in row["ours"].get("variants", {}).items():
            lines.append(
                f"| {name} | ours/{variant} | {r['lower_s']:.2f} | {r['compile_s']:.2f} | "
                f"{r['first_call_s']:.2f} | {r['samples_per_s']:,.0f} | "
                f"{r['eval_samples_per_s']:,.0f} | {_ms(r['xla_temp_mib'])} | {row['ours']['peak_rss_mib']:.0f} |"
            )
        for p, r in row["peers"].items():
            if "step_ms" in r:
                lines.append(
                    f"| {name} | {p} | - | {r['compile_s']:.2f} (1st epoch - warm) | - | {r['samples_per_s']:,.0f} | "
                    f"{r['eval_samples_per_s']:,.0f} | - | {r['peak_rss_mib']:.0f} |"
                )
    peer_versions = {
        p: r["versions"] for row in report["models"].values() for p, r in row["peers"].items() if "versions" in r
    }
    if peer_versions:
        lines += [
            "",
            "Peers: "
            + "; ".join(f"{p}: " + ", ".join(f"{k} {val}" for k, val in pv.items()) for p, pv in peer_versions.items())
            + ".",
        ]
    if walltime:
        from benchmarks.diamonds_walltime import markdown as walltime_markdown

        lines += ["", *walltime_markdown(walltime)]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md_path.write_text(markdown(report, report.get("diamonds_walltime")))
    return json_path, md_path


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(SPECS), help="comma-separated, among: " + ", ".join(SPECS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, among: " + ", ".join(VARIANTS))
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated, among: " + ", ".join(PEERS) + "; or none"
    )
    parser.add_argument("--peers-python", default=sys.executable, help="the python that has the [peers] extra")
    parser.add_argument("--blocks", type=int, default=5, help="timed epochs per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs after the first call")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; each cell keeps its median round")
    parser.add_argument("--smoke", action="store_true", help="a few batches per model, for the test suite")
    parser.add_argument(
        "--in-process", action="store_true", help="run ours in this process (peak RSS is then the whole run's)"
    )
    parser.add_argument(
        "--walltime",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the whole diamonds experiment (default: on, off with --smoke)",
    )
    parser.add_argument("--xla-flags", default="", help="XLA_FLAGS for our worker processes only")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default=None, help="results file stem (default: named after the device)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.models = [m for m in args.models.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    args.peers = [] if args.peers in ("", "none") else args.peers.split(",")
    for value, known in ((args.models, SPECS), (args.variants, VARIANTS), (args.peers, PEERS)):
        unknown = [x for x in value if x not in known]
        if unknown:
            parser.error(f"unknown {unknown}; known: {', '.join(known)}")
    if args.walltime is None:
        args.walltime = not args.smoke
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.worker:
        spec = smoke(SPECS[args.worker]) if args.smoke else SPECS[args.worker]
        result = run_ours(spec, args.variants, args.blocks, args.warmup)
        print(json.dumps(result))
        return result
    args.partial_name = args.name or device_name(versions())
    args.partial_dir = None if args.in_process else args.out_dir
    report = collect(args)
    if args.walltime:
        from benchmarks.diamonds_walltime import measure as walltime

        report["diamonds_walltime"] = walltime(
            peers_python=args.peers_python if args.peers else None, repeats=args.rounds
        )
    paths = write(report, args.out_dir, args.partial_name)
    print(f"wrote {paths[0]} and {paths[1]}")
    return report


if __name__ == "__main__":
    main()
