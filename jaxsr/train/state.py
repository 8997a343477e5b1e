"""The train state pytree and the updates every method's step makes.

`params` is the deployable network (the one evaluated, EMA-averaged, exported, predicted with);
`aux` holds named auxiliary networks (discriminators, encoders, decoders), each with its own
parameters and optimizer state; `buffers` holds non-gradient state (momentum encoders, queues and
their pointers, BatchNorm statistics). All of it checkpoints, resumes and shards as one pytree.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class AuxNet:
    """An auxiliary network: its parameters and its own optimizer state."""
    params: Any
    opt_state: Any


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds about the model.

    step: int32 scalar, optimizer steps taken (including skipped non-finite ones).
    params / ema_params: float32 parameter pytrees (ema_params == params when EMA is off).
    opt_state: the optax state. rng: PRNG key data (uint32 (2,)), folded with the step.
    nonfinite: int32 count of updates whose loss or gradient was NaN/Inf (those are skipped).
    aux: {name: AuxNet} auxiliary networks (not deployed, never EMA-averaged).
    buffers: {name: pytree} non-gradient state a method updates itself.
    """
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array
    nonfinite: jax.Array
    aux: dict = flax.struct.field(default_factory=dict)
    buffers: dict = flax.struct.field(default_factory=dict)


def create_state(params: Any, optimizer: optax.GradientTransformation, seed: int,
                 aux: dict[str, tuple[Any, optax.GradientTransformation]] | None = None,
                 buffers: dict[str, Any] | None = None) -> TrainState:
    """A fresh state at step 0.

    aux: {name: (params, optimizer)} auxiliary networks; buffers: {name: pytree} initial
    non-gradient state."""
    aux_nets = {name: AuxNet(params=p, opt_state=tx.init(p)) for name, (p, tx) in
                (aux or {}).items()}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=jax.tree.map(jnp.copy, params), opt_state=optimizer.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)),
                      nonfinite=jnp.zeros((), jnp.int32), aux=aux_nets,
                      buffers=dict(buffers or {}))


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


def apply_aux_update(state: TrainState, name: str, grads: Any, loss: jax.Array,
                     optimizer: optax.GradientTransformation) -> TrainState:
    """Optimizer update of auxiliary network `name`; the step and the EMA stay as they are.

    A non-finite loss/gradient skips this update and is counted in `nonfinite` like a skipped
    main update, so the run stops with the same message."""
    net = state.aux[name]
    updates, opt_state = optimizer.update(grads, net.opt_state, net.params)
    params = optax.apply_updates(net.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_net = AuxNet(params=keep(params, net.params), opt_state=keep(opt_state, net.opt_state))
    return state.replace(aux={**state.aux, name: new_net},
                         nonfinite=state.nonfinite + (~finite).astype(jnp.int32))


def deployable_params(state: TrainState, use_ema: bool) -> Any:
    """The parameters evaluation and export use: the EMA ones when the run keeps an EMA."""
    return state.ema_params if use_ema else state.params
