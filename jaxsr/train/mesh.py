"""Device mesh and sharding: one `data` axis over every device of every process.

The same code runs on 1 CPU, 8 GPUs or a TPU pod slice: parameters are replicated, batches are
split along their leading axis, and each process feeds only its local share of the batch.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (global across processes), axis name 'data'."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shards axis `batch_axis` over 'data' (axis 1 for task-stacked (K, B, ...) batches)."""
    spec = [None] * batch_axis + [DATA_AXIS]
    return NamedSharding(mesh, P(*spec))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "config.data.batch_size") -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"{what}={global_batch} must be divisible by the number of devices ({n}); "
                         f"use a multiple of {n}")


def local_batch_size(global_batch: int, what: str = "config.data.batch_size") -> int:
    """This process's share of a global batch of `global_batch` (an error names `what`)."""
    if global_batch % jax.process_count():
        raise ValueError(f"{what}={global_batch} must be divisible by the number of processes "
                         f"({jax.process_count()})")
    return global_batch // jax.process_count()


def put_batch(local_batch: Any, shardings: Any) -> Any:
    """Host-local numpy batch (this process's share) -> global jax.Arrays. `shardings`: one
    NamedSharding for every leaf, or a dict of them keyed like the batch."""
    if isinstance(shardings, dict):
        return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
                for k, v in local_batch.items()}
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(shardings, np.asarray(x)), local_batch)


def put_global_batch(local_batch: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
    """Host-local numpy batch -> global jax.Arrays sharded over 'data' along `batch_axis`."""
    return put_batch(local_batch, batch_sharding(mesh, batch_axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of arrays on every device of the mesh (same value everywhere)."""
    return jax.device_put(tree, replicated(mesh))
