"""Checkpoints for training runs: the one module in dlchapter that talks to orbax.

A :class:`CheckpointStore` keeps one run's checkpoints in a directory. Each
checkpoint is one orbax step directory holding three items:

* ``state``: the arrays pytree (params, optimizer state, step, rng, ...),
  written with ``StandardSave`` (tensorstore/OCDBT; no pickle anywhere).
  Typed PRNG keys are stored as their ``jax.random.key_data`` and rewrapped
  on restore.
* ``meta``: a JSON dict chosen by the caller (epoch, position in the epoch,
  early-stopping state, history, config).
* ``manifest``: JSON written by this module: every leaf's path, shape, dtype
  and a sha256 of its bytes. It lets :meth:`CheckpointStore.restore` name the
  exact parameter that does not fit a template, and detect damaged data that
  tensorstore would read back silently.

Orbax does the rest: it writes each step to a temporary directory and commits
it with a rename, deletes old steps only after the new one is committed, keeps
the last ``keep_last`` steps plus the best one by ``best_metric`` (an
``AnyPreservationPolicy`` of ``LatestN`` and ``BestN``), and coordinates hosts.

Restoring without a step takes the newest checkpoint that reads back intact;
damaged newer ones are reported with a :class:`CheckpointWarning` and moved to
``<directory>/corrupt/`` so that training can go on saving after them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any

_STATE, _META, _MANIFEST = "state", "meta", "manifest"
_FORMAT = 1
QUARANTINE_DIRNAME = "corrupt"
_barrier_ids = itertools.count()


class _NoMetricsNoise(logging.Filter):
    """Drops orbax's warning for a save without metrics: mid-epoch saves have none by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricsNoise())


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not fit what it is restored into."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped or moved aside; the message names the step and why."""


class _Damaged(Exception):
    """Internal: the step's files cannot be read back intact."""


def _path_str(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _is_py_scalar(leaf: Any) -> bool:
    return isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic)


def _describe(leaf: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype name of an array, abstract array, typed key or scalar."""
    if _is_key(leaf):
        return tuple(leaf.shape), str(leaf.dtype)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), jnp.dtype(leaf.dtype).name
    value = np.asarray(leaf)
    return value.shape, value.dtype.name


def _fmt(shape: tuple[int, ...] | list[int], dtype: str) -> str:
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def _digest(value: Any, dtype: str) -> str | None:
    """sha256 of the leaf's bytes as `dtype`; None where this host cannot see all of it."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return None
    array = np.ascontiguousarray(np.asarray(value).astype(jnp.dtype(dtype), copy=False))
    return hashlib.sha256(array.tobytes()).hexdigest()


def _fits(leaf: Any, entry: Mapping[str, Any]) -> bool:
    """Whether a template leaf can take the stored entry (Python scalars match by kind)."""
    shape, dtype = tuple(entry["shape"]), entry["dtype"]
    if _is_py_scalar(leaf):
        kind = np.bool_ if isinstance(leaf, bool) else np.integer if isinstance(leaf, int) else np.floating
        return shape == () and "key_impl" not in entry and jnp.issubdtype(jnp.dtype(dtype), kind)
    return _describe(leaf) == (shape, dtype)


def _prepare(state: PyTree, checksums: bool) -> tuple[PyTree, dict[str, Any]]:
    """Replaces typed keys by their key data and builds the JSON manifest."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves, entries = [], {}
    for path, leaf in flat:
        name = _path_str(path)
        if name in entries:
            raise ValueError(f"two leaves of the state share the path {name!r}; rename one")
        shape, dtype = _describe(leaf)
        entry: dict[str, Any] = {"shape": list(shape), "dtype": dtype}
        if _is_key(leaf):
            entry["key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
            entry["data_shape"], entry["data_dtype"] = list(leaf.shape), jnp.dtype(leaf.dtype).name
        if checksums:
            entry["sha256"] = _digest(leaf, entry.get("data_dtype", dtype))
        entries[name] = entry
        leaves.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, leaves), {"format": _FORMAT, "leaves": entries}


def _short(err: BaseException, limit: int = 300) -> str:
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    return text if len(text) <= limit else text[:limit] + "..."


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
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False))
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
        self._manager = ocp.CheckpointManager(self._directory, options=options, item_names=items)

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
                    f"metrics for step {step} lack the monitored metric {self._best_metric!r}; "
                    f"got {sorted(metrics)}"
                )
        stored, manifest = _prepare(state, self._checksums)
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(stored), _META: ocp.args.JsonSave(meta),
                                     _MANIFEST: ocp.args.JsonSave(manifest)})
        return bool(self._manager.save(step, args=args, metrics=metrics, force=True))

    def wait(self) -> None:
        """Blocks until a background save has been committed (and old steps pruned)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --------------------------------------------------------------- restoring
    def restore(
        self, template: PyTree | None, step: int | None = None, *, quarantine: bool = True
    ) -> tuple[PyTree, dict[str, Any], int]:
        """Restores `(state, meta, step)`.

        `template` is a pytree like the saved state (concrete or
        `jax.ShapeDtypeStruct` leaves; typed keys allowed); the result has its
        structure, types, dtypes and shardings. With None, the state comes back
        as orbax stored it (nested dicts and lists) and typed keys are rewrapped.
        Without `step`, takes the newest checkpoint that reads back intact:
        damaged newer ones are reported with a CheckpointWarning and, when
        `quarantine` is true, moved to `<directory>/corrupt/`. Raises
        CheckpointError when no checkpoint is usable, when an explicit `step` is
        missing or damaged, or when the template does not fit the checkpoint.
        """
        self.wait()
        if step is not None:
            if step not in self._manager.all_steps():
                raise CheckpointError(
                    f"no checkpoint for step {step} in {self._directory}; kept steps: {self.all_steps()}"
                )
            try:
                return self._restore_step(template, step)
            except _Damaged as err:
                raise CheckpointError(f"checkpoint {self.step_path(step)} is damaged: {err}") from err
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoints in {self._directory}")
        damaged: list[tuple[int, str]] = []
        for candidate in steps:
            try:
                result = self._restore_step(template, candidate)
            except _Damaged as err:
                damaged.append((candidate, str(err)))
                warnings.warn(f"checkpoint step {candidate} in {self._directory} is damaged and was "
                              f"skipped: {err}", CheckpointWarning, stacklevel=2)
                continue
            if damaged and quarantine and not self._read_only:
                self._quarantine([s for s, _ in damaged])
            return result
        reasons = "; ".join(f"step {s}: {why}" for s, why in damaged)
        raise CheckpointError(f"no usable checkpoint in {self._directory}: {reasons}")

    def _restore_step(self, template: PyTree | None, step: int) -> tuple[PyTree, dict[str, Any], int]:
        try:
            json_args = {_META: ocp.args.JsonRestore(), _MANIFEST: ocp.args.JsonRestore()}
            items = self._manager.restore(step, args=ocp.args.Composite(**json_args))
            meta, manifest = items[_META], items[_MANIFEST]
            entries: dict[str, Any] = manifest["leaves"]
            if manifest.get("format") != _FORMAT or not isinstance(entries, dict):
                raise ValueError(f"unknown manifest format {manifest.get('format')!r}")
        except Exception as err:  # orbax/tensorstore raise many types
            raise _Damaged(f"cannot read its meta or manifest ({_short(err)})") from err
        target = None if template is None else self._restore_target(template, entries, step)
        try:
            state_args = ocp.args.StandardRestore(target)
            restored = self._manager.restore(step, args=ocp.args.Composite(**{_STATE: state_args}))[_STATE]
        except Exception as err:
            raise _Damaged(f"cannot read its arrays ({_short(err)})") from err
        flat, treedef = jax.tree_util.tree_flatten_with_path(restored)
        leaves = []
        for path, leaf in flat:
            name = _path_str(path)
            entry = entries.get(name, {})
            expected = entry.get("sha256")
            if expected is not None:
                got = _digest(leaf, entry.get("data_dtype", entry["dtype"]))
                if got is not None and got != expected:
                    raise _Damaged(f"{name}: the data differs from the checksum written at save time")
            if "key_impl" in entry:
                leaf = jax.random.wrap_key_data(leaf, impl=entry["key_impl"])
            leaves.append(leaf)
        return jax.tree_util.tree_unflatten(treedef, leaves), meta, step

    def _restore_target(self, template: PyTree, entries: Mapping[str, Any], step: int) -> PyTree:
        """Checks `template` against the manifest and returns orbax's restore target."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(template)
        problems, targets, seen = [], [], set()
        for path, leaf in flat:
            name = _path_str(path)
            seen.add(name)
            entry = entries.get(name)
            if entry is None:
                problems.append(f"{name}: model expects {_fmt(*_describe(leaf))}, checkpoint has no such entry")
            elif not _fits(leaf, entry):
                problems.append(
                    f"{name}: checkpoint has {_fmt(entry['shape'], entry['dtype'])}, "
                    f"model expects {_fmt(*_describe(leaf))}"
                )
            elif _is_key(leaf):  # orbax reads the stored key data; rewrapped after the checksum
                is_array = isinstance(leaf, jax.Array)
                leaf = jax.random.key_data(leaf) if is_array else jax.eval_shape(jax.random.key_data, leaf)
            targets.append(leaf)
        for name, entry in entries.items():
            if name not in seen:
                problems.append(
                    f"{name}: checkpoint has {_fmt(entry['shape'], entry['dtype'])}, model has no such entry"
                )
        if problems:
            more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
            raise CheckpointError(
                f"checkpoint {self.step_path(step)} does not fit the template: {problems[0]}{more}"
            )
        return jax.tree_util.tree_unflatten(treedef, targets)

    def _quarantine(self, steps: list[int]) -> None:
        """Moves damaged steps to `<directory>/corrupt/` so later saves can follow them."""
        dest_root = self._directory / QUARANTINE_DIRNAME
        moved = []
        if ocp.multihost.is_primary_host(0):
            dest_root.mkdir(parents=True, exist_ok=True)
            for step in steps:
                names = itertools.chain([str(step)], (f"{step}.{n}" for n in itertools.count(1)))
                dest = next(dest_root / name for name in names if not (dest_root / name).exists())
                self.step_path(step).rename(dest)
                moved.append(f"step {step} -> {dest}")
        ocp.multihost.sync_global_processes(f"dlchapter_checkpoint_quarantine_{next(_barrier_ids)}")
        self._manager.reload()
        if moved:
            warnings.warn(f"moved damaged checkpoints out of {self._directory}: {', '.join(moved)}",
                          CheckpointWarning, stacklevel=3)
