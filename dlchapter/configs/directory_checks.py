"""Checks of a run's directories before anything loads or trains: the data directory, the run directory and
what an earlier run left in it.

`check_data_dir` and `check_workdir` check that the directories exist or can be made; `check_run_directory`
that an earlier run's report files and checkpoints fit this run; `drop_replaced_checkpoints` deletes a
--restart run's replaced checkpoints once it has finished. Each problem raises one `ConfigError` whose
message names the flag or file and says what to do. The config's values are checked by
`dlchapter.configs.config_checks`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from dlchapter.configs.config_errors import ConfigError


def check_data_dir(data_dir: str | os.PathLike) -> None:
    """An explicitly given data directory must exist (it never silently falls through to another one)."""
    path = Path(data_dir)
    if not str(data_dir).strip():
        raise ConfigError(
            "--data-dir is empty: give a directory, or leave the flag out to use $DLCHAPTER_DATA_DIR and the cache"
        )
    if not path.exists():
        raise ConfigError(f"--data-dir {path}: no such directory")
    if not path.is_dir():
        raise ConfigError(f"--data-dir {path}: not a directory")


def check_workdir(workdir: str | os.PathLike) -> None:
    """The run directory must be a writable directory, or creatable in one; never '' (the current directory)."""
    if not str(workdir).strip():
        raise ConfigError("--workdir is empty: give the directory for the run's outputs")
    path = Path(workdir)
    if path.is_symlink() and not path.exists():
        raise ConfigError(
            f"--workdir {path} is a symbolic link to {os.readlink(path)}, which does not exist: "
            "create that directory, or pass another --workdir"
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--workdir {path}: exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--workdir {path}: {existing} is a file, not a directory")
    try:  # os.access says yes to root on a read-only file system: try a nameless temporary file
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"--workdir {path}: cannot write in {existing} ({error.strerror or error})") from None


REPORT_FILES = (
    "metrics.json",
    "config.json",
    "summary.md",
    "history.csv",
    "predictions.csv",
    "index.md",
    "report_files.json",
)


def check_run_directory(config: Any, workdir: str | os.PathLike) -> None:
    """What an earlier run left in `workdir` must fit this run (checked before anything loads or trains).

    Raises ConfigError when a report file's name is taken by a directory, when `checkpoints` is not a
    directory, or when the directory holds checkpoints that this run would ignore (checkpointing off and no
    --restart): they would then sit beside a config.json that does not describe them. With --restart and
    checkpointing off, the earlier checkpoints stay until the new run has finished (`drop_replaced_checkpoints`),
    so a run that fails leaves them usable.
    """
    path = Path(workdir)
    if not path.is_dir():
        return
    for name in REPORT_FILES:
        if (path / name).is_dir():
            raise ConfigError(
                f"{path / name} is a directory, where the run writes its {name}: "
                "move it away, or pass another --workdir"
            )
    checkpoints = path / "checkpoints"
    if checkpoints.exists() and not checkpoints.is_dir():
        raise ConfigError(
            f"{checkpoints} is not a directory, where the run keeps its checkpoints: "
            "move it away, or pass another --workdir"
        )
    if getattr(config, "checkpoint_every_epochs", None) != 0 or not checkpoints.is_dir():
        return
    if not any(entry.name.isdigit() for entry in checkpoints.iterdir()):
        return
    if getattr(config, "restart", False):
        return  # deleted by drop_replaced_checkpoints once this run has finished
    raise ConfigError(
        f"{checkpoints} holds an earlier run's checkpoints and this run does not checkpoint "
        "(--checkpoint-every-epochs 0): pass --checkpoint-every-epochs N to resume or extend that run "
        "(its config must match), --restart to delete them and start over, or another --workdir"
    )


def drop_replaced_checkpoints(config: Any, workdir: str | os.PathLike) -> None:
    """After a finished --restart run that does not checkpoint: deletes the earlier run's `workdir/checkpoints`.

    They are kept until then (`check_run_directory`), so that a --restart run that fails leaves them usable.
    """
    checkpoints = Path(workdir) / "checkpoints"
    if getattr(config, "restart", False) and getattr(config, "checkpoint_every_epochs", None) == 0:
        if checkpoints.is_dir() and any(entry.name.isdigit() for entry in checkpoints.iterdir()):
            import shutil

            shutil.rmtree(checkpoints)


__all__ = ["REPORT_FILES", "check_data_dir", "check_run_directory", "check_workdir", "drop_replaced_checkpoints"]
