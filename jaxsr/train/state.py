"""The train state pytree and the pieces of a train step every method shares."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds about the model.

    step: int32 scalar, optimizer steps taken (including skipped non-finite ones).
    params / ema_params: float32 parameter pytrees (ema_params == params when EMA is off).
    opt_state: the optax state. rng: PRNG key data (uint32 (2,)), folded with the step.
    nonfinite: int32 count of steps whose loss or gradient was NaN/Inf (those updates are skipped).
    """
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array
    nonfinite: jax.Array


def create_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=jax.tree.map(jnp.copy, params), opt_state=optimizer.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)),
                      nonfinite=jnp.zeros((), jnp.int32))


def step_key(state: TrainState) -> jax.Array:
    """A fresh PRNG key for this step (deterministic in seed and step)."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def apply_update(state: TrainState, grads: Any, loss: jax.Array,
                 optimizer: optax.GradientTransformation, ema_decay: float,
                 **extra_args) -> TrainState:
    """Optimizer + EMA update; a non-finite loss/gradient skips the update and counts it.

    Skipping on device keeps the last good parameters without a host sync every step; the host
    checks `nonfinite` at log time and stops the run with a clear message.
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra_args)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        ema_params=keep(ema, state.ema_params),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite=state.nonfinite + (~finite).astype(jnp.int32),
    )


def pixel_loss(pred: jax.Array, target: jax.Array, kind: str = "l1") -> jax.Array:
    """Mean pixel loss between (B, H, W, 3) float images: 'l1', 'l2' or 'charbonnier'."""
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    if kind == "l1":
        return jnp.mean(jnp.abs(diff))
    if kind == "l2":
        return jnp.mean(diff ** 2)
    if kind == "charbonnier":
        return jnp.mean(jnp.sqrt(diff ** 2 + 1e-6))
    raise ValueError(f"config.train.loss={kind!r} is unknown; use 'l1', 'l2' or 'charbonnier'")
