"""What `--restart` does with an earlier run's checkpoints: set aside until the new run has saved, never lost.

`--restart` used to delete the checkpoint directory before the new run had done anything, so a new run that
then failed (bad data found late, a diverged loss, a crash, a kill before its first save) left nothing to
resume. Now `set_aside(DIR/checkpoints)` renames it to the sibling `DIR/checkpoints.replaced-<UTC time>`
(one rename on the same file system: nothing is copied, nothing half-moved); the new run's first checkpoint
deletes it (`discard`), and a new run that fails before that puts it back (`put_back`). A run that was
killed before either leaves the sibling beside an empty checkpoint directory: the next run into the
work directory puts it back first (`recover`), so a plain rerun resumes the earlier run's checkpoints.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import jax

from dlchapter.checkpoint.checkpoint_errors import CheckpointWarning

MARK = ".replaced-"


def holds_steps(directory: Path) -> bool:
    """Whether `directory` holds any checkpoint step (a directory named by its step number)."""
    return directory.is_dir() and any(entry.name.isdigit() for entry in directory.iterdir())


def set_aside_copies(directory: Path) -> list[Path]:
    """The `<directory>.replaced-*` siblings, oldest first (their names sort by time)."""
    return sorted(directory.parent.glob(f"{directory.name}{MARK}*")) if directory.parent.is_dir() else []


def set_aside(directory: Path) -> Path | None:
    """Renames `directory` to `<directory>.replaced-<UTC time>` and returns that path; None when it holds no step
    (then it is deleted, as there is nothing to keep). Raises OSError when the rename fails (nothing moved)."""
    if not directory.exists():
        return None
    if not holds_steps(directory):
        shutil.rmtree(directory)
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = directory.with_name(f"{directory.name}{MARK}{stamp}"), 1
    while aside.exists():
        n += 1
        aside = directory.with_name(f"{directory.name}{MARK}{stamp}-{n}")
    os.rename(directory, aside)
    return aside


def put_back(directory: Path, aside: Path) -> None:
    """`aside` back at `directory` (whatever the failed new run left there, which holds no finished step, goes)."""
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(aside, directory)


def discard(aside: Path) -> None:
    """Deletes the earlier run's set-aside checkpoints (the new run has saved its own)."""
    shutil.rmtree(aside, ignore_errors=True)


def recover(directory: Path) -> Path | None:
    """Tidies what a killed `--restart` run left: returns the set-aside copy put back at `directory`, or None.

    When `directory` holds no step, the newest set-aside copy is put back and older ones deleted; when it holds
    steps (the new run saved), every set-aside copy is deleted.
    """
    copies = set_aside_copies(directory)
    if not copies:
        return None
    keep = None if holds_steps(directory) else copies[-1]
    for old in copies:
        if old != keep:
            discard(old)
    if keep is not None:
        put_back(directory, keep)
    return keep


class Replacement:
    """A checkpointer's side of this module's rule, in `directory`: created first, `saved()` after each save,
    `failed()` when the run fails (`resume.RunCheckpointer`, `sweep_progress.SweepCheckpointer`).

    Creating it puts back what a killed `--restart` run set aside (one warning), then, with `restart`, sets the
    earlier checkpoints aside. Process 0 only (the others share its file system). Raises OSError when the rename
    fails (nothing moved).
    """

    def __init__(self, directory: Path, restart: bool):
        self.directory = directory
        self.aside: Path | None = None
        """The earlier run's checkpoints, set aside until this run's first save; None when there are none."""
        if jax.process_index() != 0:
            return
        recovered = recover(directory)
        if recovered is not None:
            warnings.warn(
                f"put the checkpoints that an interrupted --restart run had set aside in {recovered} back in "
                f"{directory} (that run saved nothing)",
                CheckpointWarning,
                stacklevel=3,
            )
        self.aside = set_aside(directory) if restart else None

    def saved(self) -> None:
        """The new run has a checkpoint of its own: the earlier run's can go."""
        if self.aside is not None:
            discard(self.aside)
            self.aside = None

    def failed(self) -> None:
        """The new run failed: before its first save, the earlier checkpoints go back in place."""
        if self.aside is not None:
            put_back(self.directory, self.aside)
            self.aside = None
