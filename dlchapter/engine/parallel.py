"""Data parallelism over devices and hosts with JAX's own runtime.

One 1-D mesh over every device of every process, with the axis "data":
parameters, optimizer state, keys and metric sums are replicated; each global
batch is split along the mesh axis. The global batch is padded to a multiple
of the device count with weight-0 rows, and since every loss is a weighted
mean over the *global* batch, XLA's all-reduce of the gradient gives the
single-device gradient (up to float summation order) and the metric sums are
those of single-device training.

Several hosts: `initialize_distributed` joins the processes (flags or the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables; gloo
collectives on CPU), each process feeds only its own slice of each global
batch (`jax.make_array_from_process_local_data`), and only `is_primary()`
writes reports (orbax coordinates multi-host checkpoint saves itself).

`DataParallel` is the placement a trainer needs (replicate state and data,
shard an index plan or a batch, fetch results; `SingleDevice` is the same
interface for one device). Data-parallel training is
`Trainer(task, placement=DataParallel.create())`: the Trainer is the only
training loop. This module imports nothing from `dlchapter.engine.train` (train.py
imports the placements from here), so the dependency goes one way.

On the CPU backend with several devices in one process (fake devices from
`--xla_force_host_platform_device_count` or `jax_num_cpu_devices`), jax 0.10.2
hangs in an all-reduce rendezvous (then aborts) when a second collective
program is dispatched before the previous one has finished on every device;
`DataParallel.sync` therefore blocks after each call there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any
DATA_AXIS = "data"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str = "gloo",
    timeout_s: int = 300,
    heartbeat_timeout_s: int = 100,
    shutdown_timeout_s: int = 300,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Join a multi-process run; True if one was joined, False for a single process.

    Arguments win over the environment variables JAX_COORDINATOR_ADDRESS
    ("host:port" of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID. With none
    of the three set anywhere nothing happens (one process). Call it before any
    other JAX call. On CPU, collectives between processes use `cpu_collectives`
    (gloo). `timeout_s` bounds start-up, so a missing peer fails instead of
    waiting for ever.
    """
    if jax.distributed.is_initialized():
        return True
    env = os.environ if environ is None else environ
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None
    if num_processes is None and env.get(ENV_NUM_PROCESSES):
        num_processes = int(env[ENV_NUM_PROCESSES])
    if process_id is None and env.get(ENV_PROCESS_ID):
        process_id = int(env[ENV_PROCESS_ID])
    given = {ENV_COORDINATOR: coordinator, ENV_NUM_PROCESSES: num_processes, ENV_PROCESS_ID: process_id}
    if all(v is None for v in given.values()) or (num_processes == 1 and coordinator is None):
        return False
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise ValueError(
            f"a multi-process run needs {', '.join(missing)} (as a flag or environment variable); got {given}"
        )
    assert num_processes is not None and process_id is not None and coordinator is not None
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is outside 0..{num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        initialization_timeout=timeout_s,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
        shutdown_timeout_seconds=shutdown_timeout_s,
    )
    return True


def is_primary() -> bool:
    """True in process 0, the one that writes reports and figures."""
    return jax.process_index() == 0


def report_dir(workdir: Path | str) -> Path:
    """`workdir` in process 0; a scratch directory in the others, so only process 0's report lands.

    Checkpoints are not reports: every process passes orbax the same directory.
    """
    if is_primary():
        return Path(workdir)
    return Path(tempfile.mkdtemp(prefix=f"dlchapter-process{jax.process_index()}-"))


def placement_for(data_parallel: bool) -> DataParallel | None:
    """The Trainer's placement for a run's `data_parallel` field (None: one device).

    Joins a multi-process run first when JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID are set: call it before any other JAX
    computation of the run.
    """
    if not data_parallel:
        return None
    initialize_distributed()
    return DataParallel.create()


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else list(devices)), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Axis `axis` split over the mesh's "data" axis, the others whole."""
    return NamedSharding(mesh, P(*([None] * axis), DATA_AXIS))


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf as a global array replicated over `mesh` (every process passes the same values)."""
    sharding = replicated_sharding(mesh)

    def put(x: Any) -> Any:
        if _is_key(x):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=impl)
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_process_local_data(sharding, host, host.shape)

    return jax.tree.map(put, tree)


def local_slice(mesh: Mesh, global_size: int) -> slice:
    """The part of a batch axis of `global_size` this process's devices hold (contiguous)."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_size,))
    starts = [idx[0].indices(global_size)[0] for idx in index_map.values()]
    stops = [idx[0].indices(global_size)[1] for idx in index_map.values()]
    if sum(b - a for a, b in zip(starts, stops)) != max(stops) - min(starts):
        raise ValueError(
            "this process's devices do not hold one contiguous part of the batch; order the mesh by process"
        )
    return slice(min(starts), max(stops))


def shard_batch(local: PyTree, mesh: Mesh, global_size: int, axis: int = 0) -> PyTree:
    """Global arrays split along `axis` from this process's slice of it (`local_slice`).

    In a single process the slice is the whole batch. `global_size` must be a
    multiple of the device count (see `pad_to_multiple`).
    """
    if global_size % mesh.size:
        raise ValueError(f"a global batch of {global_size} rows cannot be split over {mesh.size} devices; pad it first")
    sharding = batch_sharding(mesh, axis)

    def put(x: Any) -> jax.Array:
        host = np.asarray(x)
        shape = list(host.shape)
        shape[axis] = global_size
        return jax.make_array_from_process_local_data(sharding, host, tuple(shape))

    return jax.tree.map(put, local)


def pad_to_multiple(batch: Mapping[str, np.ndarray], multiple: int, axis: int = 0) -> dict[str, np.ndarray]:
    """`batch` with its rows (along `axis`) padded to a multiple of `multiple`.

    Padding rows wrap around to the first rows (padding row j repeats row j % rows: valid indices, valid
    inputs, rows of the batch itself, so BatchNorm's batch statistics see only rows the batch already
    holds) and get weight 0; a batch without "weight" gets one (1 for every real row).
    """
    first = next(iter(batch.values()))
    n_rows = np.shape(first)[axis]
    out = {k: np.asarray(v) for k, v in batch.items()}
    if "weight" not in out:
        out["weight"] = np.ones(np.shape(first)[: axis + 1], np.float32)
    extra = -n_rows % multiple
    if not extra:
        return out
    wrapped = np.arange(extra) % n_rows
    for name, value in out.items():
        pad = np.take(value, wrapped, axis=axis)
        out[name] = np.concatenate([value, np.zeros_like(pad) if name == "weight" else pad], axis=axis)
    return out


@dataclass(frozen=True)
class DataParallel:
    """Where a trainer's arrays live on a data mesh: replicated state and data, sharded batches."""

    mesh: Mesh

    @classmethod
    def create(cls, devices: Sequence[jax.Device] | None = None) -> DataParallel:
        """Over every device of every process (or `devices`)."""
        return cls(data_mesh(devices))

    @property
    def n_devices(self) -> int:
        return self.mesh.size

    def replicate(self, tree: PyTree) -> PyTree:
        """State, keys, metric sums or a data set: the same on every device."""
        return replicate(tree, self.mesh)

    def plan(self, idx_SxB: np.ndarray, w_SxB: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """An epoch's index and weight matrices with columns padded and split over the mesh.

        Every process passes the whole plan (it depends on the seed only) and
        feeds its own columns: this process's slice of each global batch.
        """
        padded = pad_to_multiple({"idx": idx_SxB.T, "weight": w_SxB.T}, self.n_devices)
        cols = local_slice(self.mesh, padded["idx"].shape[0])
        local = {"idx": padded["idx"][cols].T, "weight": padded["weight"][cols].T}
        out = shard_batch(local, self.mesh, padded["idx"].shape[0], axis=1)
        return out["idx"], out["weight"]

    def batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A whole global batch (same on every process) padded, and this process's rows fed."""
        padded = pad_to_multiple(batch, self.n_devices)
        size = padded["weight"].shape[0]
        rows = local_slice(self.mesh, size)
        return shard_batch({k: v[rows] for k, v in padded.items()}, self.mesh, size)

    def sync(self, tree: PyTree) -> PyTree:
        """Block until `tree` is computed where jax 0.10.2's CPU collectives need it (see module doc)."""
        if jax.default_backend() == "cpu" and jax.local_device_count() > 1:
            jax.block_until_ready(tree)
        return tree

    def fetch(self, tree: PyTree) -> PyTree:
        """Replicated results as host numpy arrays (works in every process)."""
        return jax.tree.map(
            lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x), tree
        )


class SingleDevice:
    """The placement of one device: arrays go to the default device as they are (the Trainer's default)."""

    n_devices = 1

    def replicate(self, tree: PyTree) -> PyTree:
        # device_put, not jnp.asarray: jnp.asarray of a host array compiles a program per shape (jax 0.10)
        return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x), tree)

    def plan(self, idx_SxB: np.ndarray, w_SxB: np.ndarray) -> tuple[jax.Array, jax.Array]:
        return jax.device_put(idx_SxB), jax.device_put(w_SxB)

    def sync(self, tree: PyTree) -> PyTree:
        return tree

    def fetch(self, tree: PyTree) -> PyTree:
        return jax.device_get(tree)


Placement = DataParallel | SingleDevice


def describe(mesh: Mesh | None = None) -> dict[str, Any]:
    """Facts for a run report: processes, devices, the mesh shape and the backend."""
    mesh = mesh or data_mesh()
    return {
        "backend": jax.default_backend(),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "device_kind": jax.devices()[0].device_kind,
    }
