"""The run directory: metrics.json, history.csv, config.json and summary.md.

Figures are made by `dlchapter.reporting.plots`; this module only writes files, each
through `dlchapter.reporting.safe_write` (an exclusive temporary file, then
`os.replace`), so an interrupted run never leaves half a report and a symbolic
link planted in the run directory is replaced, never written through.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlchapter.configs.config import config_dict
from dlchapter.engine.train import History
from dlchapter.reporting import helper_process, report_manifest, safe_write, scores, tracking


def _atomic_write(path: Path, text: str) -> None:
    """UTF-8 `text` to `path` through `dlchapter.reporting.safe_write` (kept for callers of this name)."""
    safe_write.write_text(path, text)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON (non-finite floats become null)."""
    _atomic_write(Path(path), json.dumps(_json_safe(dict(data)), indent=2, sort_keys=False) + "\n")


def write_history(path: Path, history: History) -> None:
    """One CSV row per epoch: epoch, then every logged value."""
    rows = history.as_rows()
    buffer = io.StringIO()
    names = ["epoch", *history.values.keys()]
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(Path(path), buffer.getvalue())


def write_columns(path: Path, columns: Mapping[str, Sequence[Any]]) -> None:
    """A CSV with one column per entry of `columns` (equal lengths), e.g. a run's test predictions."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns.keys())
    writer.writerows(zip(*(np.asarray(v).tolist() for v in columns.values())))
    _atomic_write(Path(path), buffer.getvalue())


def earlier_run_timing(workdir: Path, config: Any, history: History) -> dict[str, Any]:
    """The training and compile seconds of a run that this rerun restored whole from its checkpoints.

    A rerun of a finished checkpointed run trains nothing (``history.epochs_trained == 0``), so its own
    timings measure a restore. Returns the earlier report's ``train_seconds``, ``compile_seconds`` and
    ``compile_from_cache`` when `workdir`'s config.json is this run's config and its metrics.json has the
    same ``epochs_run`` (that report was written by the run the checkpoints hold); else ``train_seconds`` is
    the sum of the restored epochs' ``epoch_seconds`` (compilation excluded) and ``compile_seconds`` None.
    ``timing_source`` says which.
    """
    workdir = Path(workdir)
    try:
        same = json.loads((workdir / "config.json").read_text()) == json.loads(json.dumps(config_dict(config)))
        earlier = json.loads((workdir / "metrics.json").read_text()) if same else {}
    except (OSError, ValueError):
        earlier = {}
    if earlier.get("epochs_run") == history.epochs_run and isinstance(earlier.get("train_seconds"), (int, float)):
        keys = ("train_seconds", "compile_seconds", "compile_from_cache")
        return {**{k: earlier[k] for k in keys if k in earlier}, "timing_source": "the earlier report"}
    return {
        "train_seconds": float(sum(history.values.get("epoch_seconds", []))),
        "compile_seconds": None,
        "timing_source": "the checkpointed epochs' epoch_seconds",
    }


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of dict rows; floats get 4 significant digits, an `Undefined` score "undefined: <reason>"."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(path: Path, title: str, sections: Sequence[tuple[str, str]], figures: Mapping[str, str] = {}) -> None:
    """summary.md: a title, (heading, Markdown body) sections, then the figures inline."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    if figures:
        parts += ["## Figures", ""]
        parts += [f"### {caption}\n\n![{caption}]({name})\n" for caption, name in figures.items()]
    _atomic_write(Path(path), "\n".join(parts))


def write_run(
    workdir: Path,
    config: Any,
    metrics: Mapping[str, Any],
    title: str,
    sections: Sequence[tuple[str, str]],
    figures: Mapping[str, str] = {},
) -> None:
    """The files every run writes: metrics.json, config.json (from the config dataclass) and summary.md.

    Scores that are `dlchapter.reporting.scores.Undefined` are ``null`` in metrics.json, listed with their
    reasons under "undefined_scores" there and in a summary section, and announced by one
    `UndefinedScoreWarning`. Last, the report files of an earlier run in `workdir` that this run did not write
    are deleted and `report_files.json` lists this run's (`dlchapter.reporting.report_manifest`).
    """
    workdir = Path(workdir)
    helper_process.wait_for_figures()  # figures drawn in the helper exist before the summary and events name them
    undefined = dict(scores.undefined_scores(dict(metrics)))
    if undefined:
        metrics = {**metrics, "undefined_scores": undefined}
        listed = "; ".join(f"{key}: {reason}" for key, reason in undefined.items())
        message = f"{len(undefined)} score(s) undefined, reported as null: {listed}"
        warnings.warn(message, scores.UndefinedScoreWarning, stacklevel=2)
        rows = [{"score": key, "value": f"undefined: {reason}"} for key, reason in undefined.items()]
        sections = [*sections, ("Undefined scores", markdown_table(rows) + "\n\nThese are null in metrics.json.")]
    metrics = tracking.finish_run(workdir, config_dict(config), metrics, sections, figures)  # TensorBoard: tb/
    write_json(workdir / "metrics.json", metrics)
    write_json(workdir / "config.json", config_dict(config))
    write_summary(workdir / "summary.md", title, sections, figures)
    report_manifest.finish_report(workdir, figures.values())
