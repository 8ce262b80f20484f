"""The safe-write helper, and runs that never write through a symbolic link planted in their run directory."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlchapter.data.tabular import PIMA_COLUMNS
from dlchapter.reporting import safe_write
from dlchapter.runs.concept_runs import ActivationsConfig, run_activations
from dlchapter.runs.tabular_runs import TabularConfig, run_tabular
from dlchapter.runs.validation import ValidationConfig, run_validation


def _outside(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    target = tmp_path / "outside" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    content = f"precious {name}\n".encode()
    target.write_bytes(content)
    return target, content


def test_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside, content = _outside(tmp_path, "a.json")
    link = tmp_path / "run" / "metrics.json"
    link.parent.mkdir()
    link.symlink_to(outside)
    safe_write.write_text(link, "{}\n")
    assert outside.read_bytes() == content
    assert not link.is_symlink() and link.read_text() == "{}\n"
    assert sorted(p.name for p in link.parent.iterdir()) == ["metrics.json"]  # no temporary left


def test_links_at_predictable_temporary_names_are_never_opened(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    planted = {}
    for name in (".metrics.json.tmp", ".metrics.json.part", "metrics.json.tmp"):
        planted[name] = _outside(tmp_path, name)
        (run / name).symlink_to(planted[name][0])
    safe_write.write_text(run / "metrics.json", "new\n")
    for target, content in planted.values():
        assert target.read_bytes() == content
    assert (run / "metrics.json").read_text() == "new\n"


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with safe_write.atomic_open(path, "w") as handle:
            handle.write("half a fi")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["history.csv"]


def test_permissions_follow_the_umask_and_directories_are_refused(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    path = safe_write.write_bytes(tmp_path / "fig.png", b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # as open() would make it, not mkstemp's 0600
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        safe_write.write_text(tmp_path / "dir", "x")


# --- whole runs: links planted at every name a run writes ----------------------------------------------------


def _pima(directory: Path) -> Path:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.integers(1, 100, (80, 8)), columns=PIMA_COLUMNS[:-1])
    frame["Outcome"] = np.arange(80) % 3 == 0
    frame["Outcome"] = frame["Outcome"].astype(int)
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_csv(directory / "diabetes.csv", index=False)
    return directory


def _tabular(data: Path) -> Callable[[Path], object]:
    config = TabularConfig(
        dataset="diabetes",
        task="binary",
        hidden=(4,),
        epochs=2,
        batch_size=16,
        validation_split=0.2,
        monitor=None,
        scale_inputs=True,
        data_dir=str(data),
    )
    return lambda workdir: run_tabular(config, workdir)


def _validation(data: Path) -> Callable[[Path], object]:
    config = ValidationConfig(hidden=(4,), epochs=1, k=2, holdout_repeats=1, data_dir=str(data))
    return lambda workdir: run_validation(config, workdir)


def _activations(data: Path) -> Callable[[Path], object]:
    return lambda workdir: run_activations(ActivationsConfig(points=41), workdir)


@pytest.mark.parametrize(
    "make_run", [_tabular, _validation, _activations], ids=["tabular", "validation", "activations"]
)
def test_planted_links_leave_outside_files_byte_identical(tmp_path: Path, make_run: Callable) -> None:
    run = make_run(_pima(tmp_path / "data"))
    run(tmp_path / "first")
    written = sorted(p.name for p in (tmp_path / "first").iterdir())
    assert {"metrics.json", "config.json", "summary.md"} <= set(written) and any(n.endswith(".png") for n in written)
    workdir = tmp_path / "second"
    workdir.mkdir()
    planted = {}
    for name in written:  # every file name, and the fixed temporary names the old writer used
        for link_name in (name, f".{name}.tmp", f"{name}.tmp", f".{name}.part"):
            planted[link_name] = _outside(tmp_path, link_name)
            (workdir / link_name).symlink_to(planted[link_name][0])
    run(workdir)
    for link_name, (target, content) in planted.items():
        assert target.read_bytes() == content, link_name
    for name in written:
        assert not (workdir / name).is_symlink() and (workdir / name).stat().st_size > 0, name
    leftovers = {p.name for p in workdir.iterdir()} - set(planted)
    assert not leftovers, leftovers  # no temporary file left behind either


def test_a_failed_write_names_the_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "figure.png"
    with pytest.raises(OSError) as failure, safe_write.atomic_open(target) as handle:
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk raises from write or fsync
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(target)
    assert str(target) in str(failure.value)
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temporaries_removes_only_those_of_the_file(tmp_path):
    from dlchapter.reporting.safe_write import remove_stale_temporaries

    names = [".a.png.x1.tmp", ".a.png.y2.tmp", ".b.png.z3.tmp", "a.png", ".a.png.part", ".a.pngx.q.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    removed = remove_stale_temporaries(tmp_path / "a.png")
    assert [p.name for p in removed] == [".a.png.x1.tmp", ".a.png.y2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - {".a.png.x1.tmp", ".a.png.y2.tmp"})
