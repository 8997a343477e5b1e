"""PCL-SR's losses, composed from `jaxsr.losses` (similarity and the positive-first softmax CE).

s(a, b) = `jaxsr.losses.mean_cosine_similarity`: the mean over positions of the per-pixel cosine
along channels, per image.

contrastive_loss (L_CL, for the SR network), features (B, h, w, C) of the SR image, of P
positives and of K negatives:
  'infonce' (used with RCAN, alpha 5): for each positive j, the cross-entropy of
      [s(SR, p_j), s(SR, n_1), ..., s(SR, n_K)] with label 0 (no temperature), averaged over the
      positives and the batch;
  'cosine' (used with NLSN, alpha 3): mean_k s(SR, n_k) - mean_j s(SR, p_j) (batch mean).
dual_contrastive_loss (L_CLD, for the embedding network), real logits r (N,) and fake logits
  f (M,) (patch logits flattened over samples, batch and positions):
      mean_i CE([r_i, f_1..f_M], 0) + mean_j CE([-f_j, -r_1..-r_N], 0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr.losses import mean_cosine_similarity, positive_first_cross_entropy

CL_FORMS = ("infonce", "cosine")


def similarities(sr_feat: jax.Array, feats: jax.Array) -> jax.Array:
    """s(SR, x_k) for a stack of feature maps: (B, h, w, C), (K, B, h, w, C) -> (K, B) float32."""
    return jax.vmap(lambda f: mean_cosine_similarity(sr_feat, f))(feats)


def contrastive_loss(sr_feat: jax.Array, pos_feats: jax.Array, neg_feats: jax.Array,
                     form: str = "infonce") -> jax.Array:
    """L_CL: sr_feat (B, h, w, C), pos_feats (P, B, h, w, C), neg_feats (K, B, h, w, C) ->
    float32 scalar (see the module doc for the two forms)."""
    s_pos = similarities(sr_feat, pos_feats)   # (P, B)
    s_neg = similarities(sr_feat, neg_feats)   # (K, B)
    if form == "infonce":
        negs = jnp.broadcast_to(s_neg.T[None], (s_pos.shape[0],) + s_neg.T.shape)  # (P, B, K)
        logits = jnp.concatenate([s_pos[..., None], negs], axis=-1)                 # (P, B, 1+K)
        return positive_first_cross_entropy(logits)
    if form == "cosine":
        return jnp.mean(s_neg) - jnp.mean(s_pos)
    raise ValueError(f"config.pcl.cl_form={form!r} is unknown; use one of {CL_FORMS}")


def _one_against_all(first: jax.Array, others: jax.Array) -> jax.Array:
    """mean_i CE([first_i, others_1..others_M], 0) for first (N,), others (M,)."""
    logits = jnp.concatenate(
        [first[:, None], jnp.broadcast_to(others[None], (first.shape[0], others.shape[0]))],
        axis=1)
    return positive_first_cross_entropy(logits)


def dual_contrastive_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """L_CLD of the released code's `contrastive_D_loss`: real and fake logits of any shape
    (flattened) -> float32 scalar >= 0. Low when every real logit beats all fake ones and every
    fake logit is below all real ones."""
    r = jnp.ravel(real_logits).astype(jnp.float32)
    f = jnp.ravel(fake_logits).astype(jnp.float32)
    return _one_against_all(r, f) + _one_against_all(-f, -r)
