"""Data parallelism on `jax.sharding`: the batch split along one mesh axis, parameters
replicated. The same code runs on 1 device, on N local devices and on several hosts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

__all__ = ["data_parallel_mesh", "shard_batch", "replicate", "check_divisible"]


def data_parallel_mesh(
    devices: Sequence[jax.Device] | None = None, axis_name: str = "batch"
) -> Mesh:
    """A one-axis `Mesh` for data parallelism.

    **Arguments:**

    - `devices`: the devices to use; `None` means `jax.devices()` (every device of every
      process after `jax.distributed.initialize()`).
    - `axis_name`: the name of the mesh axis the batch is split along.

    **Returns:** a `jax.sharding.Mesh` of shape `(len(devices),)`.
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("data_parallel_mesh(devices=[]) needs at least one device.")
    return Mesh(np.array(devs), (axis_name,))


def _axis_size(mesh: Mesh, axis_name: str) -> int:
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"the mesh has axes {mesh.axis_names} but the batch is to be split along "
            f"{axis_name!r}; build it with ndes.train.data_parallel_mesh() or pass "
            "data_axis= naming one of its axes."
        )
    return mesh.shape[axis_name]


def check_divisible(
    batch_size: int, mesh: Mesh, axis_name: str = "batch", what: str = "batch_size"
) -> None:
    """Raise a `ValueError` unless `batch_size` splits evenly over the mesh axis."""
    n = _axis_size(mesh, axis_name)
    if batch_size % n:
        lo = (batch_size // n) * n
        hi = lo + n
        raise ValueError(
            f"{what}={batch_size} is not divisible by the {n} devices of mesh axis "
            f"{axis_name!r}: every device must get the same number of examples. Use a "
            f"multiple of {n} (e.g. {lo or hi} or {hi}), or pass mesh= with fewer devices."
        )


def batch_sharding(mesh: Mesh, axis_name: str = "batch") -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: PyTree[Any], mesh: Mesh, axis_name: str = "batch") -> PyTree[jax.Array]:
    """Place a host batch on the mesh, split along its leading axis.

    **Arguments:**

    - `batch`: a pytree of arrays with the (global) batch as the leading axis. With
      several processes, each process passes its *own* slice of the global batch
      (`jax.make_array_from_process_local_data` assembles the global array).
    - `mesh`, `axis_name`: the mesh and the axis to split along.

    **Returns:** the batch as global `jax.Array`s sharded `PartitionSpec(axis_name)`.

    Raises `ValueError` when the batch does not split evenly over the devices.
    """
    sharding = batch_sharding(mesh, axis_name)
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        return batch
    n_local = np.shape(leaves[0])[0]
    nproc = jax.process_count()
    check_divisible(n_local * nproc, mesh, axis_name)
    if nproc == 1:
        return jax.device_put(batch, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def replicate(tree: PyTree[Any], mesh: Mesh) -> PyTree[Any]:
    """Copy every array leaf of `tree` to all devices of `mesh` (non-arrays untouched)."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, sharding) if eqx.is_array(x) else x, tree
    )


def constrain_replicated(tree: PyTree[Any], mesh: Mesh) -> PyTree[Any]:
    """Inside jit: ask for every array leaf to be replicated on `mesh`."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, sharding) if eqx.is_array(x) else x, tree
    )


def agree_across_processes(start: int, checkpoint_dir: Any) -> None:
    """Raise `RuntimeError` unless every process resumes from the same step `start`
    (with several processes, `checkpoint_dir` must be one directory all of them read)."""
    from jax.experimental import multihost_utils

    starts = np.asarray(multihost_utils.process_allgather(np.int32(start)))
    if np.any(starts != starts[0]):
        raise RuntimeError(
            f"the {jax.process_count()} processes would resume from different steps "
            f"{starts.tolist()} (process {jax.process_index()} found step {start} in "
            f"{checkpoint_dir}): checkpoint_dir must be on a file system every process reads "
            "(only process 0 writes checkpoints)."
        )
