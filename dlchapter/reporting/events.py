"""TensorBoard event files of a run, written through tensorboardX (no TensorFlow needed).

Layout: `<workdir>/tb/` holds the run's event files; a run that trains several
models (one `Trainer.fit` each) writes the second and later ones' epochs to
`<workdir>/tb/fit<k>/` so TensorBoard shows them as separate curves.

Tags (TensorBoard's "scalars" view): every column of history.csv under its own
name (`loss`, `val_loss`, `accuracy`, `lr`, `epoch_seconds`, ...) at step =
epoch (1-based), plus `samples_per_second` per epoch and `compile_seconds` at
step 1; at the end every numeric `test_*` entry of metrics.json at step =
epochs run, the hyperparameters (HParams plugin: the config's fields, so runs
filter by them), the summary's sections as text and the run's figures as images.
"""

from __future__ import annotations

import csv
import importlib
import math
import os
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

EVENTS_DIR = "tb"


def events_dir(workdir: Path, fit_index: int = 1) -> Path:
    """Where fit number `fit_index` (1-based) of a run writes its epochs."""
    base = Path(workdir) / EVENTS_DIR
    return base if fit_index == 1 else base / f"fit{fit_index}"


def clear_events(workdir: Path) -> int:
    """Delete the event files an earlier run left in `<workdir>/tb/` (and its fit<k>/ folders); returns how many.

    Called when a run starts afresh in a used directory, so TensorBoard never
    shows the earlier run's curves or hyperparameters as this one's. Only files
    named `events.out.tfevents.*` go; symbolic links are not followed.
    """
    removed = 0
    for folder, _, files in os.walk(Path(workdir) / EVENTS_DIR, followlinks=False):
        for name in files:
            if name.startswith("events.out.tfevents."):
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


FINAL_SUFFIX = ".final"  # the end of the name of the file `write_final` writes


def event_files(workdir: Path, *, final_only: bool = False) -> list[Path]:
    """The event files in `<workdir>/tb/` and its fit<k>/ folders, sorted (symbolic links not followed).

    `final_only`: only the files of end-of-run events (`write_final`'s, named `*.final`).
    """
    found = []
    for folder, _, files in os.walk(Path(workdir) / EVENTS_DIR, followlinks=False):
        found += [
            Path(folder) / name
            for name in files
            if name.startswith("events.out.tfevents.") and (name.endswith(FINAL_SUFFIX) or not final_only)
        ]
    return sorted(found)


def import_tensorboardx() -> Any:
    """The `tensorboardX` package, imported when a run writes events (not when the library loads), without torch.

    tensorboardX's `writer` module runs `import torch` at import time when PyTorch is installed, only to
    name `torch.Tensor` in type hints: a second of a run's start on a 2-core CPU (`python -X importtime`).
    We write numpy arrays only, so torch is hidden from that one import (``sys.modules["torch"] = None``
    makes its `import torch` raise ImportError, which tensorboardX catches) and unhidden right after;
    a torch already imported by the caller is left alone and used.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tensorboardX
        import tensorboardX.summary  # noqa: F401  (hparams, used by write_final)
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return tensorboardX


def open_writer(directory: Path, purge_step: int | None = None, *, final: bool = False) -> Any:
    """A tensorboardX SummaryWriter on `directory` (created; a symbolic link there is replaced), flushing every 10 s.

    `purge_step`: TensorBoard drops the events that earlier files in this
    directory hold at steps >= it (e+1 when resuming after epoch e: the epochs
    the interrupted run wrote after its checkpoint). Each writer gets its own file, named so that names sort in opening
    order (tensorboardX names files by the second; TensorBoard reads them sorted); `final` ends the name in `.final`.
    """
    SummaryWriter = import_tensorboardx().SummaryWriter  # noqa: N806  (a class)

    directory = Path(directory)
    if directory.is_symlink():  # never write through a link planted in the run directory: replace it, as files are
        directory.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    suffix = f".{time.time_ns():020d}.{os.getpid()}"  # file names sort in the order the files were opened
    suffix += FINAL_SUFFIX if final else ""
    return SummaryWriter(logdir=str(directory), flush_secs=10, purge_step=purge_step, filename_suffix=suffix)


def write_epoch(writer: Any, epoch: int, logs: Mapping[str, float], extra: Mapping[str, float] = {}) -> None:
    """One epoch's scalars (history.csv's columns, then `extra`) at step `epoch`; non-finite values skipped."""
    for name, value in {**logs, **extra}.items():
        if value is not None and math.isfinite(float(value)):
            writer.add_scalar(name, float(value), epoch)


def _hparam_value(value: Any) -> bool | int | float | str:
    """The HParams plugin takes bool, number or string: tuples, lists and None become their text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def hparams_of(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """A config dict (config.json's content) as HParams values."""
    return {name: _hparam_value(value) for name, value in config.items()}


def test_metrics_of(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric `test_*`/`xgb_test_*` entries of metrics.json (bools excluded)."""
    picked = {}
    for name, value in metrics.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name.startswith(("test_", "xgb_test_")) and numeric and math.isfinite(float(value)):
            picked[name] = float(value)
    return picked


def read_history_csv(path: Path) -> list[dict[str, float]]:
    """history.csv's rows as dicts of floats (empty cells skipped); [] when the file is absent."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def write_final(
    workdir: Path,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    sections: Sequence[tuple[str, str]],
    figures: Mapping[str, str],
    *,
    epochs_from_csv: bool,
) -> Path:
    """The end-of-run events in `<workdir>/tb/`: test metrics, HParams, text and images.

    With `epochs_from_csv` (nobody streamed the epochs while training, e.g. a
    run called from Python without a run scope), history.csv's rows are written
    first. Returns the events directory.
    """
    hparams_summary = import_tensorboardx().summary.hparams

    directory = events_dir(workdir)
    if epochs_from_csv:  # the whole run is written now: nothing of an earlier run may stay
        clear_events(workdir)
    rows = read_history_csv(Path(workdir) / "history.csv") if epochs_from_csv else []
    tests = test_metrics_of(metrics)
    step = int(metrics.get("epochs_run") or len(rows) or 0)
    with open_writer(directory, final=True) as writer:
        for row in rows:
            epoch = int(row.pop("epoch"))
            write_epoch(writer, epoch, row)
        for name, value in tests.items():
            writer.add_scalar(name, value, step)
        if epochs_from_csv and isinstance(metrics.get("compile_seconds"), (int, float)):  # else streamed at epoch 1
            writer.add_scalar("compile_seconds", float(metrics["compile_seconds"]), 1)
        experiment, start, end = hparams_summary(hparams_of(config), tests)
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary)
        for heading, body in sections:
            writer.add_text(heading, body, step)
        for caption, name in figures.items():
            image = png_image_summary(caption, Path(workdir) / name)
            if image is not None:
                writer.file_writer.add_summary(image, step)
    return directory


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels (3: palette, shown as RGB)


def png_image_summary(caption: str, path: Path) -> Any:
    """A TensorBoard image summary holding the PNG file's own bytes (no decoding or re-encoding), or None when
    `path` is not a PNG file. Height, width and channels come from the PNG's IHDR chunk (PNG spec, section 11.2.2).
    """
    if path.suffix.lower() != ".png" or not path.is_file():
        return None
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    summary_pb2 = importlib.import_module("tensorboardX.proto.summary_pb2")  # after import_tensorboardx (no torch)
    image = summary_pb2.Summary.Image(
        height=height, width=width, colorspace=PNG_CHANNELS.get(data[25], 4), encoded_image_string=data
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=caption, image=image)])
