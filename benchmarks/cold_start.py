"""Cold start: the diamonds experiment twice with a fresh persistent compilation cache, and import times.

    python -m benchmarks.cold_start [--repeats 5] [--out benchmarks/results/cold_start-<device>.json] [--baseline DIR]

Each repetition makes a new, empty cache directory and runs the chapter experiment
`python -m experiments.diamonds --workdir <new dir>` three times in fresh processes:
"first" (the cache is empty: every program is compiled and written), "second" (the same
experiment again: every program should come from the cache) and "off"
(``DLCHAPTER_COMPILATION_CACHE=0``: what a run costs without the cache, for scale). The
wall time of each process is printed with the median and the spread (min-max) over
repetitions and the ratio second / first; the issue's target is <= 0.60.

Import times (fresh process each, median over `--repeats`): `import jax, flax.linen, optax`
alone, then `import dlchapter`, `dlchapter.engine.train`, `dlchapter.cli` and `dlchapter.runs.tabular_runs`
(what the diamonds run imports before its data) on top of it; the library's own cost is the difference.
Needs the chapter data (DLCHAPTER_DATA_DIR) offline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ["-m", "experiments.diamonds"]
IMPORTS = {
    "jax+flax+optax": "import jax, flax.linen, optax",
    "dlchapter": "import jax, flax.linen, optax; import dlchapter",
    "dlchapter.engine.train": "import jax, flax.linen, optax; import dlchapter.engine.train",
    "dlchapter.cli": "import jax, flax.linen, optax; import dlchapter.cli",
    "dlchapter.runs.tabular_runs": "import jax, flax.linen, optax; import dlchapter.runs.tabular_runs",
}


def _timed(argv: list[str], env: dict[str, str], cpu: list[float] | None = None, cwd: Path = ROOT) -> float:
    """Wall seconds of one fresh Python process (its CPU seconds, user + sys, appended to `cpu`)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return seconds


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_experiment(repeats: int, extra: Sequence[str] = (), baseline: Path | None = None) -> dict[str, Any]:
    """first / second / off wall seconds of the diamonds experiment per repetition (fresh cache each).

    With `baseline` (the root of another checkout, e.g. `git archive main | tar -x -C /tmp/base`), the same
    three runs of that code are timed in every repetition too ("baseline first", ...), in alternating order,
    so the two versions see the same machine load.
    """
    roots = {"": ROOT} if baseline is None else {"": ROOT, "baseline ": Path(baseline).resolve()}
    labels = [f"{prefix}{label}" for prefix in roots for label in ("first", "second", "off")]
    runs: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    cache_files: list[int] = []
    with tempfile.TemporaryDirectory(prefix="dlchapter-cold-") as tmp:
        for rep in range(repeats):
            order = list(roots.items()) if rep % 2 == 0 else list(roots.items())[::-1]
            for prefix, root in order:
                cache = Path(tmp) / f"cache{rep}{prefix.strip()}"
                env = {**os.environ, "DLCHAPTER_COMPILATION_CACHE": str(cache), "PYTHONPATH": str(root)}
                for label in ("first", "second", "off"):
                    run_env = {**env, "DLCHAPTER_COMPILATION_CACHE": "0"} if label == "off" else env
                    workdir = Path(tmp) / f"run{rep}-{prefix.strip()}{label}"
                    argv = [*EXPERIMENT, "--workdir", str(workdir), *extra]
                    runs[prefix + label].append(_timed(argv, run_env, cpu[prefix + label], cwd=root))
                if not prefix:
                    cache_files.append(sum(1 for _ in cache.iterdir()))
            print(
                f"repetition {rep + 1}/{repeats}: "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items())
                + f" ({cache_files[-1]} cache entries; load {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
            )
    ratios = {prefix: [s / f for f, s in zip(runs[prefix + "first"], runs[prefix + "second"])] for prefix in roots}
    cpu_ratios = {prefix: [s / f for f, s in zip(cpu[prefix + "first"], cpu[prefix + "second"])] for prefix in roots}
    report = {
        "runs_s": runs,
        "stats_s": {k: _stats(v) for k, v in runs.items()},
        "second_over_first": _stats(ratios[""]),
        "cpu_s": cpu,
        "cpu_stats_s": {k: _stats(v) for k, v in cpu.items()},
        "cpu_second_over_first": _stats(cpu_ratios[""]),
        "cache_entries": cache_files,
    }
    if baseline is not None:
        report.update(
            baseline=str(baseline),
            baseline_second_over_first=_stats(ratios["baseline "]),
            baseline_cpu_second_over_first=_stats(cpu_ratios["baseline "]),
        )
    return report


def measure_imports(repeats: int) -> dict[str, Any]:
    """Median wall seconds of a fresh `python -c <imports>` per entry of IMPORTS, interleaved."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times: dict[str, list[float]] = {k: [] for k in IMPORTS}
    for _ in range(repeats):
        for name, code in IMPORTS.items():
            times[name].append(_timed(["-c", code], env))
    stats = {k: _stats(v) for k, v in times.items()}
    base = statistics.median(times["jax+flax+optax"])
    extra = {k: statistics.median(v) - base for k, v in times.items() if k != "jax+flax+optax"}
    return {"runs_s": times, "stats_s": stats, "beyond_jax_flax_optax_s": extra}


def markdown(report: dict[str, Any]) -> str:
    exp, imp = report["experiment"], report["imports"]
    title = (
        f"## Cold start ({report['cpu']}, {report['cores']} cores; load average {report['load_start']:.2f} "
        f"at start, {report['load_end']:.2f} at end)"
    )
    lines = [
        title,
        "",
        f"Command: `{report['command']}`; {report['repeats']} repetitions, each with a new empty cache.",
        "",
        "| diamonds experiment, process seconds | wall median [min-max] | CPU (user+sys) median [min-max] |",
        "|---|---|---|",
    ]
    for label, s in exp["stats_s"].items():
        c = exp["cpu_stats_s"][label]
        lines.append(
            f"| {label} | {s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}] | "
            f"{c['median']:.2f} [{c['min']:.2f}-{c['max']:.2f}] |"
        )
    r, c = exp["second_over_first"], exp["cpu_second_over_first"]
    lines.append(
        f"| second / first (pairwise) | {r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}] | "
        f"{c['median']:.2f} [{c['min']:.2f}-{c['max']:.2f}] |"
    )
    if "baseline" in exp:
        r, c = exp["baseline_second_over_first"], exp["baseline_cpu_second_over_first"]
        lines.append(
            f"| baseline second / first (pairwise; baseline: `{exp['baseline']}`) | "
            f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}] | "
            f"{c['median']:.2f} [{c['min']:.2f}-{c['max']:.2f}] |"
        )
    lines += [
        "",
        "| fresh-process import, wall s | median | min | max | beyond jax+flax+optax |",
        "|---|---|---|---|---|",
    ]
    for name, s in imp["stats_s"].items():
        beyond = imp["beyond_jax_flax_optax_s"].get(name)
        lines.append(
            f"| `{IMPORTS[name]}` | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} | "
            f"{'-' if beyond is None else f'{beyond:+.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="repetitions (each with a fresh cache)")
    parser.add_argument("--import-repeats", type=int, default=5, help="fresh processes per import line")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here (and .md beside)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="root of another checkout (e.g. `git archive main | tar -x -C DIR`) timed in the same "
        "repetitions, interleaved",
    )
    args = parser.parse_args(argv)
    from benchmarks.throughput import machine

    load_start = os.getloadavg()[0]
    report = {
        "command": " ".join(["python -m benchmarks.cold_start", *(argv if argv is not None else sys.argv[1:])]),
        "repeats": args.repeats,
        **{k: machine()[k] for k in ("cpu", "cores")},
        "load_start": load_start,
        "experiment": measure_experiment(args.repeats, baseline=args.baseline),
        "imports": measure_imports(args.import_repeats),
    }
    report["load_end"] = os.getloadavg()[0]
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return report


if __name__ == "__main__":
    main()
