"""The host side of a many-models program: per-model progress, early stopping and checkpoints.

`Progress` holds, for N models, what `Trainer.fit` keeps for one: the early-stopping state (best value,
best epoch, wait; Keras's rule `callbacks.early_stopping_update` applied to all models at once), epochs
run, frozen / stopped / diverged flags and the histories (float32 (N, epochs), NaN where a model did not
train). `SweepCheckpointer` saves the stacked device state of the models (train states, traced
hyperparameters, dropout keys, best weights) through `dlchapter.checkpoint.store.CheckpointStore` (orbax) with
the progress and the run's identity as JSON meta, so an interrupted sweep resumes after its last saved
epoch and ends with exactly the numbers of an uninterrupted one. A rerun whose identity differs (other
models, module, task, optimizer, data shapes...) raises `RunMismatch` before anything trains; a larger
`epochs` trains on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlchapter.checkpoint import set_aside
from dlchapter.checkpoint.run_identity import DATA_DIGEST_FIELD, check_same_run, refusal_advice
from dlchapter.checkpoint.store import CheckpointStore
from dlchapter.engine.callbacks import EarlyStopping, early_stopping_update

logger = logging.getLogger("dlchapter.engine.train")  # the same line as a single run's resume, same logger

PyTree = Any
_FLAGS = ("frozen", "stopped", "diverged", "keep")
_COUNTS = ("best_epoch", "wait", "epochs_run")


@dataclass
class Progress:
    """Per-model host state of a many-models fit, all (N,) numpy arrays but `history` and `epoch`.

    `keep[i]`: model i improved in the last epoch, so its weights become its best at the next program call.
    """

    best: np.ndarray
    best_epoch: np.ndarray
    wait: np.ndarray
    epochs_run: np.ndarray
    frozen: np.ndarray
    stopped: np.ndarray
    diverged: np.ndarray
    keep: np.ndarray
    history: dict[str, np.ndarray] = field(default_factory=dict)
    epoch: int = 0  # epochs done

    @classmethod
    def start(cls, n: int, rule: EarlyStopping | None) -> Progress:
        best = np.full(n, -np.inf if rule is not None and rule.maximize else np.inf)
        zeros = [np.zeros(n, np.int64) for _ in _COUNTS]
        return cls(best, *zeros, *(np.zeros(n, bool) for _ in _FLAGS))

    def record(
        self, logs: dict[str, np.ndarray], nonfinite: np.ndarray, epochs: int, rule: EarlyStopping | None
    ) -> None:
        """Add one epoch: logs (name -> float64 (N,)), the first non-finite step per model (-1: none)."""
        n, epoch, running = len(self.best), self.epoch, ~self.frozen
        for name, values in logs.items():
            column = self.history.setdefault(name, np.full((n, epochs), np.nan, np.float32))
            column[running, epoch] = values[running]
        self.epochs_run[running] = epoch + 1
        bad = running & (np.asarray(nonfinite) >= 0)
        self.keep = np.zeros(n, bool)
        if rule is not None:
            judged = running & ~bad
            improved, best, wait, stop = early_stopping_update(
                self.best,
                self.wait,
                logs[rule.monitor],
                mode="max" if rule.maximize else "min",
                min_delta=rule.min_delta,
                patience=rule.patience,
                first=self.best_epoch == 0,
            )
            self.keep = judged & improved
            self.best, self.best_epoch = (
                np.where(self.keep, best, self.best),
                np.where(self.keep, epoch + 1, self.best_epoch),
            )
            self.wait, self.stopped = np.where(judged, wait, self.wait), self.stopped | (judged & stop)
        self.diverged |= bad
        self.frozen |= self.stopped | bad
        self.epoch += 1

    def to_meta(self) -> dict[str, Any]:
        """JSON-able (floats exact through repr; NaN/Infinity as JSON's extensions)."""
        arrays = {k: getattr(self, k).tolist() for k in ("best", *_COUNTS, *_FLAGS)}
        return {**arrays, "epoch": self.epoch, "history": {k: v.tolist() for k, v in self.history.items()}}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], epochs: int) -> Progress:
        """The progress `to_meta` stored; histories widened to `epochs` columns (a resume may train longer)."""
        history = {}
        for name, rows in meta["history"].items():
            stored = np.asarray(rows, np.float32)
            history[name] = np.full((stored.shape[0], max(epochs, stored.shape[1])), np.nan, np.float32)
            history[name][:, : stored.shape[1]] = stored
        return cls(
            np.asarray(meta["best"], np.float64),
            *(np.asarray(meta[k], np.int64) for k in _COUNTS),
            *(np.asarray(meta[k], bool) for k in _FLAGS),
            history,
            int(meta["epoch"]),
        )


@dataclass(frozen=True)
class SweepCheckpoint:
    """Where and how often a many-models fit saves: every `every_epochs` epochs and at the end.

    `restart`: start over (else a run resumes from the directory's checkpoints); the earlier checkpoints are
    set aside and deleted only at this run's first save, put back if it fails before (`checkpoint.set_aside`).
    `run_config`: the run's resolved config (a JSON dict) to bind the checkpoints to, as
    `resume.CheckpointConfig`'s; None: the engine's own identity (`ManyModels.identity`: models, module, task,
    optimizer, data shapes).
    """

    directory: str | os.PathLike[str]
    every_epochs: int = 1
    restart: bool = False
    run_config: dict[str, Any] | None = None


class SweepCheckpointer:
    """Saves and restores (stacked members, `Progress`) for one run identity (a JSON dict)."""

    def __init__(self, config: SweepCheckpoint, identity: dict[str, Any]):
        if config.every_epochs < 1:
            raise ValueError(f"every_epochs must be at least 1, got {config.every_epochs}")
        self.config = config
        if config.run_config is not None:  # the data set's name is in the run config; its digest tells data apart
            digest = identity["data"]["content_digest"]
            identity = {"run": config.run_config, "models": identity["models"], DATA_DIGEST_FIELD: digest}
        self.identity = identity
        self.advice = refusal_advice(config.run_config)
        self.replacement = set_aside.Replacement(Path(config.directory), config.restart)
        self.store = CheckpointStore(config.directory, keep_last=2)

    def restore(self, template: PyTree, epochs: int) -> tuple[PyTree, Progress] | None:
        """The newest intact checkpoint's (members, progress), or None in an empty directory.

        Raises RunMismatch (a CheckpointError) when the checkpoint belongs to another run identity.
        """
        if self.store.latest_step() is None:
            return None

        def accept(meta, step):
            where = f"{self.store.directory} (step {step})"
            return check_same_run(meta.get("identity"), self.identity, where, self.advice)

        members, meta, step = self.store.restore(template, accept=accept)
        progress = Progress.from_meta(meta["progress"], epochs)
        where = f"checkpoint step {step} in {self.store.directory}"
        if progress.frozen.all():
            logger.info(f"{where}: every model stopped after {progress.epoch} epochs; nothing to train")
        elif progress.epoch >= epochs:
            logger.info(f"{where}: the run finished its {progress.epoch} epochs; nothing to train")
        else:
            logger.info(f"resuming from {where} at epoch {progress.epoch + 1} of {epochs}")
        return members, progress

    def due(self, progress: Progress, epochs: int) -> bool:
        return progress.epoch % self.config.every_epochs == 0 or progress.epoch >= epochs or progress.frozen.all()

    def save(self, members: PyTree, progress: Progress) -> None:
        """Checkpoint step = epochs done (blocking: the members' buffers are donated to the next epoch)."""
        self.store.save(
            progress.epoch, members, {"identity": self.identity, "progress": progress.to_meta()}, force=True
        )
        self.store.wait()
        self.replacement.saved()

    def close(self) -> None:
        self.store.close()

    def abandon(self) -> None:
        """The run failed: close the store and, before its first save, put the set-aside checkpoints back."""
        self.store.close_after_failure()
        self.replacement.failed()
