"""Relation weights and relation-weighted gradient combination for DRTL.

Per-task gradients are *stacked* pytrees: every leaf has a leading task axis K (what
`jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))` returns). The combination
`g = sum_k w_k g_k` is the optax transform `relation_weighted_sum`, meant to sit first in a chain:

    tx = optax.chain(relation_weighted_sum(num_tasks=K), optax.adam(1e-4))
    opt_state = tx.init(params)                       # params: one (unstacked) parameter pytree
    updates, opt_state = tx.update(stacked_grads, opt_state, params, task_weights=w)

Weight modes (`relation.mode` in the DRTL config):
  'embedding': `softmax(cos(e_T, M_k) / tau)`      -> `embedding_weights`
  'gradient' : `softmax(cos(g_k, g_T) / tau)`      -> `gradient_weights`
  'uniform'  : `1 / K`                             -> `uniform_weights`
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
WEIGHT_MODES = ("embedding", "gradient", "uniform")


# --------------------------------------------------------------------------- weights
def uniform_weights(num_tasks: int) -> jax.Array:
    """`(K,)` float32, every entry `1 / K`."""
    if num_tasks < 1:
        raise ValueError(f"uniform_weights: num_tasks={num_tasks}; need at least one task.")
    return jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)


def _masked_softmax(scores: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jax.nn.softmax(scores)
    # Tasks outside the mask get exactly zero; if no task is in the mask fall back to uniform.
    any_on = jnp.any(mask)
    masked = jnp.where(mask, scores, -jnp.inf)
    w = jax.nn.softmax(jnp.where(any_on, masked, jnp.zeros_like(scores)))
    return jnp.where(any_on, jnp.where(mask, w, 0.0), w)


def embedding_weights(target_aux_cos: jax.Array, tau: float = 0.1, *,
                      clip_negative: bool = False) -> jax.Array:
    """Relation weights from the knowledge graph: `softmax(cos(e_T, M_k) / tau)`.

    Args:
      target_aux_cos: `(K,)` cosine similarities in [-1, 1] between the target embedding and
        each auxiliary memory-bank row (`knowledge_graph(...)['target_aux']`).
      tau: softmax temperature (> 0); small tau -> nearly one-hot on the closest distortion.
      clip_negative: if True, tasks with `cos <= 0` get weight exactly 0 and the softmax is taken
        over the remaining ones (uniform if none is positive).
    Returns:
      `(K,)` float32 weights, non-negative, summing to 1.
    """
    cos = jnp.asarray(target_aux_cos, jnp.float32)
    return _masked_softmax(cos / tau, cos > 0 if clip_negative else None)


def tree_cosine(stacked: PyTree, target: PyTree, eps: float = 1e-12) -> jax.Array:
    """Cosine between each task's flattened gradient and the flattened target gradient.

    Args:
      stacked: pytree whose leaves have a leading task axis K (e.g. `(K, *leaf_shape)`).
      target: pytree with the same structure, leaves without the task axis.
    Returns:
      `(K,)` float32 cosines over the concatenation of all leaves (never materialised).
    """
    s_leaves, s_def = jax.tree_util.tree_flatten(stacked)
    t_leaves, t_def = jax.tree_util.tree_flatten(target)
    if s_def != t_def:
        raise ValueError("tree_cosine: the stacked per-task gradients and the target gradient "
                         f"have different pytree structures:\n{s_def}\nvs\n{t_def}")
    dot = 0.0
    nsq = 0.0
    tsq = 0.0
    for s, t in zip(s_leaves, t_leaves):
        s = s.reshape(s.shape[0], -1).astype(jnp.float32)
        t = t.reshape(-1).astype(jnp.float32)
        dot = dot + s @ t
        nsq = nsq + jnp.sum(s * s, axis=1)
        tsq = tsq + jnp.sum(t * t)
    return dot / jnp.maximum(jnp.sqrt(nsq) * jnp.sqrt(tsq), eps)


def gradient_weights(per_task_grads: PyTree, target_grad: PyTree, tau: float = 0.1, *,
                     clip_negative: bool = False) -> jax.Array:
    """Relation weights from gradient agreement: `softmax(cos(g_k, g_T) / tau)`.

    Args:
      per_task_grads: stacked pytree, leaves `(K, ...)` (e.g. from `per_task_grads`).
      target_grad: gradient of the target (few-shot) loss, same structure without K.
      tau: softmax temperature (> 0).
      clip_negative: if True, tasks whose gradient points away from the target gradient
        (`cos <= 0`, i.e. likely negative transfer) get weight exactly 0; the softmax is taken over
        the others (uniform if all are <= 0). If False (default) every task keeps a positive weight.
    Returns:
      `(K,)` float32 weights, non-negative, summing to 1.
    """
    cos = tree_cosine(per_task_grads, target_grad)
    return _masked_softmax(cos / tau, cos > 0 if clip_negative else None)


def relation_weights(mode: str, *, num_tasks: int, tau: float = 0.1,
                     target_aux_cos: jax.Array | None = None,
                     per_task_grads: PyTree | None = None, target_grad: PyTree | None = None,
                     clip_negative: bool = False) -> jax.Array:
    """Weights `(K,)` for `relation.mode` in ('embedding', 'gradient', 'uniform')."""
    if mode == "uniform":
        return uniform_weights(num_tasks)
    if mode == "embedding":
        if target_aux_cos is None:
            raise ValueError("relation.mode='embedding' needs target_aux_cos "
                             "(knowledge_graph(...)['target_aux']).")
        return embedding_weights(target_aux_cos, tau, clip_negative=clip_negative)
    if mode == "gradient":
        if per_task_grads is None or target_grad is None:
            raise ValueError("relation.mode='gradient' needs per_task_grads and target_grad.")
        return gradient_weights(per_task_grads, target_grad, tau, clip_negative=clip_negative)
    raise ValueError(f"relation.mode={mode!r} is unknown; use one of {WEIGHT_MODES}.")


# --------------------------------------------------------------------------- per-task grads
TASK_MAPS = ("vmap", "map", "unroll")
TASK_MAP_CHOICES = ("auto", *TASK_MAPS)  # 'auto': 'unroll' on CPU, 'vmap' on GPU/TPU


def resolve_task_map(task_map: str) -> str:
    """'auto' -> the fastest mode measured for the default backend ('unroll' on XLA:CPU, 'vmap'
    on GPU/TPU); any other name is returned unchanged."""
    if task_map == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return task_map


def map_over_tasks(fn: Callable[..., PyTree], *task_args: PyTree,
                   task_map: str = "vmap") -> PyTree:
    """`fn` applied to each task's slice of `task_args`; outputs stacked on a leading K axis.

    Args:
      fn: `fn(*one_task_args) -> pytree` for one task (no task axis).
      task_args: pytrees whose leaves have a leading task axis K.
      task_map: how the K tasks run inside the traced step:
        'auto': 'unroll' on CPU, 'vmap' otherwise (`resolve_task_map`);
        'vmap': one batched computation (best on GPU/TPU);
        'map': `jax.lax.map`, one task at a time (lowest memory);
        'unroll': K copies of the task graph in the same jitted program (compile time grows
          with K). Fastest on XLA:CPU, whose batched-kernel convolutions (vmap over per-task
          weights) and convolutions inside loops (lax.map) are several times slower; see
          experiments/RESULTS.md.
    Returns:
      pytree of `fn`'s outputs, every leaf with a leading K axis.
    """
    task_map = resolve_task_map(task_map)
    if task_map == "vmap":
        return jax.vmap(fn)(*task_args)
    if task_map == "map":
        return jax.lax.map(lambda args: fn(*args), task_args)
    if task_map == "unroll":
        num_tasks = jax.tree_util.tree_leaves(task_args)[0].shape[0]
        outs = [fn(*jax.tree_util.tree_map(lambda x, k=k: x[k], task_args))
                for k in range(num_tasks)]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
    raise ValueError(f"task_map={task_map!r} is unknown; use one of "
                     f"{', '.join(TASK_MAP_CHOICES)}.")


def per_task_grads(loss_fn: Callable[[PyTree, PyTree], jax.Array], params: PyTree,
                   task_batches: PyTree, *, task_map: str = "vmap") -> tuple[PyTree, jax.Array]:
    """Gradients of `loss_fn` for K tasks at the same `params`.

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar`.
      params: one parameter pytree.
      task_batches: pytree whose leaves have a leading task axis K (batch of task k = leaf[k]).
      task_map: 'vmap' | 'map' | 'unroll' (see `map_over_tasks`).
    Returns:
      `(grads, losses)`: grads stacked (every leaf `(K, *param_shape)`), losses `(K,)`.
    """
    vg = jax.value_and_grad(loss_fn)
    losses, grads = map_over_tasks(lambda b: vg(params, b), task_batches, task_map=task_map)
    return grads, losses


def weighted_sum(stacked: PyTree, weights: jax.Array) -> PyTree:
    """`sum_k w_k * stacked_k` leaf by leaf; leaves `(K, ...)` -> `(...)` (leaf dtype kept)."""
    weights = jnp.asarray(weights)

    def combine(g):
        if g.shape[:1] != weights.shape:
            raise ValueError(f"relation_weighted_sum: a gradient leaf has shape {g.shape} but the "
                             f"weights have shape {weights.shape}; every leaf needs the task axis "
                             "K first (use per_task_grads / meta_grads to build them).")
        return jnp.tensordot(weights.astype(g.dtype), g, axes=1)

    return jax.tree_util.tree_map(combine, stacked)


# --------------------------------------------------------------------------- optax transform
class RelationWeightState(NamedTuple):
    """State of `relation_weighted_sum`: the current task weights `(K,)` float32."""
    weights: jax.Array


def relation_weighted_sum(weights: jax.Array | None = None,
                          num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    """Optax transform: stacked per-task gradients in, `sum_k w_k g_k` out.

    `update(updates, state, params=None, *, task_weights=None, **extra)`: `updates` leaves are
    `(K, *param_shape)`; the output has the parameter shapes, so any optax optimizer can follow
    it in `optax.chain`. Weights come from `task_weights` when given (that call only; the state is
    unchanged), else from the state. Change the stored weights with `set_weights(state, w)`.
    The weights are used as given (not renormalised). `combined=True` says the updates are
    already the weighted sum (the gradient of `sum_k w_k L_k` with the state's weights, taken in
    one backward pass): they pass through unchanged.

    Args:
      weights: initial `(K,)` weights held in the state.
      num_tasks: K, used for uniform initial weights when `weights` is None.
        With neither, the state holds an empty `(0,)` array and every `update` must pass
        `task_weights`.
    """
    if weights is not None:
        init_w = jnp.asarray(weights, jnp.float32)
        if init_w.ndim != 1:
            raise ValueError(f"relation_weighted_sum: weights must have shape (K,), got "
                             f"{init_w.shape}.")
        if num_tasks is not None and init_w.shape[0] != num_tasks:
            raise ValueError(f"relation_weighted_sum: weights have K={init_w.shape[0]} entries but "
                             f"num_tasks={num_tasks}.")
    elif num_tasks is not None:
        init_w = uniform_weights(num_tasks)
    else:
        init_w = jnp.zeros((0,), jnp.float32)

    init_np = np.asarray(init_w)

    def init_fn(params):
        del params
        # A fresh buffer per init: a donated opt_state must not delete the transform's copy.
        return RelationWeightState(weights=jnp.asarray(init_np, jnp.float32))

    def update_fn(updates, state, params=None, *, task_weights=None, combined=False,
                  **extra_args):
        del params, extra_args
        if combined:  # already sum_k w_k g_k (one backward pass of the weighted loss)
            return updates, state
        w = state.weights if task_weights is None else jnp.asarray(task_weights, jnp.float32)
        if w.shape[0] == 0:
            raise ValueError("relation_weighted_sum was built without weights or num_tasks, so "
                             "update(...) needs task_weights=(K,) array (or call set_weights).")
        return weighted_sum(updates, w), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_rw_state(x) -> bool:
    return isinstance(x, RelationWeightState)


def set_weights(state: PyTree, weights: jax.Array) -> PyTree:
    """New optimizer state with the task weights replaced by `weights` `(K,)`.

    `state` may be the transform's own `RelationWeightState` or any optimizer state containing it
    (e.g. the tuple state of `optax.chain`). Jittable; keep K fixed to avoid retracing.
    """
    w = jnp.asarray(weights, jnp.float32)
    found = []

    def repl(x):
        if _is_rw_state(x):
            found.append(True)
            return x._replace(weights=w)
        return x

    new = jax.tree_util.tree_map(repl, state, is_leaf=_is_rw_state)
    if not found:
        raise ValueError("set_weights: no RelationWeightState in this optimizer state; build the "
                         "optimizer with optax.chain(relation_weighted_sum(...), ...).")
    return new


def get_weights(state: PyTree) -> jax.Array:
    """The `(K,)` task weights stored in `state` (own state or a chain containing it)."""
    found = [x for x in jax.tree_util.tree_leaves(state, is_leaf=_is_rw_state) if _is_rw_state(x)]
    if not found:
        raise ValueError("get_weights: no RelationWeightState in this optimizer state.")
    return found[0].weights
