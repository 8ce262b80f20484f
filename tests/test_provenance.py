"""metrics.json says where its numbers came from: versions, devices, command line, start time, git commit."""

import json
import subprocess
from datetime import datetime
from pathlib import Path

import flax
import jax
import optax

from dlchapter import cli
from dlchapter.reporting import provenance


def test_collect_matches_what_the_packages_and_git_say():
    record = provenance.collect()
    assert record["versions"]["jax"] == jax.__version__
    assert record["versions"]["flax"] == flax.__version__ and record["versions"]["optax"] == optax.__version__
    assert "jaxlib" in record["versions"] and "orbax-checkpoint" in record["versions"]
    assert record["backend"] == jax.default_backend() and record["device_count"] == jax.device_count()
    assert record["device_kind"] == jax.devices()[0].device_kind
    assert datetime.fromisoformat(record["started_at"]).tzinfo is not None
    root = Path(provenance.__file__).resolve().parents[1]
    if (root / ".git").exists():
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        assert record["git_commit"] == head.stdout.strip()
    assert None not in record.values()


def test_a_run_records_its_provenance_and_command_line(tmp_path, monkeypatch):
    argv = ["run", "iris", "--workdir", str(tmp_path), "--epochs", "2", "--monitor", "none"]
    monkeypatch.setattr("sys.argv", ["dlchapter", *argv])
    before = datetime.now().astimezone().replace(microsecond=0)
    assert cli.main(argv) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    assert record["command_line"] == ["dlchapter", *argv]
    assert datetime.fromisoformat(record["started_at"]) >= before
    assert record["versions"]["jax"] == jax.__version__
