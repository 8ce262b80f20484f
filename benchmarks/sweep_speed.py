"""Many models in one program (`dlchapter.engine.sweep`) against one model at a time
(`dlchapter.engine.train.Trainer`).

    python -m benchmarks.sweep_speed [--repeats 5] [--out-dir benchmarks/results]
    python -m benchmarks.sweep_speed --smoke --out-dir /tmp/bench     # seconds; what a test may run

Workloads: the chapter's Pima network (8 -> 100 -> 8 -> 1, batch 32, 492
training and 122 validation rows) at N = 64 and the chapter's California
network (8 -> 100 -> dropout -> 200 -> 1, batch 128, ~12.5k training rows) at
N = 16. Every model runs a fixed number of epochs (no early stopping, so the
work is the same everywhere) and is validated after each epoch. Models differ
in seed and learning rate.

Timed (wall clock, `block_until_ready`/host fetch included, compile separate):
- sweep N: `SweepTrainer.fit` of N models, after a first call that compiled;
- Trainer x1: `Trainer.fit` of one model, its programs already compiled;
- loop x N, compiled once: N `Trainer.fit` calls sharing one model and
  optimizer (learning rate set in the optimizer state), states built off the
  clock: the best a Python loop can do;
- loop x N, as written: each fit builds its own model and optimizer, as
  `run_tabular` does, so each compiles again (a few fits timed, then scaled to N).
Then the scaling curve: time per epoch and per model-epoch for N = 1, 2, 4, ...;
the CPU is compute-bound where the time per model-epoch stops falling.
Every number is a median over `--repeats`; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.sweep import ModelSpec, SweepConfig, SweepData, SweepTrainer
from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state, split_validation
from dlchapter.models.dense import MLP
from dlchapter.presets import california, diabetes
from dlchapter.presets.run_configs import TabularConfig
from dlchapter.reporting.report import markdown_table
from dlchapter.runs.tabular_prep import prepare


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def _median(fn: Callable[[], float], repeats: int) -> tuple[float, list[float]]:
    times = [fn() for _ in range(repeats)]
    return statistics.median(times), times


def _workload(base: TabularConfig, rows: int | None) -> tuple[SweepConfig, SweepData, tuple]:
    arrays = prepare(base)
    fit = FitConfig(validation_split=base.validation_split, validation_mode=base.validation_mode, seed=base.seed)
    x, y, (x_val, y_val) = split_validation(
        arrays.x_train, arrays.y_train, fit, classification=base.task != "regression"
    )
    if rows:
        x, y = x[:rows], y[:rows]
    dropout_layers = tuple(i for i, r in enumerate(base.dropout) if r)
    config = SweepConfig(
        base.task,
        base.hidden,
        1,
        base.activation,
        dropout_layers,
        base.optimizer,
        batch_size=base.batch_size,
        monitor=None,
    )
    return config, SweepData.holdout(x, y, x_val, y_val), (x, y, x_val, y_val, base)


def _specs(n: int) -> list[ModelSpec]:
    rates = np.geomspace(3e-4, 3e-3, max(n, 2))
    return [ModelSpec(seed=i, learning_rate=float(rates[i]), dropout=0.2) for i in range(n)]


def time_sweep(config: SweepConfig, data: SweepData, n: int, repeats: int) -> dict[str, Any]:
    """Compile once, then the median wall time of `repeats` fits of n models."""
    trainer = SweepTrainer(config)
    specs = _specs(n)
    first = trainer.fit(specs, data)
    median, times = _median(lambda: trainer.fit(specs, data).run_seconds, repeats)
    return {
        "models": n,
        "compile_s": first.compile_seconds,
        "run_s": median,
        "runs": times,
        "ms_per_epoch": 1e3 * median / config.epochs,
        "us_per_model_epoch": 1e6 * median / config.epochs / n,
    }


def _trainer_fit(raw: tuple, epochs: int, spec: ModelSpec, shared: tuple | None) -> float:
    """Seconds of one single-model fit.

    shared = (model, tx, trainer), already compiled: only `Trainer.fit` is timed
    (the state is built before the clock starts). None: the fit as
    `run_tabular` writes it, timed whole: a new model and optimizer, the state
    (a jitted init), `Trainer.fit`; each of these compiles again.
    """
    x, y, x_val, y_val, base = raw
    started = time.perf_counter()
    model, tx, trainer = shared or (
        MLP(base.hidden, 1, dropout=base.dropout or 0.0, head=TASKS[base.task].head),
        make_optimizer(OptimizerConfig(base.optimizer, spec.learning_rate)),
        Trainer(TASKS[base.task]),
    )
    init_key, dropout_key = jax.random.split(jax.random.key(spec.seed))
    state = create_train_state(model, tx, x, init_key)
    if shared:
        state = state.replace(
            opt_state=state.opt_state._replace(
                hyperparams={**state.opt_state.hyperparams, "learning_rate": jnp.float32(spec.learning_rate)}
            )
        )
        jax.block_until_ready(state)
        started = time.perf_counter()
    state, _ = trainer.fit(
        state,
        x,
        y,
        FitConfig(epochs=epochs, batch_size=base.batch_size, seed=spec.seed, progress=False),
        dropout_key,
        validation_data=(x_val, y_val),
    )
    jax.block_until_ready(state.params)
    return time.perf_counter() - started


def time_trainer(raw: tuple, epochs: int, n: int, repeats: int, fresh_fits: int) -> dict[str, Any]:
    """One model alone, a compiled-once loop of n, and (scaled from `fresh_fits`) a loop that builds each model anew."""
    base = raw[4]
    shared = (
        MLP(base.hidden, 1, dropout=base.dropout or 0.0, head=TASKS[base.task].head),
        make_optimizer(OptimizerConfig(base.optimizer, 1e-3)),
        Trainer(TASKS[base.task]),
    )
    specs = _specs(n)
    first = _trainer_fit(raw, epochs, specs[0], shared)
    one, times = _median(lambda: _trainer_fit(raw, epochs, specs[0], shared), repeats)
    loop = sum(_trainer_fit(raw, epochs, spec, shared) for spec in specs)
    fresh = [_trainer_fit(raw, epochs, spec, None) for spec in specs[:fresh_fits]]
    return {
        "one_s": one,
        "one_runs": times,
        "one_compile_s": first - one,
        "loop_compiled_once_s": loop,
        "loop_as_written_s": statistics.median(fresh) * n,
        "fresh_fit_s": fresh,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "load_start": _load(),
        "workloads": {},
    }
    plans = {
        "pima": (diabetes.CHAPTER, 64, 20, [1, 2, 4, 8, 16, 32, 64, 128, 256]),
        "california": (california.CHAPTER, 16, 5, [1, 2, 4, 8, 16, 32, 64]),
    }
    if args.smoke:
        plans = {"pima": (diabetes.CHAPTER, 4, 2, [1, 2]), "california": (california.CHAPTER, 2, 1, [1, 2])}
    for name, (base, n, epochs, scaling) in plans.items():
        config, data, raw = _workload(base, 512 if args.smoke and name == "california" else None)
        config = SweepConfig(**{**config.__dict__, "epochs": epochs})
        row: dict[str, Any] = {
            "models": n,
            "epochs": epochs,
            "train_rows": len(raw[0]),
            "val_rows": len(raw[2]),
            "load_before": _load(),
        }
        row["sweep_1"] = time_sweep(config, data, 1, args.repeats)
        row["sweep_n"] = time_sweep(config, data, n, args.repeats)
        row["trainer"] = time_trainer(raw, epochs, n, args.repeats, fresh_fits=2 if args.smoke else 4)
        row["scaling"] = [time_sweep(config, data, k, max(2, args.repeats // 2)) for k in scaling]
        row["load_after"] = _load()
        out["workloads"][name] = row
    out["load_end"] = _load()
    return out


LINEAR = 1.7  # a doubling of N that costs this much more time or more: the time grows with the arithmetic


def compute_bound_from(scaling: Sequence[dict[str, Any]]) -> int:
    """The smallest N from which every doubling of N (to the largest measured) costs >= LINEAR x the time."""
    bound = scaling[-1]["models"]
    for small, large in reversed(list(zip(scaling, scaling[1:]))):
        if large["ms_per_epoch"] / small["ms_per_epoch"] < LINEAR:
            break
        bound = small["models"]
    return bound


def markdown(out: dict[str, Any]) -> str:
    """The results as tables, with the ratios the issue asks for."""
    lines = [
        "# Many models in one program: `dlchapter.engine.sweep` vs one `Trainer.fit` at a time",
        "",
        f"Device {out['device']}, {out['cpus']} CPUs, jax {out['jax']}; load average (1, 5, 15 min) "
        f"at start {out['load_start']}, at end {out['load_end']}. Wall-clock medians; compile time "
        "excluded unless stated.",
        "",
    ]
    for name, w in out["workloads"].items():
        n, t, s1, sn = w["models"], w["trainer"], w["sweep_1"], w["sweep_n"]
        rows = [
            {"what": f"sweep, {n} models in one program", "seconds": sn["run_s"], "compile s": sn["compile_s"]},
            {"what": "sweep, 1 model", "seconds": s1["run_s"], "compile s": s1["compile_s"]},
            {"what": "Trainer.fit, 1 model alone", "seconds": t["one_s"], "compile s": t["one_compile_s"]},
            {
                "what": f"Python loop of {n} Trainer.fit, compiled once",
                "seconds": t["loop_compiled_once_s"],
                "compile s": t["one_compile_s"],
            },
            {
                "what": (
                    f"Python loop of {n} Trainer.fit, as written (each compiles; {len(t['fresh_fit_s'])} timed, "
                    f"x {n / len(t['fresh_fit_s']):g})"
                ),
                "seconds": t["loop_as_written_s"],
                "compile s": float("nan"),
            },
        ]
        ratios = (
            f"{n} models together take {sn['run_s'] / t['one_s']:.2f}x the time of one `Trainer.fit` "
            f"alone and {sn['run_s'] / s1['run_s']:.2f}x one model in the sweep engine; "
            f"they are {t['loop_compiled_once_s'] / sn['run_s']:.1f}x faster than a compiled-once "
            f"Python loop of {n} fits and {t['loop_as_written_s'] / sn['run_s']:.0f}x faster than the "
            "loop as written "
            f"({(t['loop_compiled_once_s'] + t['one_compile_s']) / (sn['run_s'] + sn['compile_s']):.1f}x "
            "counting each side's compile time once)."
        )
        scaling = [
            {
                "models": r["models"],
                "ms per epoch": r["ms_per_epoch"],
                "us per model-epoch": r["us_per_model_epoch"],
                "compile s": r["compile_s"],
            }
            for r in w["scaling"]
        ]
        bound = compute_bound_from(w["scaling"])
        lines += [
            f"## {name}: {w['epochs']} epochs, {w['train_rows']} training + {w['val_rows']} validation "
            f"rows (load {w['load_before']} -> {w['load_after']})",
            "",
            markdown_table(rows),
            "",
            ratios,
            "",
            "Scaling (time per model-epoch stops falling where the CPU becomes compute-bound):",
            "",
            markdown_table(scaling),
            "",
            f"Compute-bound from N = {bound}: from there on every doubling of N costs at least "
            f"{LINEAR:g}x the time (the arithmetic dominates); below it a doubling costs less: per-step "
            "overhead dominates and extra models ride along.",
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--render", type=Path, help="only rewrite the Markdown of a results JSON written earlier")
    args = parser.parse_args(argv)
    if args.render:
        out = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(out))
        return out
    if args.smoke:
        args.repeats = min(args.repeats, 2)
    out = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "sweep_speed_smoke" if args.smoke else f"sweep_speed_{jax.devices()[0].platform}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(out))
    print(markdown(out))
    return out


if __name__ == "__main__":
    main()
