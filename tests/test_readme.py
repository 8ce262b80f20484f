"""The README's "Bring your own model" example runs as printed: train, evaluate, predict, save in one
process, then restore in a fresh one and predict the same values; and its nnx and callback examples run after
the example's training lines."""

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    section = README.read_text().split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3, "the example, then the nnx and the callbacks subsections' examples"
    return blocks


def _example() -> list[str]:
    return _blocks()[0].splitlines()


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_example_is_at_most_15_lines():
    assert len(_example()) <= 15


def test_readme_example_trains_saves_and_restores_in_a_fresh_process(tmp_path):
    lines = _example()
    restore_at = next(i for i, line in enumerate(lines) if line.startswith("state = dl.restore_model"))
    definitions = next(i for i, line in enumerate(lines) if line.startswith("new_state ="))
    train = "\n".join(lines[:restore_at]) + "\nimport json; print(json.dumps({'epochs': history.epochs_run}))\n"
    restore = "\n".join(lines[: definitions + 1] + lines[restore_at:]) + "\nprint('restored')\n"

    def run(code):
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )

    first = run(train)
    assert first.returncode == 0, first.stderr[-3000:]
    logs = eval(first.stdout.splitlines()[-2], {"__builtins__": {}}, {"nan": float("nan")})  # the printed dict
    assert {"loss", "mae", "max_abs_error"} <= set(logs) and logs["max_abs_error"] >= logs["mae"]
    epochs = json.loads(first.stdout.splitlines()[-1])["epochs"]
    assert 1 <= epochs <= 40
    assert (tmp_path / "my_model").is_dir() and (tmp_path / "pred.npy").is_file()
    second = run(restore)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().endswith("restored")


def test_readme_nnx_and_callback_examples_run(tmp_path):
    lines = _example()
    restore_at = next(i for i, line in enumerate(lines) if line.startswith("state = dl.restore_model"))
    _, nnx_example, callbacks_example = _blocks()
    assert "nnx.BatchNorm" in nnx_example and "nnx.Dropout" in nnx_example and "callbacks=[" in callbacks_example
    proc = _run("\n".join(lines[:restore_at]) + "\n" + nnx_example + callbacks_example + "print('ran')\n", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ran")
