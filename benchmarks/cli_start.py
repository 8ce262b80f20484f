"""Cold-start wall time of the `dlchapter` command: `list`, `--help` and one experiment's `--help`.

    python -m benchmarks.cli_start [--repeats 5] [--out benchmarks/results/cli_start.json]

Each command runs in a fresh interpreter (`python -m dlchapter.cli ...`), so the
time includes Python's own start-up; the script also times a bare `python -c pass`
in the same run as the floor, and prints the median and the spread (min-max) of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "dlchapter list": [sys.executable, "-m", "dlchapter.cli", "list"],
    "dlchapter --help": [sys.executable, "-m", "dlchapter.cli", "--help"],
    "dlchapter run iris --help": [sys.executable, "-m", "dlchapter.cli", "run", "iris", "--help"],
    "dlchapter run diamonds --help": [sys.executable, "-m", "dlchapter.cli", "run", "diamonds", "--help"],
    "import dlchapter": [sys.executable, "-c", "import dlchapter"],
    "import jax, flax.linen": [sys.executable, "-c", "import jax, flax.linen"],
    "import jax, flax.linen, dlchapter.engine.train": [
        sys.executable,
        "-c",
        "import jax, flax.linen, dlchapter.engine.train",
    ],
}


def _time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    """Time each command `--repeats` times; print and return the median and spread in seconds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows, load_before = {}, os.getloadavg()[0]
    for name, command in COMMANDS.items():
        _time(command)  # warm the file cache
        seconds = [_time(command) for _ in range(args.repeats)]
        rows[name] = {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}
        print(f"{name:<42} median {rows[name]['median_s']:.3f} s  (min {min(seconds):.3f}, max {max(seconds):.3f})")
    result = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "commands": rows,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
