"""The losses every method composes: pixel, cosine, InfoNCE (global and patch-wise), Gram / style.

All functions are pure and jittable (string and size arguments are static: close over them or
mark them `static_argnames` under `jax.jit`). Inputs of any float dtype are cast to float32 and
every result is float32.

Contrastive losses take *logits* of the form "similarity / temperature" and score them with a
softmax cross-entropy whose correct class is the positive, always put first (index 0):

    loss = logsumexp([l_+, l_1, ..., l_M]) - l_+

Who uses what:
  PCL-SR      mean_cosine_similarity + positive_first_cross_entropy (temperature 1), pixel_loss.
  CRL-SR      sample_positions + gather_positions, bidirectional_patch_nce (L_bc),
              patch_info_nce with extra negatives (L_srnce), pixel_loss.
  IRConStyle  info_nce with a shared (M, D) queue, mse (content), code_gram (style), pixel_loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PIXEL_LOSS_KINDS = ("l1", "l2", "charbonnier")
GRAM_NORMALIZATIONS = ("chw", "hw")

# Logit given to entries that must not count as negatives (e.g. a position paired with itself).
# exp(_EXCLUDED_LOGIT - max) is exactly 0 in float32 for any realistic logits, and the entry gets
# exactly zero gradient, so the result equals leaving the entry out of the softmax.
_EXCLUDED_LOGIT = -1e9


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x).astype(jnp.float32)


# --------------------------------------------------------------------------- pixel losses
def pixel_loss(pred: jax.Array, target: jax.Array, kind: str = "l1") -> jax.Array:
    """Mean pixel loss between (B, H, W, 3) float images: 'l1', 'l2' or 'charbonnier'.

    pred, target: same shape, any float dtype (values usually in [0, 1]); computed in float32.
    'charbonnier' is `mean(sqrt(diff**2 + 1e-6))`. Returns a float32 scalar >= 0.
    """
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    if kind == "l1":
        return jnp.mean(jnp.abs(diff))
    if kind == "l2":
        return jnp.mean(diff ** 2)
    if kind == "charbonnier":
        return jnp.mean(jnp.sqrt(diff ** 2 + 1e-6))
    raise ValueError(f"config.train.loss={kind!r} is unknown; use 'l1', 'l2' or 'charbonnier'")


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared difference of two arrays of the same shape -> float32 scalar >= 0."""
    return jnp.mean((_f32(a) - _f32(b)) ** 2)


# --------------------------------------------------------------------------- cosine similarity
def l2_normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """`x / max(||x||, eps)` along the last axis; (..., D) -> (..., D) float32, unit norm rows."""
    x = _f32(x)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def cosine_similarity_map(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Per-pixel cosine similarity over channels: (B, H, W, C) x (B, H, W, C) -> (B, H, W).

    `a.b / (max(||a||, eps) * max(||b||, eps))` (PyTorch's `F.cosine_similarity(dim=channels)`),
    float32 in [-1, 1]; 0 where either vector is zero.
    """
    return jnp.sum(l2_normalize(a, eps) * l2_normalize(b, eps), axis=-1)


def mean_cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    """PCL-SR's image similarity s(a, b): (B, H, W, C) x (B, H, W, C) -> (B,) float32 in [-1, 1].

    The mean over the H*W positions of `cosine_similarity_map(a, b)`.
    """
    return jnp.mean(cosine_similarity_map(a, b, eps), axis=(1, 2))


# --------------------------------------------------------------------------- InfoNCE
def positive_first_cross_entropy(logits: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy whose correct class is index 0.

    logits: (..., 1 + M) float, the positive's logit first, then M negatives'. Returns the float32
    scalar mean over the leading axes of `logsumexp(logits) - logits[..., 0]` (>= 0; log(1 + M)
    when all logits are equal). Stable for large logits.
    """
    logits = _f32(logits)
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[..., 0])


def _maybe_normalize(x: jax.Array, normalize: bool) -> jax.Array:
    return l2_normalize(x) if normalize else _f32(x)


def info_nce(query: jax.Array, positive: jax.Array, negatives: jax.Array,
             temperature: float = 0.07, normalize: bool = True) -> jax.Array:
    """InfoNCE: one positive key per query against M negative keys.

    query, positive: (N, D). negatives: (N, M, D), a set per query, or (M, D), shared by every
    query (e.g. a MoCo queue). With `normalize`, q, k+ and k- are L2-normalised first (dot products
    are cosines); otherwise raw dot products are used. temperature > 0.
    logits = [q.k+, q.k-_1, ..., q.k-_M] / temperature; returns the float32 scalar mean over N of
    the cross-entropy with the positive as class 0 (log(1 + M) when all similarities are equal).
    """
    if jnp.ndim(negatives) not in (2, 3):
        raise ValueError(f"info_nce: negatives have shape {jnp.shape(negatives)}; pass (N, M, D) "
                         "per-query negatives or (M, D) shared ones.")
    q = _maybe_normalize(query, normalize)
    k_pos = _maybe_normalize(positive, normalize)
    k_neg = _maybe_normalize(negatives, normalize)
    positive_logit = jnp.sum(q * k_pos, axis=-1, keepdims=True)          # (N, 1)
    if k_neg.ndim == 2:
        negative_logits = q @ k_neg.T                                     # (N, M), shared
    else:
        negative_logits = jnp.einsum("nd,nmd->nm", q, k_neg)              # (N, M), per query
    logits = jnp.concatenate([positive_logit, negative_logits], axis=-1) / temperature
    return positive_first_cross_entropy(logits)


# --------------------------------------------------------------------------- spatial sampling
def sample_positions(key: jax.Array, height: int, width: int, num: int) -> jax.Array:
    """`num` distinct flat positions of an (height, width) map, uniform without replacement.

    height, width, num: static Python ints, num <= height * width. Returns (num,) int32 in
    [0, height * width), row-major (index = row * width + col); the same key gives the same draw.
    """
    if not 0 < num <= height * width:
        raise ValueError(f"sample_positions: num={num} positions cannot be drawn without "
                         f"replacement from a {height}x{width} map; use 1 <= num <= "
                         f"{height * width} (e.g. lower the method's num_patches).")
    indices = jax.random.choice(key, height * width, shape=(num,), replace=False)
    return indices.astype(jnp.int32)


def gather_positions(features: jax.Array, indices: jax.Array) -> jax.Array:
    """The feature vectors at flat positions: (B, H, W, C), (num,) int -> (B, num, C) float32.

    indices are row-major flat positions, as returned by `sample_positions`; the same positions
    are taken from every image of the batch.
    """
    batch, height, width, channels = features.shape
    flat = features.reshape(batch, height * width, channels)
    return _f32(jnp.take(flat, indices, axis=1))


# --------------------------------------------------------------------------- patch-wise InfoNCE
def _exclude_diagonal(logits: jax.Array) -> jax.Array:
    """(..., M, M) -> the same with the diagonal entries set to `_EXCLUDED_LOGIT`."""
    size = logits.shape[-1]
    return jnp.where(jnp.eye(size, dtype=bool), _EXCLUDED_LOGIT, logits)


def _position_nce(query: jax.Array, key: jax.Array, temperature: float, *,
                  query_side_negatives: bool, extra_negatives: jax.Array | None) -> jax.Array:
    """Patch InfoNCE of prepared (normalised or not) features query, key: (B, M, D).

    For position i of image b: positive key[b, i]; negatives key[b, j != i], then query[b, j != i]
    if `query_side_negatives`, then every extra_negatives[b] (B, M2, D) if given.
    """
    similarity = lambda x, y: jnp.einsum("bid,bjd->bij", x, y) / temperature
    positive = jnp.sum(query * key, axis=-1, keepdims=True) / temperature   # (B, M, 1)
    parts = [positive, _exclude_diagonal(similarity(query, key))]          # (B, M, M)
    if query_side_negatives:
        parts.append(_exclude_diagonal(similarity(query, query)))          # (B, M, M)
    if extra_negatives is not None:
        parts.append(similarity(query, extra_negatives))                   # (B, M, M2)
    return positive_first_cross_entropy(jnp.concatenate(parts, axis=-1))


def patch_info_nce(query_feats: jax.Array, key_feats: jax.Array, temperature: float = 0.07,
                   normalize: bool = True, negatives: jax.Array | None = None) -> jax.Array:
    """Patch-wise InfoNCE (CUT / PatchNCE): positions of one image are each other's negatives.

    query_feats, key_feats: (B, M, D), features sampled at the same M positions (see
    `gather_positions`). For image b and position i the positive is key_feats[b, i]; the negatives
    are key_feats[b, j] for every j != i (the diagonal is left out exactly, not subtracted) and,
    when `negatives` (B, M2, D) is given, all of negatives[b] as well. With `normalize`, every
    feature is L2-normalised first. Returns the float32 scalar mean cross-entropy over B * M.
    """
    extra = None if negatives is None else _maybe_normalize(negatives, normalize)
    return _position_nce(_maybe_normalize(query_feats, normalize),
                         _maybe_normalize(key_feats, normalize), temperature,
                         query_side_negatives=False, extra_negatives=extra)


def bidirectional_patch_nce(a: jax.Array, b: jax.Array, temperature: float = 0.07,
                            normalize: bool = True) -> jax.Array:
    """CRL-SR's bidirectional contrastive loss L_bc between two sides' sampled features.

    a, b: (B, M, D), e.g. a = degradation remover features f_l and b = details remover features
    f_h, sampled at the same M positions. Direction a->b: for each image and position i the query
    is a[i], the positive b[i], and the negatives are the other positions of BOTH sides,
    b[j != i] and a[j != i] (2 * (M - 1) negatives). Direction b->a is the same with the sides
    swapped. With `normalize`, features are L2-normalised first. Returns the float32 scalar mean
    of the two directions (each a mean over B * M); symmetric: f(a, b) == f(b, a).
    """
    a = _maybe_normalize(a, normalize)
    b = _maybe_normalize(b, normalize)
    direction = lambda q, k: _position_nce(q, k, temperature, query_side_negatives=True,
                                           extra_negatives=None)
    return 0.5 * (direction(a, b) + direction(b, a))


# --------------------------------------------------------------------------- Gram / style
def gram_matrix(features: jax.Array, normalize: str = "chw") -> jax.Array:
    """Channel Gram matrices: (B, H, W, C) -> (B, C, C) float32, `F^T F` with F the (H*W, C) map.

    normalize: 'chw' divides by H*W*C (the Gatys / perceptual-loss convention); 'hw' divides by
    H*W (the mean over positions of the outer products, independent of the channel count).
    """
    if normalize not in GRAM_NORMALIZATIONS:
        raise ValueError(f"gram_matrix: normalize={normalize!r} is unknown; use 'chw' (divide "
                         "by H*W*C) or 'hw' (divide by H*W).")
    _, height, width, channels = features.shape
    divisor = height * width * (channels if normalize == "chw" else 1)
    x = _f32(features)
    return jnp.einsum("bhwc,bhwd->bcd", x, x) / divisor


def code_gram(z: jax.Array) -> jax.Array:
    """IRConStyle's batch Gram matrix of latent codes: (B, D) -> (B, B) float32.

    `G = z z^T / (D * B)`, exactly as the ConStyle code computes it (D = 128 there): a Gram over
    the batch rows, not over the code dimensions.
    """
    z = _f32(z)
    batch, dim = z.shape
    return (z @ z.T) / (dim * batch)


def style_loss(feat_a: jax.Array, feat_b: jax.Array, normalize: str = "chw") -> jax.Array:
    """Mean squared difference of the Gram matrices of two (B, H, W, C) feature maps.

    Grams from `gram_matrix(., normalize)`; returns a float32 scalar >= 0 (0 for equal inputs).
    """
    return mse(gram_matrix(feat_a, normalize), gram_matrix(feat_b, normalize))
