"""`dlchapter.reporting.helper_process`: data sets and figures made in the helper process equal those made here."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dlchapter.data import DataError, load
from dlchapter.reporting import helper_process, plots, safe_write
from dlchapter.reporting.helper_process import ENV_SWITCH, fetch, prefetch

HISTORY = {"loss": [9.0, 4.0, 2.5], "mae": [3.0, 2.0, 1.5], "val_loss": [8.0, 5.0, 3.0], "val_mae": [2.9, 2.2, 1.9]}


@pytest.fixture(autouse=True)
def _helper_on(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "1")
    monkeypatch.setattr(helper_process, "_usable_cpus", lambda: 2)  # also where CI gives this process one CPU


def test_work_runs_in_another_process_and_only_inside_the_context():
    with helper_process.helper_process(warm_up=()):
        prefetch(os.getpid)
        assert fetch(os.getpid) != os.getpid()
        assert fetch(os.getpid) == os.getpid()  # nothing prefetched any more: computed here
    prefetch(os.getpid)  # outside: a no-op
    assert fetch(os.getpid) == os.getpid()


@pytest.mark.parametrize("value", ["0", "false", "Off", "no"])
def test_switched_off_everything_runs_here(monkeypatch, value):
    monkeypatch.setenv(ENV_SWITCH, value)
    with helper_process.helper_process(warm_up=()):
        prefetch(os.getpid)
        assert fetch(os.getpid) == os.getpid()


def test_a_jobs_output_does_not_reach_the_protocol_and_an_unpicklable_result_is_an_error(capfd):
    with helper_process.helper_process(warm_up=()):
        prefetch(print, "printed by a job")
        prefetch(threading.Lock)
        assert fetch(print, "printed by a job") is None
        with pytest.raises(TypeError, match="pickle"):
            fetch(threading.Lock)
        prefetch(os.getpid)
        assert fetch(os.getpid) != os.getpid()  # the helper still answers
    assert "printed by a job" in capfd.readouterr().err


def test_one_cpu_gets_no_helper(monkeypatch):
    monkeypatch.setattr(helper_process, "_usable_cpus", lambda: 1)
    with helper_process.helper_process(warm_up=()):
        prefetch(os.getpid)
        assert fetch(os.getpid) == os.getpid()


def test_prefetched_data_set_equals_the_one_loaded_here(shared_data: Path):
    here = load("diamonds", shared_data, missing="error")
    with helper_process.helper_process(warm_up=()):
        prefetch(load, "diamonds", shared_data, missing="error")
        there = fetch(load, "diamonds", shared_data, missing="error")
    assert there.feature_names == here.feature_names and there.source == here.source
    np.testing.assert_array_equal(there.x, here.x)
    np.testing.assert_array_equal(there.y, here.y)
    assert there.x.dtype == here.x.dtype == np.float32


def test_a_data_error_in_the_helper_is_raised_here_with_its_message(tmp_path: Path):
    bad = tmp_path / "diamonds.csv"
    bad.write_text(
        '"carat","cut","color","clarity","depth","table","price","x","y","z"\n0.2,"Ideal","E","SI2",x,1,2,3,4,5\n'
    )
    with pytest.raises(DataError) as here:
        load("diamonds", path=bad)
    with helper_process.helper_process(warm_up=()), pytest.raises(DataError) as there:
        prefetch(load, "diamonds", path=bad)
        fetch(load, "diamonds", path=bad)
    assert str(there.value) == str(here.value) and "line 2" in str(there.value)


def test_figures_drawn_in_the_helper_equal_those_drawn_here(tmp_path: Path):
    here = plots.training_curves(HISTORY, tmp_path / "here.png", 3, title="t")
    with helper_process.helper_process():
        there = plots.training_curves(HISTORY, tmp_path / "there.png", 3, title="t")
        assert there == tmp_path / "there.png"  # returned at once, drawn in the helper
    assert there.read_bytes() == here.read_bytes()


def test_a_failing_figure_is_raised_when_the_context_ends(tmp_path: Path):
    (tmp_path / "a file").write_text("not a directory")
    with pytest.raises(OSError) as here:
        plots.training_curves(HISTORY, tmp_path / "a file" / "curves.png")
    with pytest.raises(OSError) as there, helper_process.helper_process(warm_up=()):
        plots.training_curves(HISTORY, tmp_path / "a file" / "curves.png")
    assert type(there.value) is type(here.value) and str(there.value) == str(here.value)


@pytest.mark.parametrize("noticed_after_s", [0.0, 0.5])  # a figure queued behind the death, or drawn after it
def test_a_dead_helper_is_replaced_by_this_process(tmp_path: Path, caplog, noticed_after_s):
    with caplog.at_level(logging.WARNING), helper_process.helper_process(warm_up=()):
        prefetch(os._exit, 0)  # the helper dies
        time.sleep(noticed_after_s)
        path = plots.training_curves(HISTORY, tmp_path / "curves.png")
        assert fetch(os.getpid) == os.getpid()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "helper process stopped" in caplog.text


@pytest.mark.skipif(sys.platform != "linux", reason="figures fork only on Linux")
def test_forked_jobs_run_side_by_side_in_children_of_the_helper():
    with helper_process.helper_process(warm_up=()):
        helper = helper_process._HELPER
        helper_pid = helper.submit(os.getpid).result()
        child_pid = helper.submit(os.getpid, forked=True).result()
        assert len({os.getpid(), helper_pid, child_pid}) == 3
        started = time.monotonic()
        sleeps = [helper.submit(time.sleep, 1.0, forked=True) for _ in range(2)]
        assert helper.submit(os.getpid).result() == helper_pid  # the helper itself is free meanwhile
        for sleep in sleeps:
            sleep.result()
        assert time.monotonic() - started < 1.8  # the two seconds of sleep overlapped


@pytest.mark.skipif(sys.platform != "linux", reason="figures fork only on Linux")
def test_a_child_that_dies_fails_its_job_as_helper_died_and_the_helper_goes_on():
    with helper_process.helper_process(warm_up=()):
        helper = helper_process._HELPER
        died = helper.submit(os._exit, 3, forked=True).exception(timeout=60)
        assert isinstance(died, helper_process.HelperDied) and "status" in str(died)
        assert helper.submit(os.getpid).result() != os.getpid()


@helper_process.drawn_in_helper
def _killed_mid_write(path: Path, main_pid: int) -> Path:
    """A figure function that, outside the test's own process, is killed halfway through writing `path`."""
    if os.getpid() != main_pid:
        with safe_write.atomic_open(path) as handle:
            handle.write(b"half a figure")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return safe_write.write_bytes(path, b"the whole figure")


@pytest.mark.skipif(sys.platform != "linux", reason="figures fork only on Linux")
def test_a_figure_whose_process_was_killed_is_redrawn_here_and_its_temporary_file_removed(tmp_path, caplog):
    target = tmp_path / "curves.png"
    with caplog.at_level(logging.WARNING), helper_process.helper_process(warm_up=()):
        assert _killed_mid_write(target, os.getpid()) == target
    assert target.read_bytes() == b"the whole figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]
    assert "stopped by SIGKILL" in caplog.text and caplog.text.count("helper process stopped") == 1


def _hang_after_writing_pid(path: Path) -> None:
    path.write_text(str(os.getpid()))
    time.sleep(120)


@pytest.mark.skipif(sys.platform != "linux", reason="figures fork only on Linux")
def test_a_helper_stuck_past_the_close_timeout_is_stopped_with_its_children(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(helper_process, "CLOSE_TIMEOUT_S", 1)
    pid_file = tmp_path / "child.pid"
    with caplog.at_level(logging.WARNING), helper_process.helper_process(warm_up=()):
        helper_process._HELPER.submit(_hang_after_writing_pid, pid_file, forked=True)
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child) and "did not end within 1 s" in caplog.text


def test_the_calling_process_never_imports_matplotlib_or_pandas(tmp_path: Path, shared_data: Path):
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from dlchapter.data import load
        from dlchapter.reporting import helper_process, plots
        helper_process._usable_cpus = lambda: 2
        with helper_process.helper_process():
            helper_process.prefetch(load, "diamonds", Path({str(shared_data)!r}))
            ds = helper_process.fetch(load, "diamonds", Path({str(shared_data)!r}))
            plots.actual_vs_predicted(ds.y[:50], ds.y[:50], Path({str(tmp_path / "avp.png")!r}), r2=1, r2_corr=1,
                                      target="price")
        print(sorted(m for m in ("matplotlib", "pandas") if m in sys.modules), ds.x.shape)
        """
    )
    env = {**os.environ, ENV_SWITCH: "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] (53940, 26)"
    assert (tmp_path / "avp.png").stat().st_size > 1000


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by init, counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def test_the_helper_ends_when_the_training_process_is_killed():
    code = textwrap.dedent(
        """
        import os, time
        from dlchapter.reporting import helper_process
        helper_process._usable_cpus = lambda: 2
        with helper_process.helper_process(warm_up=()):
            helper_process.prefetch(os.getpid)
            print(helper_process.fetch(os.getpid), flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, ENV_SWITCH: "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        worker = int(proc.stdout.readline())
        assert worker != proc.pid and _alive(worker)
        proc.kill()  # SIGKILL: no clean-up in the training process
        _, stderr = proc.communicate(timeout=60)  # returns once the helper too has closed the run's stdout and stderr
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), f"helper {worker} outlived its killed parent; stderr: {stderr[-1000:]!r}"
    finally:
        proc.kill()


def _write_slow_module(directory: Path, name: str, seconds: float) -> None:
    (directory / f"{name}.py").write_text(f"import time\ntime.sleep({seconds})\nLOADED_AT = time.time()\n")


def test_modules_imported_early_are_loaded_before_the_next_job_and_figures_warm_up_after_it(tmp_path, monkeypatch):
    """`import_in_helper` (sent before the command line is parsed) runs first; the figures' warm-up imports come
    only after the first real job, so they cannot hold up a prefetch queued behind the early imports."""
    _write_slow_module(tmp_path, "early_module", 0.2)
    _write_slow_module(tmp_path, "figure_module", 0.0)
    monkeypatch.syspath_prepend(str(tmp_path))
    with helper_process.helper_process(warm_up=("figure_module",)):
        helper_process.import_in_helper(("early_module",))
        helper = helper_process._HELPER
        assert helper.process is not None and helper.only_imports  # started, nothing real yet
        loaded = helper.submit(sorted, ["early_module", "figure_module"]).result()
        in_helper = helper.submit(_loaded, ("early_module", "figure_module")).result()
        assert not helper.only_imports
    assert loaded == ["early_module", "figure_module"]
    assert in_helper == {"early_module": True, "figure_module": True}


def _loaded(names: tuple[str, ...]) -> dict[str, bool]:
    return {name: name in sys.modules for name in names}


def test_a_helper_given_only_imports_is_stopped_at_once_when_the_context_ends(tmp_path, monkeypatch):
    """A bad flag or --help ends the run while the helper still imports pandas: it is killed, not awaited."""
    _write_slow_module(tmp_path, "slow_module", 30)
    monkeypatch.syspath_prepend(str(tmp_path))
    started = time.monotonic()
    with pytest.raises(SystemExit), helper_process.helper_process(warm_up=()):
        helper_process.import_in_helper(("slow_module",))
        pid = helper_process._HELPER.process.pid
        raise SystemExit(2)
    assert time.monotonic() - started < 10
    assert not _alive(pid)


def test_import_in_helper_is_a_no_op_outside_the_context_and_without_modules():
    helper_process.import_in_helper(("json",))  # outside: nothing starts
    with helper_process.helper_process(warm_up=()):
        helper_process.import_in_helper(())
        assert helper_process._HELPER.process is None
