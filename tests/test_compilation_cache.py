"""The persistent compilation cache: populated by a first process, a second compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlchapter.engine import compilation_cache
from dlchapter.engine.compilation_cache import (
    CompilationCacheError,
    cache_dir_from_environment,
    default_cache_dir,
)

ROOT = Path(__file__).resolve().parent.parent

# A small train step (Dense + adam through the library's optimizer factory) and an eager op, in a fresh process;
# prints the counts of JAX's persistent-cache events.
PROGRAM = """
import json, jax, jax.numpy as jnp, optax
events = {}
jax.monitoring.register_event_listener(lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1))
from dlchapter.engine.compilation_cache import enable_compilation_cache
path = enable_compilation_cache()
import flax.linen as nn
model = nn.Dense(3)
params = model.init(jax.random.key(0), jnp.ones((4, 5)))
tx = optax.adam(1e-3)
opt = tx.init(params)
@jax.jit
def step(params, opt, x):
    grads = jax.grad(lambda p: jnp.mean(model.apply(p, x) ** 2))(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt
params, opt = step(params, opt, jnp.ones((4, 5)))
jax.block_until_ready(params)
print(json.dumps({"path": str(path), "events": events}))
"""


def _python(program: str, *args: str, env: dict[str, str]) -> str:
    """stdout of `program` run by a fresh interpreter with `args` and `env` added to this environment (exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-c", program, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _run(env: dict[str, str]) -> dict:
    return json.loads(_python(PROGRAM, env=env).strip().splitlines()[-1])


def test_second_process_compiles_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _run({"DLCHAPTER_COMPILATION_CACHE": str(cache)})
    assert first["path"] == str(cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert first["events"].get("/jax/compilation_cache/cache_misses", 0) >= 2  # init, the step, eager ops
    assert len(entries) == first["events"]["/jax/compilation_cache/cache_misses"]
    second = _run({"DLCHAPTER_COMPILATION_CACHE": str(cache)})
    assert second["events"].get("/jax/compilation_cache/cache_misses", 0) == 0
    assert second["events"]["/jax/compilation_cache/cache_hits"] == len(entries)
    assert sorted(p.name for p in cache.iterdir()) == entries


def test_off_writes_nothing(tmp_path: Path) -> None:
    off = _run({"DLCHAPTER_COMPILATION_CACHE": "0", "XDG_CACHE_HOME": str(tmp_path)})
    assert off["path"] == "None"
    assert "/jax/compilation_cache/cache_misses" not in off["events"]
    assert not (tmp_path / "dlchapter").exists()


def test_environment_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for value in ("", "1", "on", "TRUE"):
        monkeypatch.setenv(compilation_cache.ENV_VAR, value)
        assert cache_dir_from_environment() == tmp_path / "dlchapter" / "jax" == default_cache_dir()
    for value in ("0", "off", "False", "no"):
        monkeypatch.setenv(compilation_cache.ENV_VAR, value)
        assert cache_dir_from_environment() is None
    monkeypatch.setenv(compilation_cache.ENV_VAR, "relative/dir")
    with pytest.raises(CompilationCacheError, match="DLCHAPTER_COMPILATION_CACHE='relative/dir'"):
        cache_dir_from_environment()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "dlchapter" / "jax"


def test_cli_bad_value_is_one_error_line(tmp_path: Path) -> None:
    """A bad value stops `python -m experiments.diamonds` before any work: exit 2, one error: line, no workdir."""
    env = {**os.environ, "DLCHAPTER_COMPILATION_CACHE": "maybe"}
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.diamonds", "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert "DLCHAPTER_COMPILATION_CACHE" in proc.stderr
    assert not workdir.exists()


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CompilationCacheError, match="cannot create the compilation cache directory"):
        compilation_cache.enable_compilation_cache(blocker / "jax")


TRACKED_PROGRAM = """
import logging, sys, jax, jax.numpy as jnp
from dlchapter.engine.compilation_cache import enable_compilation_cache
from dlchapter.reporting.tracking import FitLog, track_run
enable_compilation_cache()
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
with track_run(sys.argv[1]) as scope:
    FitLog(1, 1).compile(lambda: jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0).lower(jnp.ones((7, 3))))
    print("cached:", scope.compiled_from_cache)
"""


def test_a_program_from_the_persistent_cache_is_reported_as_loaded(tmp_path):
    env = {"DLCHAPTER_COMPILATION_CACHE": str(tmp_path / "cache")}
    first, second = (_python(TRACKED_PROGRAM, str(tmp_path / "w"), env=env) for _ in range(2))
    assert "compiled the train program in" in first and "cached: [False]" in first
    assert "loaded the train program from the compilation cache in" in second and "cached: [True]" in second
