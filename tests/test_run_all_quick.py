"""`dlchapter run all --quick`: every experiment at a smoke size within 3 minutes; index.md after Ctrl-C or failures."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlchapter import cli
from dlchapter.checkpoint.resume import TrainingInterrupted
from dlchapter.reporting.run_all import QUICK_FLAGS, run_all
from dlchapter.reporting.run_guard import Terminated

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DLCHAPTER_DATA_DIR") or ROOT.parent / "shared" / "data")


def test_every_experiment_has_quick_flags():
    assert set(QUICK_FLAGS) == {name for name, experiment in cli.EXPERIMENTS.items() if not experiment.needs}


@pytest.mark.run_all
@pytest.mark.skipif(not (SHARED_DATA / "diamonds.csv").is_file(), reason="shared data directory absent")
def test_run_all_quick_finishes_in_three_minutes_with_an_index_and_a_summary_each(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DLCHAPTER_DATA_DIR": str(SHARED_DATA),
        "DLCHAPTER_OFFLINE": "1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    started = time.perf_counter()
    command = [sys.executable, "-m", "dlchapter.cli", "run", "all", "--quick", "--workdir", str(tmp_path / "w")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    index = (tmp_path / "w" / "index.md").read_text()
    ran = [name for name in cli.EXPERIMENTS if f"| {name} | [" in index]
    skipped = [name for name in cli.EXPERIMENTS if f"| {name} | skipped: " in index]
    assert sorted(ran + skipped) == sorted(cli.EXPERIMENTS) and len(ran) >= 10, index
    for name in ran:
        page = "index.md" if name == "sweep_california" else "summary.md"
        assert (tmp_path / "w" / name / page).is_file(), name
        assert any((tmp_path / "w" / name).rglob("tb/events.out.tfevents.*")), name  # a sweep's are per preset
    assert seconds < 180, f"run all --quick took {seconds:.0f} s"


def _main(name, log, error=None):
    def main(argv):
        log.append(name)
        workdir = Path(argv[argv.index("--workdir") + 1])
        workdir.mkdir(parents=True)
        (workdir / "summary.md").write_text(f"# {name}\n")
        if error is not None:
            raise error

    return main


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "stop, status", [(KeyboardInterrupt(), 130), (Terminated(), 143), (TrainingInterrupted("SIGINT received"), 3)]
)
def test_ctrl_c_still_writes_the_index_of_what_finished(tmp_path, stop, status):
    log = []
    mains = {"first": _main("first", log), "second": _main("second", log, stop), "third": _main("third", log)}
    code, _ = run_all(mains, tmp_path, [], write=_write)
    assert code == status and log == ["first", "second"]
    index = (tmp_path / "index.md").read_text()
    assert "| first | [summary](first/summary.md) |" in index
    assert "| second | interrupted: " in index
    if status != 3:
        assert f"| second | interrupted: {'SIGTERM' if status == 143 else 'Ctrl-C'} |" in index
    assert "| third | not run: stopped before it started |" in index


def test_a_failing_experiment_and_rejected_flags_do_not_stop_the_others(tmp_path):
    log = []
    mains = {
        "broken": _main("broken", log, RuntimeError("on purpose")),
        "flags": _main("flags", log, SystemExit(2)),
        "fine": _main("fine", log),
    }
    code, outcomes = run_all(mains, tmp_path, ["--epochs", "1"], quick=True, write=_write)
    assert code == 1 and log == ["broken", "flags", "fine"]
    index = (tmp_path / "index.md").read_text()
    assert "| broken | failed: RuntimeError: on purpose |" in index
    assert "| flags | failed: its command line was rejected (exit 2); see stderr |" in index
    assert "| fine | [summary](fine/summary.md) |" in index
    assert [o.status for o in outcomes] == ["failed", "failed", "ran"]


def test_quick_applies_to_run_all_only(tmp_path, capsys):
    assert cli.main(["run", "iris", "--quick", "--workdir", str(tmp_path / "iris")]) == 2
    assert capsys.readouterr().err.startswith("error: --quick applies to `dlchapter run all` only")
    assert not (tmp_path / "iris").exists()
