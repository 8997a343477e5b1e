"""Distortion Relation Network (DRN) and the distortion knowledge graph.

The DRN embeds a distorted LR patch `(B, h, w, 3)` float32 in [0, 1] to an L2-normalised vector
`(B, D)`. A learnable memory bank `M` `(K, D)` (param `memory_bank` of the module) holds one
prototype per auxiliary distortion. DRN + bank are trained as a prototype classifier,
`logits = s * cos(e(x), M_k)`, cross-entropy against the distortion id. Graph edges are cosines:
`aux_aux[i, j] = cos(M_i, M_j)`, `target_aux[k] = cos(e_T, M_k)` with `e_T` the normalised mean
embedding of target LR crops.

Input conditioning (`input_mode`), so the DRN sees distortion rather than content:
  'raw'       : `2x - 1`.
  'normalize' : per image, subtract the per-channel mean and divide by the image std (removes
                brightness / contrast of the content; keeps the relative noise/blur structure).
  'highpass'  : `gain * (x - GaussianBlur_sigma(x))`, the fine-scale residual where blur, noise,
                blocking and resampling artefacts live; absolute amplitude kept (noise level).
  'both' (default): channel concatenation of 'normalize' and 'highpass' (6 channels).

All functions are pure over the Flax variables dict `params` (`{'params': ...}`) and jittable
(the module is a hashable dataclass: close over it or mark it static).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

PyTree = Any
INPUT_MODES = ("raw", "normalize", "highpass", "both")


# --------------------------------------------------------------------------- preprocessing
def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of `(..., H, W, C)` with reflect padding (radius ceil(3 sigma))."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = (k / jnp.sum(k)).astype(x.dtype)
    nd = x.ndim
    pad = [(0, 0)] * nd
    # H axis
    pad_h = list(pad)
    pad_h[nd - 3] = (radius, radius)
    xp = jnp.pad(x, pad_h, mode="reflect")
    h = x.shape[-3]
    y = sum(k[i] * jax.lax.slice_in_dim(xp, i, i + h, axis=nd - 3) for i in range(2 * radius + 1))
    pad_w = list(pad)
    pad_w[nd - 2] = (radius, radius)
    yp = jnp.pad(y, pad_w, mode="reflect")
    w = x.shape[-2]
    return sum(k[i] * jax.lax.slice_in_dim(yp, i, i + w, axis=nd - 2)
               for i in range(2 * radius + 1))


def preprocess(x: jax.Array, mode: str = "both", highpass_sigma: float = 1.0,
               highpass_gain: float = 4.0, eps: float = 1e-2) -> jax.Array:
    """DRN input conditioning of `(B, h, w, 3)` [0, 1] images; see the module docstring."""
    if mode not in INPUT_MODES:
        raise ValueError(f"DRN input_mode={mode!r} is unknown; use one of {INPUT_MODES}.")
    if mode == "raw":
        return 2.0 * x - 1.0
    parts = []
    if mode in ("normalize", "both"):
        mean = jnp.mean(x, axis=(-3, -2), keepdims=True)
        std = jnp.std(x, axis=(-3, -2, -1), keepdims=True)
        parts.append((x - mean) / (std + eps))
    if mode in ("highpass", "both"):
        parts.append(highpass_gain * (x - gaussian_blur(x, highpass_sigma)))
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """`x / ||x||` along `axis`."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


# --------------------------------------------------------------------------- module
def fan_in_normal(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """LeCun-normal init (std = 1/sqrt(fan_in), fan_in = prod(shape[:-1])), drawn flat.

    Drawing a 1-D vector and reshaping gives the same distribution as a direct N-D draw but
    compiles in a fraction of the time on XLA:CPU (N-D threefry draws are slow to compile).
    """
    fan_in = max(1, math.prod(shape[:-1]))
    flat = jax.random.normal(key, (math.prod(shape),), dtype)
    return (flat / math.sqrt(fan_in)).reshape(shape)


class DistortionRelationNet(nn.Module):
    """DRN encoder + memory bank.

    `__call__(x)`: x `(B, h, w, 3)` float32 in [0, 1] -> L2-normalised embeddings `(B, embed_dim)`.
    Also owns the param `memory_bank` `(num_tasks, embed_dim)` (read it with `memory_bank(params)`).
    Encoder: 3x3 convs with `widths` channels (first stride `first_stride`, the rest stride 2),
    LeakyReLU, global average pool, MLP (`mlp_hidden`) -> `embed_dim`.
    """
    num_tasks: int
    embed_dim: int = 64
    widths: Sequence[int] = (32, 64, 128)
    first_stride: int = 1
    mlp_hidden: int = 128
    input_mode: str = "both"
    highpass_sigma: float = 1.0
    highpass_gain: float = 4.0
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        self.param("memory_bank", lambda k, s: jax.random.normal(k, (math.prod(s),)).reshape(s),
                   (self.num_tasks, self.embed_dim))
        h = preprocess(x.astype(jnp.float32), self.input_mode, self.highpass_sigma,
                       self.highpass_gain)
        for i, w in enumerate(self.widths):
            s = self.first_stride if i == 0 else 2
            h = nn.Conv(w, (3, 3), strides=(s, s), padding="SAME", kernel_init=fan_in_normal,
                        name=f"conv{i}")(h)
            h = nn.leaky_relu(h, self.negative_slope)
        h = jnp.mean(h, axis=(1, 2))
        h = nn.Dense(self.mlp_hidden, kernel_init=fan_in_normal, name="fc0")(h)
        h = nn.leaky_relu(h, self.negative_slope)
        h = nn.Dense(self.embed_dim, kernel_init=fan_in_normal, name="fc1")(h)
        return l2_normalize(h)


def init_drn(key: jax.Array, model: DistortionRelationNet,
             input_shape: Sequence[int] = (1, 32, 32, 3)) -> PyTree:
    """Flax variables `{'params': ...}` of the DRN (encoder + memory bank); one jitted init."""
    return jax.jit(model.init)(key, jnp.zeros(tuple(input_shape), jnp.float32))


def memory_bank(params: PyTree) -> jax.Array:
    """The raw (unnormalised) memory bank `(K, D)` from the DRN variables."""
    return params["params"]["memory_bank"]


def embed(model: DistortionRelationNet, params: PyTree, images: jax.Array) -> jax.Array:
    """Normalised embeddings `(N, D)` of `(N, h, w, 3)` [0, 1] images."""
    return model.apply(params, images)


def prototype_logits(emb: jax.Array, bank: jax.Array, scale_s: float = 16.0) -> jax.Array:
    """`s * cos(emb_n, bank_k)`: emb `(N, D)`, bank `(K, D)` -> logits `(N, K)`."""
    return scale_s * (l2_normalize(emb) @ l2_normalize(bank).T)


def _logits(model, params, images, logit_scale):
    return prototype_logits(embed(model, params, images), memory_bank(params), logit_scale)


def _ce_and_accuracy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy of `(N, K)` logits. `labels`: `(N,)` int, or `(N, K)`
    soft targets (a mixture of distortions: e.g. 0.5 / 0.5 over its two components), where a
    prediction is right when it names one of the components."""
    if labels.ndim == 2:
        loss = jnp.mean(optax.softmax_cross_entropy(logits, labels))
        hit = jnp.take_along_axis(labels, jnp.argmax(logits, -1)[:, None], -1)[:, 0] > 0
        return loss, jnp.mean(hit)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def drn_loss(model: DistortionRelationNet, params: PyTree, images: jax.Array, labels: jax.Array,
             logit_scale: float = 16.0) -> jax.Array:
    """Mean cross-entropy of the prototype classifier; images `(N, h, w, 3)`, labels `(N,)` int
    or `(N, K)` soft (mixtures)."""
    return _ce_and_accuracy(_logits(model, params, images, logit_scale), labels)[0]


def drn_accuracy(model: DistortionRelationNet, params: PyTree, images: jax.Array,
                 labels: jax.Array) -> jax.Array:
    """Fraction of images whose nearest prototype (max cosine) is their label (or, for `(N, K)`
    soft labels, one of its components)."""
    return _ce_and_accuracy(_logits(model, params, images, 1.0), labels)[1]


def drn_train_step(model: DistortionRelationNet, optimizer: optax.GradientTransformation,
                   params: PyTree, opt_state: PyTree, images: jax.Array, labels: jax.Array,
                   logit_scale: float = 16.0) -> tuple[PyTree, PyTree, dict]:
    """One optimizer step on `drn_loss`; returns `(params, opt_state, {'loss', 'accuracy'})`.

    Pure; jit it with `model`, `optimizer`, `logit_scale` closed over (see `make_drn_train_step`).
    """

    def loss_fn(p):
        return _ce_and_accuracy(_logits(model, p, images, logit_scale), labels)

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "accuracy": acc}


def make_drn_train_step(model: DistortionRelationNet, optimizer: optax.GradientTransformation,
                        logit_scale: float = 16.0, *, jit: bool = True) -> Callable:
    """`step(params, opt_state, images, labels) -> (params, opt_state, metrics)`, jitted."""

    def step(params, opt_state, images, labels):
        return drn_train_step(model, optimizer, params, opt_state, images, labels, logit_scale)

    return jax.jit(step, donate_argnums=(0, 1)) if jit else step


@dataclasses.dataclass
class DRNTrainResult:
    """Output of `train_drn`: the module, its trained variables, per-step loss/accuracy `(S,)`."""
    model: DistortionRelationNet
    params: PyTree
    losses: jax.Array
    accuracies: jax.Array


def train_drn(key: jax.Array, sample_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
              num_steps: int, *, num_tasks: int | None = None,
              model: DistortionRelationNet | None = None,
              optimizer: optax.GradientTransformation | None = None,
              learning_rate: float = 1e-3, logit_scale: float = 16.0,
              steps_per_call: int | None = None, params: PyTree | None = None) -> DRNTrainResult:
    """Train DRN + memory bank on labelled synthetic distortions.

    Args:
      key: PRNG key.
      sample_fn: jittable `sample_fn(key) -> (images (N, h, w, 3) [0, 1], labels (N,) int in
        [0, K) or (N, K) soft targets)`, e.g. built on the degradation registry.
      num_steps: optimizer steps.
      num_tasks: K (needed when `model` is None; default model = `DistortionRelationNet(K)`).
      optimizer: default `optax.adam(learning_rate)`.
      steps_per_call: if > 1, run that many steps per jitted `lax.scan` call; default: one
        jitted (sample + step) call per step from Python (faster on CPU).
      params: initial variables (default: fresh init).
    Returns:
      `DRNTrainResult(model, params, losses (num_steps,), accuracies (num_steps,))`.
    """
    if model is None:
        if num_tasks is None:
            raise ValueError("train_drn needs num_tasks (K) or a model.")
        model = DistortionRelationNet(num_tasks=num_tasks)
    elif num_tasks is not None and model.num_tasks != num_tasks:
        raise ValueError(f"train_drn: model.num_tasks={model.num_tasks} but num_tasks={num_tasks}.")
    optimizer = optax.adam(learning_rate) if optimizer is None else optimizer
    init_key, key = jax.random.split(key)
    if params is None:
        shape = jax.eval_shape(sample_fn, init_key)[0].shape
        params = init_drn(init_key, model, (1,) + tuple(shape[1:]))
    else:
        params = jax.tree_util.tree_map(jnp.copy, params)  # the steps donate their inputs
    opt_state = optimizer.init(params)

    def fused(p, s, k):
        images, labels = sample_fn(k)
        p, s, m = drn_train_step(model, optimizer, p, s, images, labels, logit_scale)
        return p, s, m["loss"], m["accuracy"]

    def scanned(p, s, keys):
        def body(carry, k):
            p, s, loss, acc = fused(*carry, k)
            return (p, s), (loss, acc)

        (p, s), (loss, acc) = jax.lax.scan(body, (p, s), keys)
        return p, s, loss, acc

    keys = jax.random.split(key, num_steps)  # the same key per step whichever loop runs it
    losses, accs = [], []
    if not steps_per_call or steps_per_call == 1:
        # A Python loop over one fused (sample + step) jitted call: on XLA:CPU this runs ~4x faster
        # than the same steps inside lax.scan; dispatch is asynchronous, so it is cheap elsewhere.
        step = jax.jit(fused, donate_argnums=(0, 1))
        for i in range(num_steps):
            params, opt_state, loss, acc = step(params, opt_state, keys[i])
            losses.append(loss)
            accs.append(acc)
        losses, accs = [jnp.stack(losses)] if losses else [], [jnp.stack(accs)] if accs else []
    else:
        run = jax.jit(scanned, donate_argnums=(0, 1))
        for start in range(0, num_steps, steps_per_call):
            params, opt_state, loss, acc = run(params, opt_state,
                                               keys[start:start + steps_per_call])
            losses.append(loss)
            accs.append(acc)
    cat = (lambda xs: jnp.concatenate(xs)) if losses else (lambda xs: jnp.zeros((0,)))
    return DRNTrainResult(model, params, cat(losses), cat(accs))


# --------------------------------------------------------------------------- graph
def target_embedding(model: DistortionRelationNet, params: PyTree,
                     target_lr_crops: jax.Array) -> jax.Array:
    """Target node `e_T` `(D,)`: normalised mean embedding of `(N, h, w, 3)` target LR crops."""
    return l2_normalize(jnp.mean(embed(model, params, target_lr_crops), axis=0))


def knowledge_graph(model: DistortionRelationNet, params: PyTree,
                    target_crops: jax.Array) -> dict[str, jax.Array]:
    """Distortion knowledge graph.

    Returns dict: `aux_aux` `(K, K)` = cos(M_i, M_j); `target_aux` `(K,)` = cos(e_T, M_k);
    `target_embedding` `(D,)`.
    """
    bank = l2_normalize(memory_bank(params))
    e_t = target_embedding(model, params, target_crops)
    return {"aux_aux": bank @ bank.T, "target_aux": bank @ e_t, "target_embedding": e_t}


def random_crops(key: jax.Array, image: jax.Array, size: int, num: int) -> jax.Array:
    """`num` random `size x size` crops `(num, size, size, C)` of one `(H, W, C)` image.

    Jittable (static `size`, `num`); crop corners uniform over all valid positions.
    """
    h, w = image.shape[0], image.shape[1]
    if size > h or size > w:
        raise ValueError(f"random_crops: crop size {size} is larger than the image {h}x{w}; "
                         "use a smaller crop size.")
    ky, kx = jax.random.split(key)
    ys = jax.random.randint(ky, (num,), 0, h - size + 1)
    xs = jax.random.randint(kx, (num,), 0, w - size + 1)
    return jax.vmap(lambda y, x: jax.lax.dynamic_slice(
        image, (y, x, 0), (size, size, image.shape[2])))(ys, xs)
