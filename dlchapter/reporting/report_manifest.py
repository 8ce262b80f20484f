"""Which report files a run directory holds: a manifest of this run's, and the removal of an earlier run's.

A run without checkpoints may be rerun into a directory that holds an earlier run's report (another task,
other flags). When the new report is written (`report.write_run`, after training: a run that fails or is
refused leaves the earlier report as it was), the report files of the earlier run that this run does not
write are deleted, one warning line names them, and `report_files.json` lists the files this run wrote.

Only files dlchapter writes are ever deleted, by name: those the earlier run's `report_files.json` lists, or,
for a directory written before manifests existed, the fixed names in `EARLIER_REPORT_FILES`. Anything else
a user put in the directory (notes, their own CSVs, sub-folders) is never touched; `tb/` (TensorBoard) is
managed by `dlchapter.reporting.tracking` and `checkpoints/` by the resume rules.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from dlchapter.reporting import safe_write

logger = logging.getLogger(__name__)

MANIFEST = "report_files.json"

# Every fixed report-file name some dlchapter run writes (for directories without a manifest).
EARLIER_REPORT_FILES = frozenset(
    {
        "metrics.json",
        "config.json",
        "summary.md",
        "history.csv",
        "predictions.csv",
        "classification_report.json",
        "models.csv",
        "histories.npz",
        *(
            f"{name}.png"
            for name in (
                "training_curves",
                "actual_vs_predicted",
                "nn_vs_xgboost",
                "roc_curve",
                "confusion_matrix",
                "sample_images",
                "misclassified",
                "validation_curves",
                "overfitting",
                "forecasts_test",
                "forecasts_test_90days",
                "sample_predictions",
                "activations",
                "softmax_hardmax",
                "loss_curve",
                "decision_boundary",
                "batch_size",
                "optimizers",
                "fold_scores",
            )
        ),
        *(  # the sequence runs' per-model files (dlchapter.runs.sequence_runs.MODEL_NAMES)
            f"{kind}_{model}.{ext}"
            for model in ("simple_rnn", "gru", "lstm", "dense", "persistence")
            for kind, ext in (("history", "csv"), ("training_curves", "png"), ("confusion_matrix", "png"))
        ),
    }
)


def earlier_report_files(workdir: str | os.PathLike) -> list[str]:
    """The names of the report files an earlier run left in `workdir` (those still there), sorted.

    From its `report_files.json` when it has one (plain names only), else the present `EARLIER_REPORT_FILES`.
    """
    path = Path(workdir)
    try:
        listed = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
        names = {n for n in listed if isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..")}
    except (OSError, ValueError, KeyError, TypeError):  # no manifest (or not ours): the fixed names
        names = set(EARLIER_REPORT_FILES)
    return sorted(n for n in names if (path / n).is_file() and not (path / n).is_symlink())


def finish_report(workdir: str | os.PathLike, produced: Iterable[str] = ()) -> list[str]:
    """Delete the earlier run's report files that this run did not write; write `report_files.json`.

    `produced` adds names to those this process wrote in `workdir` through `dlchapter.reporting.safe_write`
    (every report file and figure does). Returns the deleted names; a warning line names them.
    """
    path = Path(workdir)
    mine = safe_write.take_written(path) | set(produced)
    stale = [name for name in earlier_report_files(path) if name not in mine and name != MANIFEST]
    for name in stale:
        (path / name).unlink(missing_ok=True)
    if stale:
        logger.warning(
            "removed %d report file(s) of the earlier run in %s that this run does not write: %s",
            len(stale),
            path,
            ", ".join(stale),
        )
    files = sorted(n for n in mine | {MANIFEST} if n == MANIFEST or (path / n).is_file())
    text = json.dumps({"files": files}, indent=2) + "\n"
    safe_write.write_text(path / MANIFEST, text)
    safe_write.take_written(path)  # the manifest itself: nothing is left recorded for the next run
    return stale


__all__ = ["EARLIER_REPORT_FILES", "MANIFEST", "earlier_report_files", "finish_report"]
