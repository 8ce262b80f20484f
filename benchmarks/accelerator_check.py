"""One prepared accelerator check: the environment, the numerics and the speed numbers, on whatever backend JAX finds.

    python -m benchmarks.device_data                      # here: copy Fashion-MNIST into .device-data/ (git-ignored)
    PYTHONPATH=$PWD python3 -m benchmarks.accelerator_check --out $OUT --data-dir .device-data --budget-s 390
    JAX_PLATFORMS=cpu python -m benchmarks.accelerator_check --out /tmp/acc --smoke --synthetic   # the CPU smoke size

Writes `accelerator-<device>.json` and `.md` into `--out` (rewritten after
every section, so a run cut short keeps what it measured), with the pytest log
and JUnit XML of the numerics and the sections' log `check.log` (5 files in all), and prints the summary tables.
Sections, in the issue's numbering (run in another order: the targets' numbers first):

1. environment: jax, jaxlib, flax, optax, orbax versions, backend, device kind, memory;
2. numerics: the model tests through pytest on this backend, each test's tolerances (`benchmarks.numerics_check`);
3. the CNN epoch of 60,000 images at batch 64 through `Trainer.fit`, compile timed apart, one step per call
   and the whole epoch per call (`benchmarks.cnn_epoch`);
4. `benchmarks.throughput`'s table for our models (every loop variant) and PyTorch eager and `torch.compile`
   for the chapter's MLP and CNN on the same device (`benchmarks.torch_device`; absent torch is recorded);
5. the chapter's CNN trained N-at-once, N = 1, 16, 64, 256, fp32 and bf16 (`benchmarks.many_models`);
6. the chapter's Fashion-MNIST experiment end to end, 5 epochs (`experiments.mnist_cnn`).

Every section runs in its own process (`benchmarks.accel_sections`) with a
budget in seconds; none starts past the global deadline `--budget-s`, and a
section that outlives min(budget, time left) is stopped and recorded as cut
short with whatever it had written. This process never initialises a JAX
backend itself (it would hold the accelerator's memory while the sections run).
Nothing is installed: the check uses what the machine has. Bad flags end in one
`error:` line and exit 2 before anything runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.accel_report import markdown, summary
from benchmarks.accel_sections import SECTIONS, write_atomic
from benchmarks.device_data import FILES, SUBDIR

ROOT = Path(__file__).resolve().parent.parent
BUDGETS_S: dict[str, float] = {
    "environment": 25,
    "cnn_epoch": 45,
    "torch_eager": 35,
    "many_models_fp32": 60,
    "many_models_bf16": 60,
    "experiment": 45,
    "numerics": 75,
    "throughput": 90,
    "torch_compile": 60,
}
"""Seconds each section may take on the accelerator, in running order (README "Accelerator check" estimates them)."""
SMOKE_SKIPS = {
    "torch_compile": "not run at the smoke size (torch.compile alone takes longer than the whole smoke test)"
}
MIN_START_S = 8.0  # a section is not started with less time than this left


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the result files (5 files)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"folder holding {SUBDIR}/ with Fashion-MNIST's four gz files (benchmarks.device_data)",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="seeded images of Fashion-MNIST's shape instead of the data"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few hundred rows, one model, N in (1, 2): the CPU test's size"
    )
    parser.add_argument("--budget-s", type=float, default=400.0, help="global deadline in seconds (default 400)")
    parser.add_argument("--sections", default=",".join(BUDGETS_S), help="comma-separated subset, in running order")
    parser.add_argument(
        "--expect-backend",
        default=None,
        help="e.g. gpu: if JAX's backend is another (a CUDA plugin that failed to load falls back to the CPU), "
        "run nothing after the environment, write the report and exit 1",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.exit(2, f"error: --sections: unknown {unknown}; known: {', '.join(BUDGETS_S)}\n")
    if args.budget_s <= MIN_START_S:
        parser.exit(2, f"error: --budget-s must be more than {MIN_START_S:.0f} seconds, got {args.budget_s}\n")
    if args.data_dir is not None and args.synthetic:
        parser.exit(2, "error: --data-dir and --synthetic exclude each other; pass one\n")
    if args.data_dir is not None:
        missing = [name for name in FILES if not (args.data_dir / SUBDIR / name).is_file()]
        if missing:
            parser.exit(
                2,
                f"error: --data-dir {args.data_dir}: {SUBDIR}/ lacks {', '.join(missing)}; "
                "prepare it with `python -m benchmarks.device_data --dest DIR`, or pass --synthetic\n",
            )
    if args.out.exists() and not args.out.is_dir():
        parser.exit(2, f"error: --out {args.out} exists and is not a folder\n")
    return args


def run_section(
    name: str, args: argparse.Namespace, work: Path, timeout: float, env: dict[str, str], log: Any
) -> dict[str, Any]:
    """Run one section's process for at most `timeout` seconds; its status, wall time and last partial result."""
    partial = work / f"{name}.json"
    argv = (
        [
            sys.executable,
            "-m",
            "benchmarks.accel_sections",
            name,
            "--partial",
            str(partial),
            "--work",
            str(work),
            "--budget-s",
            f"{timeout:.0f}",
        ]
        + (["--smoke"] if args.smoke else [])
        + (["--synthetic"] if args.synthetic else [])
    )
    log.write(f"==== {name} (budget {timeout:.0f} s)\n")
    log.flush()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
        status = "done" if code == 0 else f"failed (exit {code}; see check.log)"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the section and whatever it started (pytest, the experiment)
        proc.wait()
        status = f"cut short at {timeout:.0f} s"
    seconds = time.perf_counter() - started
    result = json.loads(partial.read_text()) if partial.is_file() else None
    return {"status": status, "seconds": seconds, "budget_s": timeout, "result": result}


def _data_note(args: argparse.Namespace) -> str:
    if args.synthetic:
        return "synthetic images of Fashion-MNIST's shape (--synthetic); accuracies are meaningless"
    if args.data_dir is not None:
        return f"Fashion-MNIST from {args.data_dir}/{SUBDIR}"
    return (
        "Fashion-MNIST through the library's lookup ($DLCHAPTER_DATA_DIR, cache, /usr/share/datasets); "
        "synthetic where not found"
    )


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """The JSON and Markdown files, named after the device (`accelerator-<device>`)."""
    env = (report["sections"].get("environment") or {}).get("result") or {}
    stem = f"accelerator-{env.get('device_name', 'unknown')}{'-smoke' if report['smoke'] else ''}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    write_atomic(json_path, report)
    tmp = md_path.with_name(f".{md_path.name}.tmp")
    tmp.write_text(markdown(report))
    os.replace(tmp, md_path)
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    started = time.monotonic()
    deadline = started + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "DLCHAPTER_OFFLINE": "1"}
    if args.data_dir is not None:
        env["DLCHAPTER_DATA_DIR"] = str(args.data_dir.resolve())
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.accelerator_check " + " ".join(args.argv),
        "smoke": args.smoke,
        "data": _data_note(args),
        "budget_s": args.budget_s,
        "sections": {},
    }
    paths: tuple[Path, Path] | None = None
    with tempfile.TemporaryDirectory(prefix="accelerator-check-") as tmp, (args.out / "check.log").open("w") as log:
        work = Path(tmp)
        wrong_backend = None
        for name in args.sections:
            left = deadline - time.monotonic()
            if wrong_backend:
                report["sections"][name] = {
                    "status": "not run",
                    "reason": wrong_backend,
                    "seconds": 0.0,
                    "result": None,
                }
            elif args.smoke and name in SMOKE_SKIPS:
                report["sections"][name] = {
                    "status": "not run",
                    "reason": SMOKE_SKIPS[name],
                    "seconds": 0.0,
                    "result": None,
                }
            elif left < MIN_START_S:
                report["sections"][name] = {
                    "status": "not run",
                    "reason": f"global deadline ({left:.0f} s left)",
                    "seconds": 0.0,
                    "result": None,
                }
            else:
                report["sections"][name] = run_section(name, args, work, min(BUDGETS_S[name], left), env, log)
            print(
                f"[{time.monotonic() - started:5.0f} s] {name}: {report['sections'][name]['status']}",
                file=sys.stderr,
                flush=True,
            )
            report["total_s"] = time.monotonic() - started
            paths = write_report(report, args.out)
            backend = ((report["sections"][name].get("result") or {}) if name == "environment" else {}).get("backend")
            if args.expect_backend and name == "environment" and backend != args.expect_backend:
                wrong_backend = f"JAX's backend is {backend}, expected {args.expect_backend}"
        for name in ("numerics-junit.xml", "numerics-pytest.log"):
            if (work / name).is_file():
                (args.out / name).write_bytes((work / name).read_bytes())
    report["total_s"] = time.monotonic() - started
    paths = write_report(report, args.out)
    print(summary(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    if wrong_backend:
        print(f"error: {wrong_backend}; nothing else was run (see check.log)", file=sys.stderr)
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
