"""Checkpoints for training runs: the one module in dlchapter that talks to orbax.

A :class:`CheckpointStore` keeps one run's checkpoints in a directory. Each
checkpoint is one orbax step directory holding three items:

* ``state``: the arrays pytree (params, optimizer state, step, rng, ...),
  written with ``StandardSave`` (tensorstore/OCDBT; no pickle anywhere).
  Typed PRNG keys are stored as their ``jax.random.key_data`` and rewrapped
  on restore.
* ``meta``: a JSON dict chosen by the caller (epoch, position in the epoch,
  early-stopping state, history, config).
* ``manifest``: JSON written by this module (`dlchapter.checkpoint.checkpoint_manifest`):
  every leaf's path, shape, dtype and a sha256 of its bytes, and a sha256 of
  the meta. It lets :meth:`CheckpointStore.restore` name the exact parameter
  that does not fit a template, and detect damaged arrays or edited metadata
  that tensorstore and orbax would read back silently.

Orbax does the rest: it writes each step to a temporary directory and commits
it with a rename, deletes old steps only after the new one is committed, keeps
the last ``keep_last`` steps plus the best one by ``best_metric`` (an
``AnyPreservationPolicy`` of ``LatestN`` and ``BestN``), and coordinates hosts.

Restoring without a step takes the newest checkpoint that reads back intact
(arrays, manifest, meta and orbax's metrics file, and the meta passes the
caller's schema check); damaged newer ones are reported with one
:class:`CheckpointWarning` each and moved to ``<directory>/corrupt/`` so that
training can go on saving after them. Disk-full, read-only and permission
failures become one-line :class:`CheckpointWriteError`s.
The orbax manager it drives is :mod:`dlchapter.checkpoint.orbax_manager`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from dlchapter.checkpoint.checkpoint_errors import (  # noqa: F401  (re-exported: the public error types)
    CheckpointError,
    CheckpointMismatch,
    CheckpointWarning,
    CheckpointWriteError,
    NoUsableCheckpoint,
    install_quiet_unraisable_hook,
    write_error,
)
from dlchapter.checkpoint.checkpoint_manifest import (
    check_manifest,
    describe,
    digest,
    fits,
    fmt,
    is_key,
    path_str,
    prepare,
)
from dlchapter.checkpoint.orbax_manager import DamagedStep, StepManager, short_error

PyTree = Any

_STATE, _META, _MANIFEST = "state", "meta", "manifest"
QUARANTINE_DIRNAME = "corrupt"
_barrier_ids = itertools.count()


class CheckpointStore:
    """Saves and restores one run's checkpoints in `directory` through orbax.

    Keeps the newest `keep_last` checkpoints (all when None) and, when
    `best_metric` is given, also the single best one by that metric
    (`best_mode` "min" or "max"). `save_every` skips saves whose step is not a
    multiple of it (unless forced; the first save in a fresh directory always
    happens). `async_save` returns from `save` once the arrays are copied to
    host memory and writes in the background; call `wait` before reading.
    `checksums` hashes every leaf at save time so that damaged data is caught on
    restore. A `read_only` store never writes, deletes or moves anything.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int | None = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        save_every: int = 1,
        async_save: bool = False,
        checksums: bool = True,
        read_only: bool = False,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 or None, got {keep_last}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if save_every < 1:
            raise ValueError(f"save_every must be at least 1, got {save_every}")
        path = epath.Path(directory)
        self._directory = path if "://" in os.fspath(directory) else path.absolute()
        if read_only and not self._directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self._directory} does not exist")
        self._best_metric, self._best_mode = best_metric, best_mode
        self._checksums, self._read_only = checksums, read_only
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep_last)]
        best_fn = None if best_metric is None else self._score
        if best_fn is not None:  # BestN keeps the checkpoint that sorts last: reverse for "min"
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn, reverse=best_mode == "min", n=1, keep_checkpoints_without_metrics=False
                )
            )
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_every,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            best_fn=best_fn,  # makes orbax write the metrics and answer best_step()
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        items = (_STATE, _META, _MANIFEST)
        install_quiet_unraisable_hook()
        try:
            self._manager = StepManager(self._directory, options=options, item_names=items)
        except Exception as err:  # noqa: BLE001  (a directory that cannot be created or read)
            raise write_error(err, "checkpoints", self._directory) or err from None

    def _score(self, metrics: Mapping[str, Any]) -> float:
        """Orbax's best_fn: the monitored metric; NaN or missing ranks worst."""
        value = float(metrics.get(self._best_metric, math.nan))
        if math.isnan(value):
            return math.inf if self._best_mode == "min" else -math.inf
        return value

    # ----------------------------------------------------------------- queries
    @property
    def directory(self) -> epath.Path:
        """The directory that holds the step subdirectories."""
        return self._directory

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints currently kept, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest step saved, or None when there is none."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric`; None without a metric or metrics."""
        if self._best_metric is None:
            return None
        return self._manager.best_step()

    def step_path(self, step: int) -> epath.Path:
        """The directory of one step's checkpoint."""
        return self._directory / str(step)

    # ------------------------------------------------------------------ saving
    def save(
        self,
        step: int,
        state: PyTree,
        meta: Mapping[str, Any] | None = None,
        *,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves `state` (arrays pytree) and `meta` (JSON dict) as checkpoint `step`.

        `metrics` rank checkpoints by `best_metric` (unused without one; a save
        without metrics is kept only while among the last `keep_last`). Returns False when the step
        is skipped by `save_every` (and not `force`d), True when saved. Steps must
        increase: saving at or below the latest step raises CheckpointError.
        """
        if self._read_only:
            raise CheckpointError(f"checkpoint store {self._directory} is read-only")
        step = int(step)
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise CheckpointError(
                f"cannot save step {step} in {self._directory}: it already holds step {latest}; "
                "steps must increase (restore the latest step to resume, or use a new directory)"
            )
        if not force and not self._manager.should_save(step):
            return False
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as err:
            raise TypeError(f"meta must be JSON-serializable (dicts, lists, str, numbers): {err}") from err
        if metrics is not None:
            metrics = {str(k): float(v) for k, v in metrics.items()}
            if self._best_metric is not None and self._best_metric not in metrics:
                raise ValueError(
                    f"metrics for step {step} lack the monitored metric {self._best_metric!r}; got {sorted(metrics)}"
                )
        stored, manifest = prepare(state, meta, self._checksums)
        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardSave(stored),
                _META: ocp.args.JsonSave(meta),
                _MANIFEST: ocp.args.JsonSave(manifest),
            }
        )
        try:
            return bool(self._manager.save(step, args=args, metrics=metrics, force=True))
        except Exception as err:  # noqa: BLE001  (orbax and tensorstore report OS failures as many types)
            raise write_error(err, f"checkpoint step {step}", self._directory) or err from None

    def wait(self) -> None:
        """Blocks until a background save has been committed (and old steps pruned).

        Raises CheckpointWriteError when the background write failed for an operating-system reason.
        """
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            raise write_error(err, "a checkpoint", self._directory) or err from None

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources (CheckpointWriteError as `wait`)."""
        try:
            self._manager.close()
        except Exception as err:
            raise write_error(err, "a checkpoint", self._directory) or err from None

    def close_after_failure(self) -> None:
        """`close` while another failure is being raised: a CheckpointError of its own is dropped, so the
        failure reported is the one that ended the run."""
        try:
            self.close()
        except CheckpointError:
            pass

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --------------------------------------------------------------- restoring
    def restore(
        self,
        template: PyTree | None,
        step: int | None = None,
        *,
        quarantine: bool = True,
        validate_meta: Callable[[dict[str, Any]], None] | None = None,
        accept: Callable[[dict[str, Any], int], None] | None = None,
    ) -> tuple[PyTree, dict[str, Any], int]:
        """Restores `(state, meta, step)`.

        `template` is a pytree like the saved state (concrete or
        `jax.ShapeDtypeStruct` leaves; typed keys allowed); the result has its
        structure, types, dtypes and shardings. With None, the state comes back
        as orbax stored it (nested dicts and lists) and typed keys are rewrapped.
        `validate_meta(meta)` checks the metadata's content: a ValueError,
        TypeError or KeyError from it marks the step as damaged, like a failed
        array checksum. `accept(meta, step)` is called on the newest step whose
        metadata is intact, before its arrays are read and before anything is
        moved; a CheckpointError from it (e.g. the step belongs to another run)
        propagates and leaves the directory untouched.
        Without `step`, takes the newest checkpoint that reads back intact;
        damaged newer ones are set aside with one CheckpointWarning each (moved
        to `<directory>/corrupt/` when `quarantine` is true). Raises
        CheckpointError when no checkpoint is usable (nothing is moved then),
        when an explicit `step` is missing or damaged, or when the template does
        not fit the checkpoint.
        """
        self.wait()
        if step is not None:
            if step not in self._manager.all_steps():
                raise CheckpointError(
                    f"no checkpoint for step {step} in {self._directory}; kept steps: {self.all_steps()}"
                )
            try:
                return self._restore_step(template, step, validate_meta, accept)
            except DamagedStep as err:
                raise CheckpointError(f"checkpoint {self.step_path(step)} is damaged: {err}") from None
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoints in {self._directory}")
        damaged: list[tuple[int, str]] = []
        for candidate in steps:
            try:
                result = self._restore_step(template, candidate, validate_meta, accept)
            except DamagedStep as err:
                damaged.append((candidate, str(err)))
                continue
            moved = self._quarantine([s for s, _ in damaged]) if damaged and quarantine and not self._read_only else {}
            for bad, why in damaged:
                where = f"moved to {moved[bad]}" if bad in moved else "skipped"
                warnings.warn(
                    f"checkpoint step {bad} in {self._directory} is damaged ({why}); {where}; "
                    f"resuming from step {candidate}",
                    CheckpointWarning,
                    stacklevel=2,
                )
            return result
        reasons = "; ".join(f"step {s}: {why}" for s, why in damaged)
        raise NoUsableCheckpoint(f"no usable checkpoint in {self._directory} ({reasons})")

    def _restore_step(
        self,
        template: PyTree | None,
        step: int,
        validate_meta: Callable[[dict[str, Any]], None] | None,
        accept: Callable[[dict[str, Any], int], None] | None,
    ) -> tuple[PyTree, dict[str, Any], int]:
        if step in self._manager.bad_metrics:
            raise DamagedStep(self._manager.bad_metrics[step])
        try:
            json_args = {_META: ocp.args.JsonRestore(), _MANIFEST: ocp.args.JsonRestore()}
            items = self._manager.restore(step, args=ocp.args.Composite(**json_args))
            meta, manifest = items[_META], items[_MANIFEST]
        except Exception as err:  # orbax/tensorstore raise many types
            raise DamagedStep(f"cannot read its meta or manifest ({short_error(err)})") from None
        try:
            entries = check_manifest(manifest, meta)
            if validate_meta is not None:
                validate_meta(meta)
        except (ValueError, TypeError, KeyError) as err:
            raise DamagedStep(f"bad metadata: {err}") from None
        if accept is not None:  # the metadata is intact: the caller may refuse the step before arrays are read
            accept(meta, step)
        target = None if template is None else self._restore_target(template, entries, step)
        try:
            state_args = ocp.args.StandardRestore(target)
            restored = self._manager.restore(step, args=ocp.args.Composite(**{_STATE: state_args}))[_STATE]
        except Exception as err:
            raise DamagedStep(f"cannot read its arrays ({short_error(err)})") from None
        flat, treedef = jax.tree_util.tree_flatten_with_path(restored)
        leaves = []
        for path, leaf in flat:
            name = path_str(path)
            entry = entries.get(name, {})
            expected = entry.get("sha256")
            if expected is not None:
                got = digest(leaf, entry.get("data_dtype", entry["dtype"]))
                if got is not None and got != expected:
                    raise DamagedStep(f"{name}: the data differs from the checksum written at save time")
            if "key_impl" in entry:
                leaf = jax.random.wrap_key_data(leaf, impl=entry["key_impl"])
            leaves.append(leaf)
        return jax.tree_util.tree_unflatten(treedef, leaves), meta, step

    def _restore_target(self, template: PyTree, entries: Mapping[str, Any], step: int) -> PyTree:
        """Checks `template` against the manifest and returns orbax's restore target."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(template)
        problems, targets, seen = [], [], set()
        for path, leaf in flat:
            name = path_str(path)
            seen.add(name)
            entry = entries.get(name)
            if entry is None:
                problems.append(f"{name}: the run expects {fmt(*describe(leaf))}, the checkpoint has no such entry")
            elif not fits(leaf, entry):
                problems.append(
                    f"{name}: checkpoint has {fmt(entry['shape'], entry['dtype'])}, "
                    f"the run expects {fmt(*describe(leaf))}"
                )
            elif is_key(leaf):  # orbax reads the stored key data; rewrapped after the checksum
                is_array = isinstance(leaf, jax.Array)
                leaf = jax.random.key_data(leaf) if is_array else jax.eval_shape(jax.random.key_data, leaf)
            targets.append(leaf)
        for name, entry in entries.items():
            if name not in seen:
                problems.append(
                    f"{name}: checkpoint has {fmt(entry['shape'], entry['dtype'])}, the run has no such entry"
                )
        if problems:
            more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
            where = self.step_path(step)
            raise CheckpointMismatch(f"checkpoint {where} does not fit the template: {problems[0]}{more}")
        return jax.tree_util.tree_unflatten(treedef, targets)

    def _quarantine(self, steps: list[int]) -> dict[int, epath.Path]:
        """Moves damaged steps to `<directory>/corrupt/` so later saves can follow them; step -> new place."""
        dest_root = self._directory / QUARANTINE_DIRNAME
        moved: dict[int, epath.Path] = {}
        if ocp.multihost.is_primary_host(0):
            dest_root.mkdir(parents=True, exist_ok=True)
            for step in steps:
                names = itertools.chain([str(step)], (f"{step}.{n}" for n in itertools.count(1)))
                dest = next(dest_root / name for name in names if not (dest_root / name).exists())
                self.step_path(step).rename(dest)
                moved[step] = dest
        ocp.multihost.sync_global_processes(f"dlchapter_checkpoint_quarantine_{next(_barrier_ids)}")
        self._manager.reload()
        return moved
