"""MAML over distortion tasks (DRTL-M), as pure JAX over parameter pytrees.

Per task k: `n` plain-SGD inner steps from `theta` on the support batch, query loss of the adapted
weights, meta-gradient w.r.t. `theta` (second order by default). The exact second-order
meta-gradient (I - a H_0) ... (I - a H_{n-1}) grad L_q(phi) is computed either by an explicit
backward pass through the inner steps with forward-over-reverse Hessian-vector products
(`hessian='hvp'`, the default) or by `jax.grad` through a `lax.scan` of the inner steps
(`hessian='autodiff'`); both give the same numbers. The K meta-gradients
come back stacked (leading K axis) so `relation_weighted_sum` can combine them before the outer
optimizer:

    grads, query_losses = meta_grads(loss_fn, params, supports, queries, inner_lr=1e-2,
                                     num_inner_steps=5)

The train step that feeds them to the relation-weighted optimizer is
`jaxsr.methods.drtl.steps.make_meta_step`.

`loss_fn(params, batch) -> scalar` is any differentiable loss (e.g. L1 of `model.apply(params,
batch['lr'])` against `batch['hr']`). Batches are arbitrary pytrees; task-stacked batches have a
leading K axis on every leaf.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsr.methods.drtl.reweight import TASK_MAP_CHOICES, map_over_tasks

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """MAML settings (mirrors the `meta` block of the DRTL config).

    inner_lr: inner SGD step size alpha. num_inner_steps: inner steps n (>= 0).
    first_order: drop second-order terms (stop_gradient on inner gradients).
    remat: `jax.checkpoint` each inner step (hessian='autodiff' only; 'hvp' keeps only the n
      inner parameter sets and recomputes activations anyway).
    task_map: 'vmap' | 'map' | 'unroll' over tasks (see `reweight.map_over_tasks`).
    hessian: 'hvp' (explicit backward pass, forward-over-reverse Hessian-vector products; on
      XLA:CPU 10-20x faster than 'autodiff', see experiments/RESULTS.md) or 'autodiff'
      (reverse-over-reverse through the `lax.scan` inner loop).
    """
    inner_lr: float = 1e-2
    num_inner_steps: int = 5
    first_order: bool = False
    remat: bool = False
    task_map: str = "vmap"
    hessian: str = "hvp"


HESSIANS = ("hvp", "autodiff")


def _sgd(params: PyTree, grads: PyTree, lr) -> PyTree:
    return jax.tree_util.tree_map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g.astype(p.dtype),
                                  params, grads)


def inner_adapt(loss_fn: LossFn, params: PyTree, support_batch: PyTree, inner_lr: float,
                num_inner_steps: int, first_order: bool = False, remat: bool = False) -> PyTree:
    """`num_inner_steps` plain-SGD steps on `support_batch` from `params` (a `lax.scan`).

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar`.
      params: parameter pytree theta.
      support_batch: one task's support batch (pytree, no task axis).
      inner_lr: step size alpha (Python float or scalar array).
      num_inner_steps: static int >= 0.
      first_order: if True, inner gradients are `stop_gradient`-ed, so differentiating the result
        w.r.t. `params` gives the identity Jacobian (first-order MAML).
      remat: wrap each inner step in `jax.checkpoint`.
    Returns:
      adapted parameter pytree phi (same structure/dtypes as `params`).
    """
    if num_inner_steps < 0:
        raise ValueError(f"inner_adapt: num_inner_steps={num_inner_steps} must be >= 0.")
    grad_fn = jax.grad(loss_fn)

    def one_step(p, _):
        g = grad_fn(p, support_batch)
        if first_order:
            g = jax.lax.stop_gradient(g)
        return _sgd(p, g, inner_lr), None

    if remat:
        one_step = jax.checkpoint(one_step)
    adapted, _ = jax.lax.scan(one_step, params, None, length=num_inner_steps)
    return adapted


def maml_task_loss(loss_fn: LossFn, params: PyTree, support: PyTree, query: PyTree, *,
                   inner_lr: float, num_inner_steps: int, first_order: bool = False,
                   remat: bool = False) -> jax.Array:
    """MAML objective of one task: `loss_fn(inner_adapt(params, support), query)` (scalar)."""
    adapted = inner_adapt(loss_fn, params, support, inner_lr, num_inner_steps,
                          first_order=first_order, remat=remat)
    return loss_fn(adapted, query)


def hvp_meta_grad(loss_fn: LossFn, params: PyTree, support: PyTree, query: PyTree, *,
                  inner_lr: float, num_inner_steps: int,
                  first_order: bool = False) -> tuple[jax.Array, PyTree]:
    """One task's MAML query loss and exact meta-gradient, by an explicit backward pass.

    Forward: theta_0 = params, theta_{i+1} = theta_i - a grad L_s(theta_i), phi = theta_n.
    Backward: v = grad L_q(phi); for i = n-1 .. 0: v = v - a H_s(theta_i) v, where H_s v is a
    forward-over-reverse Hessian-vector product (`jax.jvp` of `jax.grad`). The result equals
    `jax.grad(maml_task_loss)` (second order) or, with `first_order`, grad L_q(phi).
    The n inner steps are unrolled at trace time (n is small and static).
    Returns:
      `(query_loss, meta_grad)`; meta_grad has the structure/dtypes of `params`.
    """
    if num_inner_steps < 0:
        raise ValueError(f"hvp_meta_grad: num_inner_steps={num_inner_steps} must be >= 0.")
    support_grad = jax.grad(loss_fn)
    trajectory = []
    theta = params
    for _ in range(num_inner_steps):
        trajectory.append(theta)
        theta = _sgd(theta, support_grad(theta, support), inner_lr)
    query_loss, v = jax.value_and_grad(loss_fn)(theta, query)
    if not first_order:
        for theta_i in reversed(trajectory):
            _, hv = jax.jvp(lambda t: support_grad(t, support), (theta_i,), (v,))
            v = _sgd(v, hv, inner_lr)
    return query_loss, v


def meta_grads(loss_fn: LossFn, params: PyTree, task_supports: PyTree, task_queries: PyTree, *,
               inner_lr: float, num_inner_steps: int, first_order: bool = False,
               remat: bool = False, task_map: str = "vmap",
               hessian: str = "hvp") -> tuple[PyTree, jax.Array]:
    """Per-task MAML meta-gradients at `params`.

    Args:
      task_supports, task_queries: pytrees whose leaves have a leading task axis K.
      task_map: 'vmap' | 'map' | 'unroll' (see `reweight.map_over_tasks`).
      hessian: 'hvp' (`hvp_meta_grad`) or 'autodiff' (`jax.grad` of `maml_task_loss`).
      Other args as in `inner_adapt`.
    Returns:
      `(grads, query_losses)`: grads stacked (leaves `(K, *param_shape)`), query losses `(K,)`.
    """

    if hessian not in HESSIANS:
        raise ValueError(f"meta.hessian={hessian!r} is unknown; use 'hvp' or 'autodiff'.")

    def task_fn(support, query):
        if hessian == "hvp":
            return hvp_meta_grad(loss_fn, params, support, query, inner_lr=inner_lr,
                                 num_inner_steps=num_inner_steps, first_order=first_order)
        return jax.value_and_grad(
            lambda p: maml_task_loss(loss_fn, p, support, query, inner_lr=inner_lr,
                                     num_inner_steps=num_inner_steps, first_order=first_order,
                                     remat=remat))(params)

    losses, grads = map_over_tasks(task_fn, task_supports, task_queries, task_map=task_map)
    return grads, losses


def _cfg_get(cfg: Any, name: str, default: Any) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def meta_config(cfg: Any = None) -> MetaConfig:
    """`MetaConfig` from a `MetaConfig`, a mapping, an ml_collections ConfigDict or None."""
    if isinstance(cfg, MetaConfig):
        return cfg
    d = MetaConfig()
    out = MetaConfig(**{f.name: _cfg_get(cfg, f.name, getattr(d, f.name))
                        for f in dataclasses.fields(MetaConfig)})
    if out.task_map not in TASK_MAP_CHOICES:
        raise ValueError(f"meta.task_map={out.task_map!r} is unknown; use one of "
                         f"{', '.join(TASK_MAP_CHOICES)}.")
    if out.hessian not in HESSIANS:
        raise ValueError(f"meta.hessian={out.hessian!r} is unknown; use 'hvp' or 'autodiff'.")
    return out
