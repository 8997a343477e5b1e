"""DRTL train steps (pure functions; the pipeline jits them on the mesh).

Both transfer steps take the joint batch of `data.JointIterator`:
  aux_hr (K, B, P, P, 3) uint8: clean crops, one batch per auxiliary task;
  target_lr / target_hr (Bt, ...) uint8: few-shot target crops (used by the 'gradient' mode).
On device each step synthesizes the K task batches (`synthesize_tasks`), gets the K per-task
gradients (DRTL-P: one `vmap` of `grad`; DRTL-M: MAML meta-gradients; `drtl.task_map` switches
to `lax.map` or a trace-time unroll over tasks) and hands the stacked gradients to the optimizer,
whose first transform is `relation_weighted_sum`: the relation weights live in the optimizer state.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxsr.degradations import synthesize_tasks
from jaxsr.methods.drtl.maml import meta_grads
from jaxsr.methods.drtl.reweight import (get_weights, gradient_weights, per_task_grads,
                                         set_weights, weighted_sum)
from jaxsr.pixels import to_float
from jaxsr.losses import pixel_loss
from jaxsr.train.state import TrainState, apply_update, step_key

LossFn = Callable[[dict, dict], jax.Array]


def sr_loss(model, kind: str) -> LossFn:
    """`loss(params, {'lr', 'hr'}) -> scalar` pixel loss of the SR model."""
    def loss(params, batch):
        return pixel_loss(model.apply({"params": params}, batch["lr"]), batch["hr"], kind)
    return loss


def make_task_batches(task_names: Sequence[str], aux_scale: int, mode: str):
    """(key, aux_hr uint8 (K, B, P, P, 3)) -> {'lr': (K, B, p, p, 3), 'hr': (K, B, P, P, 3)}."""
    names = tuple(task_names)

    def build(key, aux_hr):
        hr = to_float(aux_hr)
        return {"lr": synthesize_tasks(names, key, hr, aux_scale, mode), "hr": hr}
    return build


def split_support_query(batches: dict) -> tuple[dict, dict]:
    """Splits each task's batch in halves: support (first) and query (second)."""
    half = batches["hr"].shape[1] // 2
    return (jax.tree.map(lambda x: x[:, :half], batches),
            jax.tree.map(lambda x: x[:, half:], batches))


def _refresh_gradient_weights(state: TrainState, grads, loss_fn: LossFn, batch: dict,
                              rc: ml_collections.ConfigDict):
    """Every `relation.refresh_every` steps: w = softmax(cos(g_k, g_T) / tau) into opt_state.

    With `relation.smoothing` = beta > 0 the stored weights become an exponential moving average
    across refreshes, `beta * w_previous + (1 - beta) * w`: cosines of small-batch gradients are
    noisy, and a small tau turns that noise into near one-hot jumps."""
    def refresh(opt_state):
        target = {"lr": to_float(batch["target_lr"]), "hr": to_float(batch["target_hr"])}
        g_target = jax.grad(loss_fn)(state.params, target)
        w = gradient_weights(grads, g_target, rc.tau, clip_negative=rc.clip_negative)
        beta = rc.get("smoothing", 0.0)
        if beta:
            w = beta * get_weights(opt_state) + (1.0 - beta) * w
        return set_weights(opt_state, w)
    return jax.lax.cond(state.step % rc.refresh_every == 0, refresh, lambda s: s,
                        state.opt_state)


def _weighted_update(state: TrainState, grads, losses, batch: dict, loss_fn: LossFn,
                     optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict):
    """Refreshes gradient-mode weights (if due), then the relation-weighted optimizer update.

    grads: stacked per-task (meta-)gradients (K leading axis); losses: (K,) task losses."""
    if config.relation.mode == "gradient":
        state = state.replace(opt_state=_refresh_gradient_weights(
            state, grads, loss_fn, batch, config.relation))
    w = get_weights(state.opt_state)
    loss = jnp.sum(w * losses)
    new_state = apply_update(state, grads, loss, optimizer, config.train.ema_decay)
    return new_state, {"loss": loss, "task_loss": losses, "weight": w,
                       "grad_norm": optax.tree.norm(weighted_sum(grads, w))}


def weighted_task_loss(model, kind: str):
    """`loss(params, tasks, w) -> (sum_k w_k L_k, (K,) L_k)` with one forward pass over all
    K*B task samples: its gradient is `sum_k w_k g_k` in one backward pass (what the
    relation-weighted transform computes from K per-task gradients, for fixed weights).

    tasks: {'lr': (K, B, p, p, 3), 'hr': (K, B, P, P, 3)} float; w: (K,)."""
    def loss(params, tasks, w):
        lr, hr = tasks["lr"], tasks["hr"]
        k, b = lr.shape[:2]
        out = model.apply({"params": params}, lr.reshape((k * b,) + lr.shape[2:]))
        out = out.reshape((k, b) + out.shape[1:])
        losses = jax.vmap(lambda o, h: pixel_loss(o, h, kind))(out, hr)
        return jnp.sum(w * losses), losses
    return loss


BACKWARD_MODES = ("auto", "single", "per_task")


def resolve_backward(mode: str) -> str:
    """'auto' -> 'single' on GPU/TPU (one large batch keeps the accelerator busy; K x less
    gradient memory and all-reduce) and 'per_task' on XLA:CPU, where K unrolled per-task
    passes measured faster (RESULTS.md); other names unchanged."""
    if mode == "auto":
        return "per_task" if jax.default_backend() == "cpu" else "single"
    return mode


def make_pretrain_step(model, optimizer: optax.GradientTransformation,
                       config: ml_collections.ConfigDict, task_names: Sequence[str]):
    """DRTL-P: `(state, batch) -> (state, metrics)`; relation-weighted multi-task gradient step.

    With weights fixed over the step (relation modes 'embedding' and 'uniform') and
    `drtl.weighted_backward='single'` ('auto', the default, on GPU/TPU) the update is the gradient of the weighted loss,
    one forward and one backward pass over the K*B samples, handed to the optimizer as already
    combined; otherwise (and always in 'gradient' mode, whose weights come from the per-task
    gradients) K per-task gradients go through the `relation_weighted_sum` transform. Both give
    the same update (tested)."""
    loss_fn = sr_loss(model, config.train.loss)
    build = make_task_batches(task_names, config.drtl.aux_scale, config.drtl.mode)
    backward = config.drtl.get("weighted_backward", "auto")
    if backward not in BACKWARD_MODES:
        raise ValueError(f"config.drtl.weighted_backward={backward!r}; use one of "
                         f"{BACKWARD_MODES}")
    single = resolve_backward(backward) == "single" and config.relation.mode != "gradient"
    weighted = weighted_task_loss(model, config.train.loss)

    def step(state: TrainState, batch: dict):
        tasks = build(step_key(state), batch["aux_hr"])
        if single:
            w = get_weights(state.opt_state)
            (loss, losses), grads = jax.value_and_grad(weighted, has_aux=True)(
                state.params, tasks, w)
            new_state = apply_update(state, grads, loss, optimizer, config.train.ema_decay,
                                     combined=True)
            return new_state, {"loss": loss, "task_loss": losses, "weight": w,
                               "grad_norm": optax.tree.norm(grads)}
        grads, losses = per_task_grads(loss_fn, state.params, tasks, task_map=config.drtl.task_map)
        return _weighted_update(state, grads, losses, batch, loss_fn, optimizer, config)
    return step


def make_meta_step(model, optimizer: optax.GradientTransformation,
                   config: ml_collections.ConfigDict, task_names: Sequence[str]):
    """DRTL-M: `(state, batch) -> (state, metrics)`; relation-weighted MAML outer step.

    Each task's batch is split into support (inner SGD steps) and query (meta loss) halves.
    """
    loss_fn = sr_loss(model, config.train.loss)
    build = make_task_batches(task_names, config.drtl.aux_scale, config.drtl.mode)
    mc = config.meta

    def step(state: TrainState, batch: dict):
        supports, queries = split_support_query(build(step_key(state), batch["aux_hr"]))
        grads, losses = meta_grads(loss_fn, state.params, supports, queries,
                                   inner_lr=mc.inner_lr, num_inner_steps=mc.num_inner_steps,
                                   first_order=mc.first_order, remat=mc.remat,
                                   task_map=config.drtl.task_map, hessian=mc.hessian)
        return _weighted_update(state, grads, losses, batch, loss_fn, optimizer, config)
    return step
