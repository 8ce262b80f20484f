"""Where a run's numbers came from: package versions, devices, command line, start time and git commit.

`collect()` returns a JSON-able dict that the runs store in metrics.json
under "provenance". `mark_start()` records the start time (the CLI calls it
before a run begins; otherwise the time this module was first imported).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "dlchapter")
_started = datetime.now(UTC)


def mark_start() -> None:
    """Record now (UTC) as the run's start time."""
    global _started
    _started = datetime.now(UTC)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _devices() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


def collect() -> dict[str, Any]:
    """Versions of jax, jaxlib, flax, optax, orbax-checkpoint, numpy and dlchapter, the backend, device kind and
    count, the command line (`sys.argv`), the start time (ISO 8601, UTC) and, in a git checkout, the commit and
    whether tracked files had uncommitted changes. What is unknown is left out (never null: a null in
    metrics.json stands for a non-finite number)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    record = {
        "versions": {p: v for p in PACKAGES if (v := _version(p)) is not None},
        "python": sys.version.split()[0],
        **_devices(),
        "command_line": list(sys.argv),
        "started_at": _started.isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
    }
    return {k: v for k, v in record.items() if v is not None}
