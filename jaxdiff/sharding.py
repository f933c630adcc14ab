"""Data parallelism over every device of every process: mesh, placements, multi-host.

One mesh axis, ``"data"`` (:data:`DATA_AXIS`), spans all devices of all processes. Batches are
sharded along their example axis, everything else (parameters, optimiser state, an on-device
dataset) is replicated. No ``jax.pmap``: the training step is one ``jax.jit`` with explicit
``NamedSharding`` in/out shardings (see :mod:`jaxdiff.train`).

Multi-host: start every process with :func:`initialize_distributed` before any other JAX call;
each process then feeds only its slice of the global batch (:func:`shard_batch` uses
``jax.make_array_from_process_local_data``) and only :func:`is_main_process` writes files.

- :func:`make_mesh`, :func:`batch_sharding`, :func:`replicated_sharding`
- :func:`check_batch_size`: the global batch must divide evenly over the devices
- :func:`shard_batch`, :func:`place`, :func:`replicate`: host arrays -> global ``jax.Array``;
  :func:`gather`: global ``jax.Array`` -> the whole NumPy array in every process
- :func:`initialize_distributed`, :func:`is_main_process`, :func:`process_index`,
  :func:`process_count`, :func:`main_process_succeeded`, :func:`processes_without`
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "check_batch_size",
    "gather",
    "initialize_distributed",
    "is_main_process",
    "main_process_succeeded",
    "make_mesh",
    "place",
    "process_count",
    "process_index",
    "processes_without",
    "replicate",
    "replicated_sharding",
    "shard_batch",
]

DATA_AXIS = "data"

PyTree = Any


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    initialization_timeout: int = 300,
) -> None:
    """Start multi-process JAX (one process per host, or several on one machine).

    Call it in every process before any other JAX call. Arguments left as ``None`` come from
    the environment: ``JAX_COORDINATOR_ADDRESS`` (``"host:port"`` of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, or, when those are unset, JAX's cluster
    auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU).

    Args:
      coordinator_address: ``"host:port"`` where process 0 listens, e.g. ``"127.0.0.1:1234"``.
      num_processes: total number of processes.
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: restrict this process to these local devices (e.g. one GPU each).
      cpu_collectives: cross-process collectives for the CPU backend (``"gloo"``, ``"mpi"``,
        or ``None`` to leave JAX's setting alone). Without it, CPU processes cannot all-reduce.
      initialization_timeout: seconds to wait for all processes to connect.
    """
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if num_processes is not None and process_id is not None:
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must lie in [0, num_processes) = [0, {num_processes}); got "
                f"{process_id}. Number the processes 0..{num_processes - 1}."
            )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )


def process_index() -> int:
    """This process's index (0 in a single-process run)."""
    return jax.process_index()


def process_count() -> int:
    """Number of JAX processes (1 in a single-process run)."""
    return jax.process_count()


def is_main_process() -> bool:
    """True only in process 0: the one process that writes files (checkpoints, metrics, plots)."""
    return jax.process_index() == 0


def main_process_succeeded(ok: bool) -> bool:
    """Process 0's ``ok``, in every process: a barrier that also says whether the main process's
    work before it (preparing a folder, say) succeeded. ``ok`` itself in a single process."""
    if jax.process_count() == 1:
        return bool(ok)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(ok))))


def processes_without(ok: bool) -> list[int]:
    """The indices of the processes whose ``ok`` is false, known to every process (a collective:
    every process must call it). ``[]`` or ``[0]`` in a single process."""
    if jax.process_count() == 1:
        return [] if ok else [0]
    from jax.experimental import multihost_utils

    flags = np.asarray(multihost_utils.process_allgather(np.int32(bool(ok))))
    return [int(i) for i in np.flatnonzero(flags.reshape(-1) == 0)]


# --------------------------------------------------------------------------------------------------
# Mesh and shardings
# --------------------------------------------------------------------------------------------------


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device; got an empty list.")
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def batch_sharding(mesh: Mesh, *, stacked: bool = False) -> NamedSharding:
    """Shard the example axis over ``"data"``: axis 0 of ``(B, ...)``, or axis 1 of a stack of
    K batches ``(K, B, ...)`` when ``stacked``."""
    spec = PartitionSpec(None, DATA_AXIS) if stacked else PartitionSpec(DATA_AXIS)
    return NamedSharding(mesh, spec)


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, on-device datasets)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    """Raise unless the global batch divides evenly over the mesh's devices and processes."""
    n = mesh.devices.size
    if global_batch < 1 or global_batch % n:
        lower, upper = max(n, global_batch // n * n), (global_batch // n + 1) * n
        raise ValueError(
            f"global batch size {global_batch} is not divisible by the number of devices {n} "
            f"(mesh axis '{DATA_AXIS}'); each device must get the same number of examples. Use "
            f"a multiple of {n}, e.g. {lower} or {upper}, or build the mesh over fewer devices "
            f"(make_mesh(jax.devices()[:k]))."
        )


def _leaf_batch(tree: PyTree, axis: int) -> int:
    sizes = {int(np.shape(leaf)[axis]) for leaf in jax.tree_util.tree_leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(
            f"all arrays of a batch must share the example axis {axis}; got sizes {sorted(sizes)}."
        )
    return sizes.pop()


def shard_batch(batch: PyTree, mesh: Mesh, *, stacked: bool = False) -> PyTree:
    """Turn this process's slice of a batch into global arrays sharded over ``"data"``.

    Args:
      batch: a pytree of host arrays (NumPy), each ``(b, ...)`` (or ``(K, b, ...)`` when
        ``stacked``), where ``b = B / process_count()`` is this process's share of the global
        batch B. In a single-process run ``b = B``.
      mesh: the mesh from :func:`make_mesh`.
      stacked: the arrays hold K batches along a leading axis (for K steps per call).

    Returns:
      The same pytree of ``jax.Array`` of global shape ``(B, ...)`` (or ``(K, B, ...)``).
    """
    axis = 1 if stacked else 0
    local = _leaf_batch(batch, axis)
    check_batch_size(local * jax.process_count(), mesh)
    sharding = batch_sharding(mesh, stacked=stacked)
    return jax.tree_util.tree_map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), batch
    )


def place(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """Put whole values on ``sharding``'s devices: every process passes the same whole arrays.

    Unlike :func:`shard_batch`, where each process passes its own slice, here every process holds
    the full value (a sampler's labels, a mask, a replicated parameter tree) and only the pieces
    ``sharding`` assigns to this process's devices are copied; no data crosses hosts. Leaves that
    already have ``sharding`` itself are kept as they are; global arrays with another sharding are
    resharded; NumPy arrays and this process's own ``jax.Array`` are copied in.

    Args:
      tree: a pytree of arrays (NumPy or ``jax.Array``, not PRNG key arrays: pass
        ``jax.random.key_data(key)``).
      sharding: where the values go, e.g. :func:`batch_sharding` or :func:`replicated_sharding`.

    Returns:
      The same pytree of global ``jax.Array`` with ``sharding``.
    """

    def put(leaf):
        if isinstance(leaf, jax.Array):
            if leaf.sharding == sharding:  # (an equivalent one-device sharding is not enough:
                return leaf  # jit would compile again for its different type)
            if jax.process_count() == 1 or not leaf.is_fully_addressable:
                return jax.device_put(leaf, sharding)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Put a copy of ``tree`` on every device of ``mesh`` (all processes must pass equal values).

    Works for NumPy arrays and ``jax.Array`` (see :func:`place`); in a multi-process run each
    process supplies its own copy and no data crosses hosts.
    """
    return place(tree, replicated_sharding(mesh))


def gather(tree: PyTree) -> PyTree:
    """The whole of every array as NumPy, in every process (a collective in a multi-process run:
    every process must call it).

    For the outputs of a computation sharded over all processes' devices, such as
    ``jaxdiff.sample(..., mesh=mesh)``; arrays of this process alone are returned as they are.
    In a single process this is ``np.asarray``.
    """
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    def whole(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(leaf)  # this process's own value
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(whole, tree)
