"""PCL-SR's embedding network: `vgg_discriminator` (jaxsr.models.side) on the 9 Haar detail bands.

Its parameters are trained (aux network 'embed' of the train state) with L_CLD; its BatchNorm
running statistics are the buffer 'embed_batch_stats'. Like the released PyTorch code, which never
switches the discriminator to eval mode, every call normalises with the statistics of its own
batch (train mode); each call of the embedding update advances the running statistics.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxsr.methods.pcl.wavelet import detail_bands
from jaxsr.model_factory import build_side_model

FEATURE = "block{}_preact"


def build_embedding(pcl_cfg: ml_collections.ConfigDict):
    """The Flax module of `config.pcl.embed` (a side-network block: name, dtype, kwargs)."""
    return build_side_model(pcl_cfg.embed)


def init_embedding(net, key: jax.Array, hr_patch: int) -> tuple[Any, Any]:
    """(params, batch_stats) for HR images of hr_patch x hr_patch (9-band input at half size)."""
    x = jnp.zeros((1, hr_patch // 2, hr_patch // 2, 9), jnp.float32)
    variables = net.init(key, x, train=False)
    return variables["params"], variables["batch_stats"]


def embed(net, params: Any, batch_stats: Any, images: jax.Array, feature_block: int
          ) -> tuple[jax.Array, jax.Array, Any]:
    """One train-mode call: images (B, H, W, 3) float in [0, 1] -> (patch logits (B, p, p),
    contrastive features (B, H/8, W/8, C) = block `feature_block` before its activation,
    updated batch_stats)."""
    (logits, feats), updates = net.apply(
        {"params": params, "batch_stats": batch_stats}, detail_bands(images), train=True,
        return_features=True, mutable=["batch_stats"])
    return logits, feats[FEATURE.format(feature_block)], updates["batch_stats"]


def embed_many(net, params: Any, batch_stats: Any, stack: jax.Array, feature_block: int
               ) -> tuple[jax.Array, jax.Array, Any]:
    """`embed` on each of K image batches in turn (a scan: K separate calls, each normalised
    with its own batch statistics, the running statistics threaded through in order):
    stack (K, B, H, W, 3) -> logits (K, B, p, p), features (K, B, h, w, C), batch_stats
    after the K calls."""
    def one(stats, images):
        lg, ft, stats = embed(net, params, stats, images, feature_block)
        return stats, (lg, ft)
    batch_stats, (logits, feats) = jax.lax.scan(one, batch_stats, stack)
    return logits, feats, batch_stats


def param_count_formula(in_channels: int, widths, use_bn: bool = True,
                        bn_first: bool = True) -> int:
    """Trainable parameters of the embedding network by hand: per block a 3x3 conv (no bias with
    BN) and BN scale+bias (2c), then the 1x1 head conv (c_last + 1)."""
    total, c_in = 0, in_channels
    for i, c in enumerate(widths):
        bn = use_bn and (i > 0 or bn_first)
        total += 9 * c_in * c + (2 * c if bn else c)
        c_in = c
    return total + c_in + 1
