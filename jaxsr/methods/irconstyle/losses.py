"""ConStyle's losses, composed from jaxsr.losses (InfoNCE, MSE, code Gram):

  infonce = InfoNCE(q, k+, queue, temperature)         q: degraded crop, query encoder
                                                         k+: clean crop, key encoder
  content = MSE(q, k+)
  style   = -MSE(G(q1), G(neg_a)) - MSE(G(q2), G(neg_b))  G(z) = z z^T / (D B) (code_gram);
            q1 = first head layer, q2 = the code of the query encoder; neg_a, neg_b = two
            B-row blocks of the queue (moco.queue_blocks)

With `normalize` (default, standard MoCo) q, k+, q1, q2 are L2-normalised first and the queue holds
unit rows; `normalize=False` uses the published code's raw dot products.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr.losses import code_gram, info_nce, l2_normalize, mse
from jaxsr.methods.irconstyle.moco import queue_blocks


def embed(z: jax.Array, normalize: bool) -> jax.Array:
    """(B, D) -> float32 (B, D), unit rows when `normalize`."""
    return l2_normalize(z) if normalize else z.astype(jnp.float32)


def constyle_losses(q_hidden: jax.Array, q_code: jax.Array, k_code: jax.Array,
                    queue: jax.Array, temperature: float = 0.07,
                    normalize: bool = True) -> dict[str, jax.Array]:
    """{'infonce', 'content', 'style'} float32 scalars.

    q_hidden: (B, D) first head layer of the query encoder; q_code: (B, D) its code; k_code:
    (B, D) key-encoder code of the clean crops (treated as a constant); queue: (K, D) negatives.
    """
    q = embed(q_code, normalize)
    k = jax.lax.stop_gradient(embed(k_code, normalize))
    q1 = embed(q_hidden, normalize)
    neg = jax.lax.stop_gradient(queue)
    neg_a, neg_b = queue_blocks(neg, q.shape[0])
    return {
        "infonce": info_nce(q, k, neg, temperature, normalize=False),
        "content": mse(q, k),
        "style": -mse(code_gram(q1), code_gram(neg_a)) - mse(code_gram(q), code_gram(neg_b)),
    }
