"""Side networks (jaxsr.models.side): parameter counts against hand formulas, shapes, PyTorch
adaptive pooling bins, BatchNorm train/eval behaviour, bfloat16, and building by name.

Parameter-count hand formulas (conv3(i, o) = 9 i o, + o with bias; BN(c) = 2c scale/bias; the
running mean/var live in 'batch_stats', not 'params'):
  VGGDiscriminator(C_in, widths c_0..c_{L-1}) = sum_i [conv3(c_{i-1}, c_i) + (BN(c_i) if block i has
      BN else bias c_i)] + (c_{L-1} + 1) [1x1 head], c_{-1} = C_in.
      PCL defaults, C_in = 9 (Haar detail bands): 4,686,912 conv + 3,840 BN + 513 head = 4,691,265.
      pcl.md publishes no figure for it.
  ConvEncoder(C_in, stages, hidden, code) = sum over convs conv3(c_in, c_out) [no bias]
      + sum over head layers (d_in d_out + d_out + BN(d_out)), d_0 = last stage width.
      ConStyle defaults, C_in = 3: convs 432 + 2,304 + 4,608 + 9,216 + 18,432 + 73,728 + 147,456
      + 294,912 + 589,824 = 1,140,912; head (256*128 + 128 + 256) + (128*128 + 128 + 256) = 49,920;
      total 1,190,832 = the "about 1.19 M" of irconstyle.md.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jaxsr.models as models
from jaxsr.model_factory import build_side_model
from jaxsr.models import count_params
from jaxsr.models.common import conv
from jaxsr.models.side import adaptive_avg_pool

KEY = jax.random.key(0, impl="rbg")  # fast-compiling PRNG on CPU (see test_models.py)
TINY_D = dict(widths=(4, 4, 8, 8, 16, 16, 8, 8))
TINY_E = dict(stages=((4, 4, 8), (8, 8), (8, 16), (16, 16)), hidden_dims=(8,), code_dim=6)


def rand(shape, seed=0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


X_D = rand((4, 18, 26, 9), seed=1) * 2.0 + 1.0  # 9 channels as PCL's wavelet bands; odd sizes
X_E = rand((4, 18, 27, 3), seed=2)


def conv3_p(i: int, o: int, bias: bool) -> int:
    return 9 * i * o + (o if bias else 0)


def disc_p(c_in: int, widths, bn_blocks) -> int:
    n, prev = 0, c_in
    for i, c in enumerate(widths):
        n += conv3_p(prev, c, bias=i not in bn_blocks) + (2 * c if i in bn_blocks else 0)
        prev = c
    return n + prev + 1


def enc_p(c_in: int, stages, hidden, code, bn=True) -> int:
    n, prev = 0, c_in
    for stage in stages:
        for c in stage:
            n, prev = n + conv3_p(prev, c, bias=False), c
    for d in (*hidden, code):
        n, prev = n + prev * d + d + (2 * d if bn else 0), d
    return n


@functools.lru_cache(maxsize=None)
def init(module, channels: int):
    """Variables of `module` for `channels` input channels (they do not depend on H, W, B);
    jitted once per module (one compile instead of one per op)."""
    return jax.jit(lambda x: module.init(KEY, x, train=False))(jnp.zeros((1, 16, 16, channels)))


@functools.lru_cache(maxsize=None)
def _jitted_apply(module, kw: tuple):
    return jax.jit(functools.partial(module.apply, **dict(kw)))


def apply(module, variables, x, **kw):
    """Jitted `module.apply(variables, x, **kw)`, compiled once per (module, kw, shapes)."""
    kw = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items()))
    return _jitted_apply(module, kw)(variables, x)


def shapes_of(module, x, **kw):
    return jax.eval_shape(lambda: module.init(KEY, x, train=False, **kw))


# ----------------------------------------------------------------------------- parameter counts
def test_discriminator_default_is_pcl_layout_and_count():
    d = models.create_side("vgg_discriminator")
    assert tuple(d.widths) == (64, 64, 128, 128, 256, 256, 512, 512)
    assert tuple(d.strides) == (1, 2, 1, 2, 1, 2, 1, 2)
    assert (d.use_bn, d.bn_first, d.negative_slope, d.pool_size) == (True, True, 0.2, 4)
    v = shapes_of(d, jnp.zeros((1, 32, 32, 9)))
    n = count_params(v["params"])
    assert n == disc_p(9, d.widths, bn_blocks=range(8)) == 4_691_265
    assert count_params(v["batch_stats"]) == 2 * sum(d.widths)  # running mean + var
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(v))


@pytest.mark.parametrize("use_bn,bn_first,bn_blocks", [
    (True, False, range(1, 8)),  # SRGAN / ESRGAN stem: conv with bias, no BN
    (False, True, ()),
])
def test_discriminator_count_variants(use_bn, bn_first, bn_blocks):
    d = models.create_side("vgg_discriminator", use_bn=use_bn, bn_first=bn_first, **TINY_D)
    v = shapes_of(d, jnp.zeros((1, 16, 16, 3)))
    assert count_params(v["params"]) == disc_p(3, TINY_D["widths"], bn_blocks)
    assert ("batch_stats" in v) == use_bn


def test_encoder_default_is_constyle_layout_and_count():
    e = models.create_side("conv_encoder")
    v = shapes_of(e, jnp.zeros((1, 32, 32, 3)))
    n = count_params(v["params"])
    assert n == enc_p(3, e.stages, e.hidden_dims, e.code_dim) == 1_190_832
    assert round(n / 1e6, 2) == 1.19  # irconstyle.md: "about 1.19 M parameters"
    assert count_params(v["batch_stats"]) == 2 * (128 + 128)


def test_encoder_count_without_bn():
    e = models.create_side("conv_encoder", use_bn=False, **TINY_E)
    v = shapes_of(e, jnp.zeros((1, 16, 16, 3)))
    assert "batch_stats" not in v
    assert count_params(v["params"]) == enc_p(3, TINY_E["stages"], (8,), 6, bn=False)


# ----------------------------------------------------------------------------- shapes
def test_discriminator_shapes_and_block4_preact():
    d = models.create_side("vgg_discriminator", **TINY_D)
    (b, h, w, _) = X_D.shape
    logits, feats = apply(d, init(d, 9), X_D, train=False, return_features=True)
    assert logits.shape == (b, 4, 4) and logits.dtype == jnp.float32
    # Stride-2 blocks 1, 3, 5, 7 halve (rounding up): block i sits at ceil(H / 2**n_i).
    for i, c in enumerate(TINY_D["widths"]):
        f = 2 ** ((i + 1) // 2)
        want = (b, -(-h // f), -(-w // f), c)
        assert feats[f"block{i}_preact"].shape == want and feats[f"block{i}"].shape == want
    # PCL's contrastive feature: block 4 before the activation, at 1/4 of the wavelet input.
    assert feats["block4_preact"].shape == (b, 5, 7, 16)
    pre = feats["block4_preact"]
    np.testing.assert_allclose(feats["block4"], np.where(pre > 0, pre, 0.2 * pre), rtol=1e-6)


def test_discriminator_block4_preact_at_pcl_size():
    # HR patch 192 -> 9 Haar detail bands at 96 -> block4_preact 256 ch at 192 / 8 = 24.
    d = models.create_side("vgg_discriminator")
    x = jnp.zeros((1, 96, 96, 9))
    out = jax.eval_shape(lambda: d.apply(d.init(KEY, x, train=False), x, train=False,
                                         return_features=True))
    assert out[0].shape == (1, 4, 4) and out[1]["block4_preact"].shape == (1, 24, 24, 256)


def test_encoder_shapes():
    e = models.create_side("conv_encoder", **TINY_E)
    (b, h, w, _) = X_E.shape
    code, feats, hidden = apply(e, init(e, 3), X_E, train=False, return_hidden=True)
    assert code.shape == (b, 6) and code.dtype == jnp.float32
    assert [f.shape for f in feats] == [(b, -(-h // 2 ** s), -(-w // 2 ** s), c)
                                        for s, c in ((1, 8), (2, 8), (3, 16))]
    assert [f.shape[1:3] for f in feats] == [(9, 14), (5, 7), (3, 4)]
    assert [a.shape for a in hidden] == [(b, 8), (b, 6)] and np.array_equal(hidden[-1], code)
    code2, feats2 = jax.eval_shape(functools.partial(e.apply, train=False), init(e, 3), X_E)
    assert code2.shape == code.shape and len(feats2) == 3  # without return_hidden


def test_adaptive_pool_matches_pytorch_bins():
    """AdaptiveAvgPool2d: bin i covers [floor(i n / p), ceil((i + 1) n / p))."""
    rng = np.random.default_rng(0)
    for h, w in [(8, 8), (6, 5), (1, 1), (3, 7)]:
        x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        ref = np.zeros((2, 4, 4, 3), np.float32)
        for i in range(4):
            for j in range(4):
                hs, he = (i * h) // 4, -(-((i + 1) * h) // 4)
                ws, we = (j * w) // 4, -(-((j + 1) * w) // 4)
                ref[:, i, j] = x[:, hs:he, ws:we].mean(axis=(1, 2))
        np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), 4), ref, rtol=1e-5,
                                   atol=1e-6)


# ----------------------------------------------------------------------------- BatchNorm
def test_discriminator_batchnorm_train_updates_eval_uses_statistics():
    d = models.create_side("vgg_discriminator", **TINY_D)
    v = init(d, 9)
    stats0 = v["batch_stats"]
    tr, upd = apply(d, v, X_D, train=True, mutable=["batch_stats"])
    # Running mean after one step = 0.9 * 0 + 0.1 * batch mean of conv_0's output (PyTorch 0.1).
    y0 = conv(4, 3, use_bias=False).apply({"params": v["params"]["conv_0"]}, X_D)
    np.testing.assert_allclose(upd["batch_stats"]["bn_0"]["mean"], 0.1 * y0.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    for name in stats0:
        assert not np.allclose(upd["batch_stats"][name]["mean"], stats0[name]["mean"]), name

    # Change every sample but the first: in eval mode sample 0's logits stay, in train mode
    # (batch statistics) they move.
    x_alt = X_D.at[1:].set(rand(X_D[1:].shape, seed=3))
    ev = apply(d, v, X_D, train=False)
    np.testing.assert_allclose(apply(d, v, x_alt, train=False)[0], ev[0], rtol=1e-5, atol=1e-6)
    tr_alt, _ = apply(d, v, x_alt, train=True, mutable=["batch_stats"])
    assert not np.allclose(tr_alt[0], tr[0], rtol=1e-3, atol=0)
    # Eval reads the stored statistics: new statistics, new logits.
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    assert not np.allclose(apply(d, v2, X_D, train=False), ev, rtol=1e-3, atol=0)


def test_encoder_batchnorm_train_updates_eval_uses_statistics():
    e = models.create_side("conv_encoder", **TINY_E)
    v = init(e, 3)
    (code_t, _), upd = apply(e, v, X_E, train=True, mutable=["batch_stats"])
    assert set(upd["batch_stats"]) == {"mlp_0_bn", "mlp_1_bn"}
    for name, s in upd["batch_stats"].items():
        assert not np.allclose(s["mean"], 0.0), name
    code_e = apply(e, v, X_E, train=False, return_hidden=True)[0]
    assert not np.allclose(code_t, code_e, rtol=1e-2, atol=0)
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    code_e2 = apply(e, v2, X_E, train=False, return_hidden=True)[0]
    assert not np.allclose(code_e2, code_e, rtol=1e-2, atol=0)


def test_gradient_reaches_discriminator_input():
    d = models.create_side("vgg_discriminator", **TINY_D)
    v = init(d, 9)

    def f(x):
        logits, feats = d.apply(v, x, train=False, return_features=True)
        return jnp.sum(logits) + jnp.sum(feats["block4_preact"] ** 2)
    g = jax.jit(jax.grad(f))(X_D)
    assert g.shape == X_D.shape and float(jnp.abs(g).max()) > 0


@pytest.mark.parametrize("name,kw,c", [("vgg_discriminator", TINY_D, 9),
                                       ("conv_encoder", TINY_E, 3)])
def test_bfloat16_compute_keeps_float32_params_and_outputs(name, kw, c):
    m = models.create_side(name, dtype=jnp.bfloat16, **kw)
    x = jnp.zeros((2, 16, 16, c))
    v = jax.eval_shape(lambda: m.init(KEY, x, train=False))
    out = jax.eval_shape(lambda: m.apply(m.init(KEY, x, train=False), x, train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves((v, out)))


# ----------------------------------------------------------------------------- by name
def test_build_side_model_by_name_without_scale():
    cfg = ml_collections.ConfigDict(dict(name="conv_encoder", dtype="bfloat16",
                                         kwargs=dict(stages=[[4, 8], [8, 16]], code_dim=5)))
    e = build_side_model(cfg)
    assert isinstance(e, models.ConvEncoder) and e.dtype == jnp.bfloat16
    assert e.stages == ((4, 8), (8, 16)) and e.code_dim == 5  # lists -> tuples (hashable)
    d = build_side_model({"name": "vgg_discriminator"})
    assert isinstance(d, models.VGGDiscriminator) and d.dtype == jnp.float32
    assert models.side_names() == ["conv_encoder", "vgg_discriminator"]
    assert not set(models.side_names()) & set(models.names())  # separate registries
    assert models.describe_side("vgg_discriminator")["pool_size"] == 4


def test_build_side_model_errors_name_the_fix():
    with pytest.raises(ValueError) as e:
        build_side_model({"name": "vgg_discrimnator"})
    msg = str(e.value)
    assert "unknown side network name 'vgg_discrimnator'" in msg
    assert "Did you mean 'vgg_discriminator'" in msg and "conv_encoder" in msg
    with pytest.raises(ValueError, match=r"unknown fields \['scale'\].*kwargs"):
        build_side_model({"name": "conv_encoder", "scale": 4})
    with pytest.raises(ValueError, match="dtype='float64' is unknown"):
        build_side_model({"name": "conv_encoder", "dtype": "float64"})
    with pytest.raises(TypeError, match="did you mean 'code_dim'"):
        build_side_model({"name": "conv_encoder", "kwargs": {"code_dims": 4}})
    with pytest.raises(ValueError, match="unknown model name 'conv_encoder'"):
        models.create("conv_encoder")  # a side network is not a restorer
