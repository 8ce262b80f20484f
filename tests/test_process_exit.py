"""`dlchapter.cli.exit_process`: the fast exit of command-line processes keeps every clean-up and byte of output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HANDLERS = """
import atexit, sys, threading, time
from dlchapter.cli import exit_process
log = open(sys.argv[1], "a")
atexit.register(lambda: (log.write("atexit handler ran\\n"), log.close()))
print("buffered stdout", end="")  # no newline: still in the buffer when the process ends
print("buffered stderr", end="", file=sys.stderr)
if sys.argv[2] == "thread":  # a non-daemon thread still working: the normal exit must wait for it
    threading.Thread(target=lambda: (time.sleep(0.3), open(sys.argv[1], "a").write("thread finished\\n"))).start()
exit_process(int(sys.argv[3]))
"""


def _run(tmp_path, mode: str, status: int, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "log.txt"
    proc = subprocess.run(
        [sys.executable, "-c", HANDLERS, str(log), mode, str(status)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    return proc, log.read_text()


@pytest.mark.parametrize("status", [0, 2, 3])
def test_exit_status_output_and_atexit_handlers_survive_the_fast_exit(tmp_path, status):
    proc, log = _run(tmp_path, "plain", status)
    assert proc.returncode == status
    assert proc.stdout == "buffered stdout"
    assert proc.stderr == "buffered stderr"
    assert log == "atexit handler ran\n"


def test_a_running_non_daemon_thread_gets_the_normal_exit(tmp_path):
    proc, log = _run(tmp_path, "thread", 2)
    assert proc.returncode == 2
    assert "thread finished\n" in log and "atexit handler ran\n" in log


def test_fast_exit_can_be_turned_off(tmp_path):
    proc, log = _run(tmp_path, "plain", 3, DLCHAPTER_FAST_EXIT="0")
    assert (proc.returncode, proc.stdout, log) == (3, "buffered stdout", "atexit handler ran\n")


CALLBACK = """
import jax, jax.numpy as jnp
from dlchapter.cli import exit_process
jax.jit(lambda x: jax.debug.print("host callback {x}", x=x, ordered=True))(jnp.arange(3))  # not awaited
exit_process(0)
"""


def test_the_fast_exit_skips_jax_teardown_but_flushes_its_host_callbacks():
    """JAX's atexit clean_up (destroying the backend client, 22 ms) is skipped; an ordered `jax.debug.print` still
    pending at exit is printed (`jax.effects_barrier`) and the status is kept."""
    proc = subprocess.run([sys.executable, "-c", CALLBACK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "host callback [0 1 2]" in proc.stdout


def test_jax_teardown_is_unregistered_and_what_replaces_it_runs(monkeypatch):
    import atexit

    import jax
    from jax._src import api

    from dlchapter import process_exit

    calls = []
    monkeypatch.setattr(jax, "effects_barrier", lambda: calls.append("effects_barrier"))
    monkeypatch.setattr(jax.distributed, "shutdown", lambda: calls.append("shutdown"))
    leave = process_exit._jax_exit_without_teardown()
    try:
        before = atexit._ncallbacks()
        atexit.unregister(api.clean_up)  # already gone: nothing changes
        assert atexit._ncallbacks() == before
        leave()
        assert calls == ["effects_barrier", "shutdown"]
    finally:
        atexit.register(api.clean_up)  # this test process keeps JAX's own exit
