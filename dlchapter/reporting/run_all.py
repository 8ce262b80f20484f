"""`dlchapter run all`: every experiment in turn, an index.md of what happened, and `--quick` smoke sizes.

Each experiment runs in its own run scope (`tracking.track_run`), so its
directory gets TensorBoard events. One failing experiment is recorded and the
others still run; Ctrl-C or SIGTERM (KeyboardInterrupt or `Terminated`, or a checkpointing run's
TrainingInterrupted) stops the loop, and index.md is still written with what
finished, what failed, what was skipped and what never started.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlchapter.checkpoint.checkpoint_errors import TrainingInterrupted
from dlchapter.reporting.run_guard import Terminated, interruption
from dlchapter.reporting.tracking import track_run

# Smoke sizes for `run all --quick`: every experiment's own flags (its config dataclass's field names), chosen so the
# whole set runs in under 3 minutes on two CPU cores (tests/test_run_all_quick.py measures it). Flags given on the
# command line come after these, so they win.
QUICK_FLAGS: dict[str, tuple[str, ...]] = {
    "diamonds": ("--epochs", "1"),
    "california": ("--epochs", "2", "--xgboost", "false"),  # XGBoost's 500 trees would cost 13 s of CPU
    "diabetes": ("--epochs", "3"),
    "iris": ("--epochs", "3"),
    "mnist_cnn": ("--epochs", "1", "--max-train", "1024", "--max-test", "512", "--checkpoint-every-epochs", "0"),
    "sequences": ("--epochs", "1", "--max-train", "512", "--max-test", "256", "--models", "gru"),
    "sweep_california": ("--epochs", "2", "--seeds", "0"),
    "activations": ("--points", "101"),
    "backprop": ("--rows", "200", "--steps", "300"),
    "batch_size": ("--train-rows", "1000", "--validation-rows", "200", "--epochs", "2", "--batch-sizes", "32,256"),
    "optimizers": ("--train-rows", "1000", "--validation-rows", "200", "--epochs", "2", "--optimizers", "sgd,adam"),
    "overfitting": ("--epochs", "2", "--hidden", "64,64"),
    "validation": ("--epochs", "2", "--k", "2", "--holdout-repeats", "1"),
}


def _seconds_since(started: float) -> float:
    return time.perf_counter() - started


@dataclass(frozen=True)
class Outcome:
    """One experiment's line in index.md: status is ran, failed, skipped, interrupted or not run."""

    name: str
    status: str
    detail: str = ""
    seconds: float | None = None  # wall-clock seconds the experiment ran


def _report_link(workdir: Path, name: str) -> str:
    for page in ("summary.md", "index.md"):  # a sweep experiment writes an index of its sweeps
        if (workdir / name / page).is_file():
            return f"[{page[:-3]}]({name}/{page})"
    return "no report written"


def index_markdown(workdir: Path, outcomes: Sequence[Outcome], *, quick: bool) -> str:
    """index.md's text: one row per experiment, then how to open TensorBoard and compare runs."""
    title = "# dlchapter: every chapter experiment" + (" (--quick smoke sizes)" if quick else "")
    lines = [title, "", "| experiment | result | seconds |", "|---|---|---:|"]
    for outcome in outcomes:
        seconds = "" if outcome.seconds is None else f"{outcome.seconds:.1f}"
        if outcome.status == "ran":
            lines.append(f"| {outcome.name} | {_report_link(workdir, outcome.name)} | {seconds} |")
        else:
            detail = f": {outcome.detail}" if outcome.detail else ""
            lines.append(f"| {outcome.name} | {outcome.status}{detail} | {seconds} |")
    compare = (
        f"- Compare runs (e.g. this one with an earlier one): `dlchapter compare {workdir}/iris OTHER/iris` writes a "
        "table of the config fields that differ and the test metrics (mean and spread over seeds) and a figure "
        "of their validation curves."
    )
    lines += [
        "",
        "## Look closer",
        "",
        f"- Every run's curves, hyperparameters and figures: `tensorboard --logdir {workdir}`.",
        compare,
    ]
    return "\n".join(lines) + "\n"


def run_all(
    mains: Mapping[str, Callable[[Sequence[str]], object]],
    workdir: Path,
    extra: Sequence[str],
    *,
    quick: bool = False,
    data_missing: Callable[[str], str | None] = lambda name: None,
    progress: bool | None = None,
    write: Callable[[Path, str], None],
) -> tuple[int, list[Outcome]]:
    """Run each of `mains` (name -> main(argv)) into `workdir/<name>`; write index.md with `write(path, text)`.

    Returns (exit status, outcomes): 0 when all ran or were skipped, 1 when one
    failed, 130 after Ctrl-C, 143 after SIGTERM, 3 when a checkpointing run was interrupted.
    """
    workdir = Path(workdir)
    outcomes: list[Outcome] = []
    status = 0
    names = list(mains)
    try:
        for name in names:
            missing = data_missing(name)
            if missing:
                print(f"skipping {name}: {missing}", file=sys.stderr)
                outcomes.append(Outcome(name, "skipped", missing))
                continue
            run_dir = workdir / name
            flags = [*(QUICK_FLAGS.get(name, ()) if quick else ()), *extra]
            started = time.perf_counter()
            took = functools.partial(_seconds_since, started)
            try:
                with track_run(run_dir, progress=progress):
                    mains[name](["--workdir", str(run_dir), *flags])
                outcomes.append(Outcome(name, "ran", seconds=took()))
            except TrainingInterrupted:
                outcomes.append(Outcome(name, "interrupted", "a checkpoint was saved; run it again to resume", took()))
                status = 3
                break
            except SystemExit as error:  # its argparse rejected a flag (the message is above); the others still run
                if not error.code:
                    outcomes.append(Outcome(name, "ran", seconds=took()))
                    continue
                status = 1
                outcomes.append(
                    Outcome(name, "failed", f"its command line was rejected (exit {error.code}); see stderr", took())
                )
            except Exception as error:  # noqa: BLE001 - one failing experiment must not hide the others' reports
                status = 1
                print(f"{name} failed: {error!r}", file=sys.stderr)
                outcomes.append(Outcome(name, "failed", f"{type(error).__name__}: {error}", took()))
    except (KeyboardInterrupt, Terminated) as stop:
        running = names[len(outcomes)]
        name, status = interruption(stop)
        outcomes.append(Outcome(running, "interrupted", name))
        print(f"interrupted during {running}; index.md lists what finished", file=sys.stderr)
    finally:
        done = {o.name for o in outcomes}
        outcomes += [Outcome(n, "not run", "stopped before it started") for n in names if n not in done]
        write(workdir / "index.md", index_markdown(workdir, outcomes, quick=quick))
    return status, outcomes
