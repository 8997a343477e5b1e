"""MoCo pieces of ConStyle: the momentum key encoder and the queue of negatives.

The queue is a (K, D) float32 array with an int32 write pointer; `enqueue` writes a batch of
B rows at rows ptr, ptr+1, ... (mod K) and moves the pointer by B (mod K), so it is a FIFO of the
last K rows for any K and B (MoCo asserts K % B == 0; here B need not divide K and a batch may
wrap around the end). Under `jax.jit` with the batch sharded over the mesh's 'data' axis the
codes of a step are the global batch, so what is enqueued is the all-gathered batch of every
device (what MoCo's `concat_all_gather` does across GPUs): the queue is the same on 1 or 8
devices.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxsr.losses import l2_normalize


def momentum_update(key_params: Any, query_params: Any, momentum: float) -> Any:
    """k <- m k + (1 - m) q, leaf by leaf (parameters only, not BatchNorm statistics)."""
    m = jnp.float32(momentum)
    return jax.tree.map(lambda k, q: m * k + (1.0 - m) * jax.lax.stop_gradient(q),
                        key_params, query_params)


def init_queue(key: jax.Array, size: int, dim: int, normalize: bool = True) -> dict:
    """{'queue': (size, dim) float32 N(0, 1) rows (unit rows when `normalize`, as MoCo),
    'pointer': int32 0}."""
    if size < 1 or dim < 1:
        raise ValueError(f"init_queue: queue size {size} and code dim {dim} must be >= 1 "
                         "(config.constyle.queue_size)")
    q = jax.random.normal(key, (size, dim), jnp.float32)
    return {"queue": l2_normalize(q) if normalize else q, "pointer": jnp.zeros((), jnp.int32)}


def enqueue(queue: jax.Array, pointer: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes rows (B, D) into queue (K, D) at (pointer + arange(B)) % K; B <= K.

    Returns (new queue, (pointer + B) % K). The rows are detached (no gradient)."""
    size, batch = queue.shape[0], rows.shape[0]
    if batch > size:
        raise ValueError(f"enqueue: a batch of {batch} rows does not fit a queue of {size}; "
                         "raise config.constyle.queue_size")
    index = (pointer + jnp.arange(batch, dtype=jnp.int32)) % size
    rows = jax.lax.stop_gradient(rows).astype(queue.dtype)
    return queue.at[index].set(rows), ((pointer + batch) % size).astype(jnp.int32)


def queue_blocks(queue: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
    """The two B-row blocks of the queue the style loss compares against: rows [0, B) and
    [B, 2B) (wrapping modulo K when K < 2B). [OURS: the published code's choice of blocks is
    not in the design notes; fixed rows keep the loss deterministic and cheap.]"""
    size = queue.shape[0]
    rows = jnp.arange(2 * batch) % size
    both = queue[rows]
    return both[:batch], both[batch:]
