"""Step pieces every method shares: the supervised pixel-loss step, jit on the mesh, inference.

A method's step is a pure `(state, batch) -> (state, metrics)`; `compile_step` jits it once with
the state replicated (and donated) and the batch sharded over the mesh's 'data' axis.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxsr.pixels import to_float
from jaxsr.train import mesh as mesh_lib
from jaxsr.losses import pixel_loss
from jaxsr.train.state import TrainState, apply_update, step_key


def make_train_step(model, optimizer: optax.GradientTransformation, loss_kind: str = "l1",
                    ema_decay: float = 0.0, synthesize: Callable | None = None):
    """The supervised step `(state, batch) -> (state, metrics)` (not yet jitted).

    batch: {'lr': uint8 (B, h, w, 3), 'hr': uint8 (B, H, W, 3)} ('lr' unused with `synthesize`,
    a `(key, hr float (B, H, W, 3)) -> lr` function run on device with the step's key).
    metrics: 'loss' (pixel loss `loss_kind`), 'grad_norm'.
    """
    ema_decay = float(ema_decay)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        hr = to_float(batch["hr"])
        lr = synthesize(step_key(state), hr) if synthesize is not None else to_float(batch["lr"])

        def loss_fn(params):
            return pixel_loss(model.apply({"params": params}, lr), hr, loss_kind)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        new_state = apply_update(state, grads, loss, optimizer, ema_decay)
        return new_state, {"loss": loss, "grad_norm": global_norm(grads)}
    return train_step


def global_norm(tree: Any) -> jax.Array:
    """sqrt of the sum of squares of every leaf (float32 scalar)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def compile_step(step_fn, mesh, state_sharding, batch_sharding=None):
    """jit with replicated state in/out, sharded batch, and the old state's buffers donated.
    `batch_sharding`: one sharding for the whole batch or a dict keyed like it (default: every
    leaf split along axis 0)."""
    batch_sharding = batch_sharding or mesh_lib.batch_sharding(mesh)
    return jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding),
                   out_shardings=(state_sharding, mesh_lib.replicated(mesh)), donate_argnums=0)


def make_apply_fn(model, mesh=None) -> Callable:
    """jitted (params, x (B, h, w, 3) float32 in [0, 1]) -> model output clipped to [0, 1]."""
    @jax.jit
    def apply(params, x):
        return jnp.clip(model.apply({"params": params}, x), 0.0, 1.0)
    return apply
