"""Tests for jaxsr.models: pixel shuffle order, shapes, exact parameter counts, dtypes, training,
registry errors, and equivalence with the official PyTorch EDSR / RCAN / NAFNet architectures
(EDSR-PyTorch, BasicSR and megvii NAFNet key layouts) through experiments/convert_pytorch.py.
The official architectures are transcribed in plain numpy (tests/numpy_reference_nets.py, NCHW,
OIHW weights, official state-dict keys), so these parity tests run without PyTorch; the few
tests that need the real torch (its reference ops, reading real .pt files) skip without it.

Parameter-count hand formulas (conv(i, o, k) = i*o*k*k + o, without bias i*o*k*k):
  up(F, s)      = sum over shuffle stages r (x2: [2], x3: [3], x4: [2, 2], x1: [])
                  of conv(F, r*r*F, 3)
  EDSR(F, B, s) = conv(3, F, 3) + B * 2 conv(F, F, 3) + conv(F, F, 3) + up(F, s) + conv(F, 3, 3)
                  baseline F=64, B=16: x2 1,369,859  x3 1,554,499  x4 1,517,571   (published 1.37M)
                  large F=256, B=32:   x2 40,729,603 x3 43,680,003 x4 43,089,923  (published 43M)
  RCAB(F, r)    = 2 conv(F, F, 3) + conv(F, F/r, 1) + conv(F/r, F, 1)
  RCAN(F, G, B) = conv(3, F, 3) + G (B RCAB + conv(F, F, 3)) + conv(F, F, 3) + up(F, s)
                  + conv(F, 3, 3)
                  F=64, G=10, B=20, r=16: x2 15,444,643 x3 15,629,283 x4 15,592,355; official
                  PyTorch counts 24 more (two frozen 1x1 MeanShift convs): 15,444,667 at x2.
  NAFBlock(c)   = conv(c, 2c, 1) + 2c*9 + 2c [depthwise] + conv(c, c, 1) [sca] + conv(c, c, 1)
                  + conv(c, 2c, 1) + conv(c, c, 1) + 2*2c [LayerNorms] + 2c [beta, gamma]
                  = 7c^2 + 33c
  NAFNet(w, enc, m, dec) = conv(3, w, 3) + conv(w, 3, 3) + sum_i [enc_i NAFBlock(c_i)
                  + conv(c_i, 2 c_i, 2)] + m NAFBlock(c_L) + sum over decoder levels from C = c_L
                  down [conv_nobias(C, 2C, 1) + dec_j NAFBlock(C/2)], c_i = w 2^i
                  GoPro w32 17,111,907 (published 17.11M), w64 67,888,835 (67.89M);
                  SIDD w32 29,159,715, w64 115,982,915
  UNet(w, D, k, s) = conv(3, w, 3) + sum_i [k conv(c_i, c_i, 3) + conv(c_i, 2 c_i, 2)]
                  + k conv(c_D, c_D, 3) + sum_i [conv_nobias(2 c_i, 4 c_i, 1) + conv(2 c_i, c_i, 3)
                  + (k-1) conv(c_i, c_i, 3)] + up(w, s) + conv(w, 3, 3)
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsr.models as models
import numpy_reference_nets as ref  # tests/ is on sys.path
from jaxsr.models import count_params, pixel_shuffle, pixel_unshuffle
from jaxsr.models.stacking import stack_blocks, unstack_blocks

REPO = pathlib.Path(__file__).resolve().parents[1]
# Model-init key. The 'rbg' PRNG compiles far faster on CPU than the default (partitionable)
# threefry, whose per-shape compile costs ~1-2 s here; init semantics are the same.
KEY = jax.random.key(0, impl="rbg")


def rand(shape, seed=0) -> jnp.ndarray:
    """Uniform [0, 1) float32 test input from numpy (no PRNG compile)."""
    return jnp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


def init(model, x):
    return jax.jit(model.init)(KEY, x)


def randomize(variables, seed: int, scale: float = 0.2):
    """Replace every leaf by small random normal values (so zero-initialised biases/scales
    matter); numpy, no compile."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda l: jnp.asarray(scale * rng.standard_normal(l.shape), l.dtype), variables)


# ----------------------------------------------------------------------------- hand formulas
def conv_p(i: int, o: int, k: int, bias: bool = True) -> int:
    return i * o * k * k + (o if bias else 0)


def up_p(f: int, s: int) -> int:
    stages = {1: [], 2: [2], 3: [3], 4: [2, 2]}[s]
    return sum(conv_p(f, r * r * f, 3) for r in stages)


def edsr_p(f: int, b: int, s: int) -> int:
    return (conv_p(3, f, 3) + b * 2 * conv_p(f, f, 3) + conv_p(f, f, 3) + up_p(f, s)
            + conv_p(f, 3, 3))


def rcan_p(f: int, g: int, b: int, red: int, s: int) -> int:
    rcab = 2 * conv_p(f, f, 3) + conv_p(f, f // red, 1) + conv_p(f // red, f, 1)
    return (conv_p(3, f, 3) + g * (b * rcab + conv_p(f, f, 3)) + conv_p(f, f, 3) + up_p(f, s)
            + conv_p(f, 3, 3))


def nafblock_p(c: int) -> int:
    return (conv_p(c, 2 * c, 1) + 2 * c * 9 + 2 * c + conv_p(c, c, 1) + conv_p(c, c, 1)
            + conv_p(c, 2 * c, 1) + conv_p(c, c, 1) + 2 * 2 * c + 2 * c)


def nafnet_p(w: int, enc, m: int, dec) -> int:
    n = conv_p(3, w, 3) + conv_p(w, 3, 3)
    c = w
    for e in enc:
        n += e * nafblock_p(c) + conv_p(c, 2 * c, 2)
        c *= 2
    n += m * nafblock_p(c)
    for d in dec:
        n += conv_p(c, 2 * c, 1, bias=False)
        c //= 2
        n += d * nafblock_p(c)
    return n


def unet_p(w: int, depth: int, k: int, s: int) -> int:
    n = conv_p(3, w, 3) + up_p(w, s) + conv_p(w, 3, 3)
    for i in range(depth):
        c = w * 2 ** i
        n += k * conv_p(c, c, 3) + conv_p(c, 2 * c, 2)  # encoder level + downsampling
        n += conv_p(2 * c, 4 * c, 1, bias=False) + conv_p(2 * c, c, 3) + (k - 1) * conv_p(c, c, 3)
    cd = w * 2 ** depth
    return n + k * conv_p(cd, cd, 3)


def n_params(name: str, **kw) -> int:
    model = models.create(name, **kw)
    shapes = jax.eval_shape(model.init, KEY, jnp.zeros((1, 16, 16, 3), jnp.float32))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(shapes))
    return count_params(shapes)


# ----------------------------------------------------------------------------- pixel shuffle
@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_pytorch_definition(r):
    """ref.pixel_shuffle is the literal PyTorch definition, NCHW:
    out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w]."""
    x = np.random.default_rng(r).standard_normal((2, 3 * r * r, 4, 5)).astype(np.float32)
    want = ref.pixel_shuffle(x, r).transpose(0, 2, 3, 1)
    got = np.asarray(pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), r))
    np.testing.assert_array_equal(got, want)
    # pixel_unshuffle is its exact inverse.
    np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(got), r)),
                                  x.transpose(0, 2, 3, 1))


def test_pixel_shuffle_rejects_bad_channels():
    with pytest.raises(ValueError, match="not divisible"):
        pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)


# ----------------------------------------------------------------------------- parameter counts
PUBLISHED_EDSR = {("edsr_baseline", 2): 1_369_859, ("edsr_baseline", 3): 1_554_499,
                  ("edsr_baseline", 4): 1_517_571, ("edsr_large", 2): 40_729_603,
                  ("edsr_large", 4): 43_089_923}


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_edsr_baseline_param_count(scale):
    n = n_params("edsr_baseline", scale=scale)
    assert n == edsr_p(64, 16, scale)
    if ("edsr_baseline", scale) in PUBLISHED_EDSR:
        assert n == PUBLISHED_EDSR[("edsr_baseline", scale)]


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_edsr_large_param_count(scale):
    n = n_params("edsr_large", scale=scale)
    assert n == edsr_p(256, 32, scale)
    if ("edsr_large", scale) in PUBLISHED_EDSR:
        assert n == PUBLISHED_EDSR[("edsr_large", scale)]
    if scale == 3:
        assert n == 43_680_003


@pytest.mark.parametrize("scale,official", [(2, 15_444_667), (3, 15_629_307), (4, 15_592_379)])
def test_rcan_param_count(scale, official):
    n = n_params("rcan", scale=scale)
    assert n == rcan_p(64, 10, 20, 16, scale)
    assert n + 24 == official  # official PyTorch also counts the frozen 3x3+3 MeanShift convs x2
    assert round(n / 1e6, 1) == {2: 15.4, 3: 15.6, 4: 15.6}[scale]


@pytest.mark.parametrize("name,w,enc,m,dec,published", [
    ("nafnet_w32", 32, (1, 1, 1, 28), 1, (1, 1, 1, 1), 17.11),
    ("nafnet_w64", 64, (1, 1, 1, 28), 1, (1, 1, 1, 1), 67.89),
    ("nafnet_sidd_w32", 32, (2, 2, 4, 8), 12, (2, 2, 2, 2), None),
    ("nafnet_sidd_w64", 64, (2, 2, 4, 8), 12, (2, 2, 2, 2), None),
])
def test_nafnet_param_count(name, w, enc, m, dec, published):
    n = n_params(name)
    assert n == nafnet_p(w, enc, m, dec)
    assert nafblock_p(w) == 7 * w * w + 33 * w
    if published is not None:
        assert round(n / 1e6, 2) == published
    assert n == {"nafnet_w32": 17_111_907, "nafnet_w64": 67_888_835,
                 "nafnet_sidd_w32": 29_159_715, "nafnet_sidd_w64": 115_982_915}[name]


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_unet_param_count(scale):
    assert n_params("unet", scale=scale) == unet_p(32, 3, 2, scale)
    assert n_params("unet", scale=scale, width=8, depth=2, convs_per_level=3) == unet_p(8, 2, 3,
                                                                                           scale)


def test_generic_names_take_explicit_fields():
    assert n_params("edsr", features=16, num_blocks=3, scale=3) == edsr_p(16, 3, 3)
    assert n_params("rcan", features=16, num_groups=2, num_blocks=3, reduction=4,
                    scale=2) == rcan_p(16, 2, 3, 4, 2)
    assert n_params("nafnet", width=8, enc_blocks=(1, 2), middle_blocks=3,
                    dec_blocks=(2, 1)) == nafnet_p(8, (1, 2), 3, (2, 1))


@pytest.mark.parametrize("scan", [False, True])
def test_param_counts_do_not_depend_on_the_block_layout(scan):
    """Unrolled and scanned blocks hold the same scalars (the presets above use the default,
    scanned layout); the unrolled RCAN x2 preset is the published 15,444,643 too."""
    assert n_params("rcan", scale=2, scan_blocks=scan) == 15_444_643
    assert n_params("edsr_baseline", scale=2, scan_blocks=scan) == 1_369_859
    assert n_params("nafnet_w32", scan_blocks=scan) == 17_111_907
    assert n_params("nafnet", width=8, enc_blocks=(0, 2), middle_blocks=3, dec_blocks=(2, 1),
                    scan_blocks=scan) == nafnet_p(8, (0, 2), 3, (2, 1))


# ----------------------------------------------------------------------------- scanned blocks
SCAN_CASES = [
    ("edsr", 2, dict(features=8, num_blocks=3, res_scale=0.5)),
    ("rcan", 3, dict(features=8, num_groups=2, num_blocks=3, reduction=4)),
    ("nafnet", 1, dict(width=4, enc_blocks=(1, 2), middle_blocks=3, dec_blocks=(2, 1))),
]


def leaf_paths(tree) -> dict:
    return {jax.tree_util.keystr(k): v.shape for k, v in
            jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("name,scale,kw", SCAN_CASES)
def test_scanned_blocks_compute_the_unrolled_network(name, scale, kw):
    """Unrolled weights converted with stack_blocks give the scanned model the same parameter
    tree as its own init, and the same output (float32, to rounding), and gradients that
    unstack to the unrolled model's; the program holds one block per scan instead of n."""
    unrolled = models.create(name, scale=scale, scan_blocks=False, **kw)
    scanned = models.create(name, scale=scale, **kw)
    x = rand((2, 7, 9, 3), seed=6)
    shapes_u = jax.eval_shape(unrolled.init, KEY, x)
    shapes_s = jax.eval_shape(scanned.init, KEY, x)
    assert leaf_paths(stack_blocks(shapes_u)) == leaf_paths(shapes_s)
    assert leaf_paths(unstack_blocks(shapes_s)) == leaf_paths(shapes_u)
    assert len(jax.tree_util.tree_leaves(shapes_s)) < len(jax.tree_util.tree_leaves(shapes_u))
    params = randomize(shapes_u, 8)
    stacked = stack_blocks(params)
    y_u = jax.jit(unrolled.apply)(params, x)
    y_s = jax.jit(scanned.apply)(stacked, x)
    np.testing.assert_allclose(y_s, y_u, rtol=0, atol=1e-6 * float(jnp.abs(y_u).max()))

    def loss(m, p):
        return jnp.mean(jnp.square(m.apply(p, x)))

    g_u = jax.jit(jax.grad(lambda p: loss(unrolled, p)))(params)
    g_s = unstack_blocks(jax.jit(jax.grad(lambda p: loss(scanned, p)))(stacked))
    assert jax.tree_util.tree_structure(g_s) == jax.tree_util.tree_structure(g_u)
    for a, b in zip(jax.tree_util.tree_leaves(g_s), jax.tree_util.tree_leaves(g_u)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.abs(b).max()) + 1e-7)


def test_scanned_layout_names():
    """Where the stacked parameters live (the names checkpoints, exports and the PyTorch
    converter use)."""
    rcan = models.create("rcan", scale=2, features=8, num_groups=2, num_blocks=3, reduction=4)
    p = leaf_paths(jax.eval_shape(rcan.init, KEY, jnp.zeros((1, 8, 8, 3)))["params"])
    assert p["['groups']['blocks']['conv1']['kernel']"] == (2, 3, 3, 3, 8, 8)
    assert p["['groups']['blocks']['ca']['down']['bias']"] == (2, 3, 2)
    assert p["['groups']['conv']['kernel']"] == (2, 3, 3, 8, 8)
    assert not any("group_" in k or "block_" in k for k in p)
    naf = models.create("nafnet", width=4, enc_blocks=(1, 2), middle_blocks=3, dec_blocks=(2, 1))
    p = leaf_paths(jax.eval_shape(naf.init, KEY, jnp.zeros((1, 8, 8, 3)))["params"])
    assert p["['enc_1_blocks']['conv2']['kernel']"] == (2, 3, 3, 1, 16)
    assert p["['middle_blocks']['beta']"] == (3, 16)
    assert p["['dec_1_blocks']['norm1']['weight']"] == (1, 4)


# ----------------------------------------------------------------------------- shapes
TINY = {
    "edsr": dict(features=8, num_blocks=2),
    "rcan": dict(features=8, num_groups=2, num_blocks=2, reduction=4),
    "unet": dict(width=4, depth=2, convs_per_level=1),
}


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_output_shapes_odd_sizes(name, scale):
    """Shapes by abstract evaluation (values are checked against PyTorch further down)."""
    model = models.create(name, scale=scale, **TINY[name])
    x = jax.ShapeDtypeStruct((2, 7, 9, 3), jnp.float32)
    params = jax.eval_shape(model.init, KEY, x)
    y = jax.eval_shape(model.apply, params, x)
    assert y.shape == (2, 7 * scale, 9 * scale, 3) and y.dtype == jnp.float32


def test_tiny_forward_is_finite_and_init_is_torch_like():
    model = models.create("edsr", scale=3, **TINY["edsr"])
    x = rand((2, 7, 9, 3))
    params = init(model, x)
    y = jax.jit(model.apply)(params, x)
    assert y.shape == (2, 21, 27, 3) and bool(jnp.all(jnp.isfinite(y)))
    k = np.asarray(params["params"]["blocks"]["conv1"]["kernel"])  # (2, 3, 3, 8, 8), fan_in 72
    assert k.shape == (2, 3, 3, 8, 8)
    assert np.abs(k).max() <= 1 / np.sqrt(72) and k.std() > 0.5 / np.sqrt(3 * 72)
    assert not np.array_equal(k[0], k[1])  # each scanned block has its own init key
    assert not np.any(np.asarray(params["params"]["blocks"]["conv1"]["bias"]))


@pytest.mark.parametrize("h,w", [(16, 16), (13, 19), (5, 3)])
def test_nafnet_pads_and_crops(h, w):
    model = models.create("nafnet", width=4, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))
    x = rand((1, h, w, 3))
    shapes = jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))
    params = randomize(shapes, 1)  # non-zero beta/gamma so the blocks are not identities
    y = jax.jit(model.apply)(params, x)
    assert y.shape == (1, h, w, 3) and y.dtype == jnp.float32
    # Invariant: equals running on the explicitly zero-padded input and cropping.
    hp, wp = -(-h // 4) * 4, -(-w // 4) * 4
    xp = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    np.testing.assert_allclose(y, jax.jit(model.apply)(params, xp)[:, :h, :w], atol=1e-5)


def test_unet_pads_and_crops_same_as_padded_input():
    model = models.create("unet", width=4, depth=2, convs_per_level=1)
    x = rand((1, 9, 6, 3))
    params = randomize(jax.eval_shape(model.init, KEY, x), 2)
    xp = jnp.pad(x, ((0, 0), (0, 3), (0, 2), (0, 0)))
    apply = jax.jit(model.apply)
    np.testing.assert_allclose(apply(params, x), apply(params, xp)[:, :9, :6],
                               atol=1e-5)


def test_mean_shift_is_a_constant_not_a_param():
    """With all parameters zero EDSR/RCAN output exactly the DIV2K mean (added back as constant)."""
    for name in ("edsr", "rcan"):
        model = models.create(name, scale=2, **TINY[name])
        shapes = jax.eval_shape(model.init, KEY, jnp.zeros((1, 4, 4, 3)))
        zeros = jax.tree_util.tree_map(lambda l: jnp.zeros(l.shape, l.dtype), shapes)
        y = jax.jit(model.apply)(zeros, rand((1, 4, 4, 3)))
        np.testing.assert_allclose(y, np.broadcast_to(np.float32([0.4488, 0.4371, 0.4040]),
                                                      (1, 8, 8, 3)), atol=0)


def test_nafnet_rejects_scale_above_one():
    with pytest.raises(ValueError, match="restoration model.*scale=2"):
        jax.eval_shape(models.create("nafnet_w32", scale=2).init, KEY, jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("name", ["edsr", "rcan", "unet"])
def test_rejects_unsupported_scale(name):
    with pytest.raises(ValueError, match=r"scale=5 is not supported; use one of \(1, 2, 3, 4\)"):
        jax.eval_shape(models.create(name, scale=5, **TINY[name]).init, KEY,
                       jnp.zeros((1, 8, 8, 3)))


# ----------------------------------------------------------------------------- dtypes
def conv_input_dtypes(jaxpr) -> list:
    """dtypes of the lhs of every convolution in a (closed) jaxpr, recursing into sub-jaxprs."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append((eqn.invars[0].aval.dtype, eqn.invars[1].aval.dtype))
        for v in eqn.params.values():
            if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                found += conv_input_dtypes(v.jaxpr)
            elif hasattr(v, "eqns"):
                found += conv_input_dtypes(v)
    return found


@pytest.mark.parametrize("name,kw", [
    ("edsr", TINY["edsr"]), ("rcan", TINY["rcan"]), ("unet", TINY["unet"]),
    ("nafnet", dict(width=4, enc_blocks=(1,), middle_blocks=1, dec_blocks=(1,))),
])
def test_bfloat16_compute_float32_params_and_output(name, kw):
    scale = 1 if name == "nafnet" else 2
    m16 = models.create(name, scale=scale, dtype=jnp.bfloat16, **kw)
    m32 = models.create(name, scale=scale, **kw)
    x = rand((1, 8, 8, 3))
    shapes = jax.eval_shape(m16.init, KEY, x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
    params = randomize(shapes, 3)
    y16 = jax.jit(m16.apply)(params, x)
    assert y16.dtype == jnp.float32
    dts = conv_input_dtypes(jax.make_jaxpr(m16.apply)(params, x).jaxpr)
    assert dts and all(a == jnp.bfloat16 and b == jnp.bfloat16 for a, b in dts), dts
    dts32 = conv_input_dtypes(jax.make_jaxpr(m32.apply)(params, x).jaxpr)
    assert dts32 and all(a == jnp.float32 for a, _ in dts32)
    # Same parameters, bf16 vs f32 compute: equal up to bf16 rounding.
    y32 = jax.jit(m32.apply)(params, x)
    err = float(jnp.max(jnp.abs(y16 - y32)))
    assert 0 < err < 0.1 * float(jnp.max(jnp.abs(y32))) + 0.05


# ----------------------------------------------------------------------------- remat
@pytest.mark.parametrize("name,kw", [
    ("edsr", TINY["edsr"]), ("rcan", TINY["rcan"]),
    ("nafnet", dict(width=4, enc_blocks=(1,), middle_blocks=1, dec_blocks=(1,))),
])
def test_remat_keeps_parameter_tree_and_values(name, kw):
    """remat only changes what the backward pass stores: same params, outputs and gradients."""
    scale = 1 if name == "nafnet" else 2
    plain = models.create(name, scale=scale, **kw)
    remat = models.create(name, scale=scale, remat=True, **kw)
    x = rand((1, 6, 6, 3))
    shapes = jax.eval_shape(plain.init, KEY, x)
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(
        jax.eval_shape(remat.init, KEY, x))
    params = randomize(shapes, 5)
    if name == "nafnet":  # same nn.remat wrapping as the others; keep CPU time down
        np.testing.assert_allclose(jax.jit(plain.apply)(params, x),
                                   jax.jit(remat.apply)(params, x), rtol=1e-6, atol=1e-6)
        return

    def loss(m, p):
        return jnp.mean(jnp.square(m.apply(p, x)))

    g1 = jax.jit(jax.grad(lambda p: loss(plain, p)))(params)
    g2 = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.abs(b).max()) + 1e-7)


# ----------------------------------------------------------------------------- training
def test_tiny_edsr_overfits_one_pair():
    hr = rand((1, 16, 16, 3), seed=1)
    lr = hr.reshape(1, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    model = models.create("edsr", scale=2, features=16, num_blocks=2)
    params = init(model, lr)
    opt = optax.adam(3e-3)
    state = opt.init(params)

    def loss_fn(p):
        return jnp.mean(jnp.abs(model.apply(p, lr) - hr))

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    first = None
    for _ in range(60):
        params, state, loss = step(params, state)
        first = float(loss) if first is None else first
    last = float(jax.jit(loss_fn)(params))
    assert last < first / 10, (first, last)


# ----------------------------------------------------------------------------- registry
def test_names_include_presets_and_generics():
    want = {"edsr", "edsr_baseline", "edsr_large", "rcan", "nafnet", "nafnet_w32", "nafnet_w64",
            "nafnet_sidd_w32", "nafnet_sidd_w64", "unet"}
    assert want <= set(models.names())
    assert models.names() == sorted(models.names())


def test_preset_fields_and_overrides():
    m = models.create("edsr_large", scale=4, dtype=jnp.bfloat16)
    assert (m.features, m.num_blocks, m.res_scale, m.scale, m.dtype) == (256, 32, 0.1, 4,
                                                                        jnp.bfloat16)
    assert models.describe("nafnet_w64")["width"] == 64
    assert models.describe("nafnet_w64")["enc_blocks"] == (1, 1, 1, 28)


def test_list_fields_become_tuples_so_modules_hash():
    m = models.create("nafnet", enc_blocks=[1, 2], dec_blocks=[2, 1])
    assert m.enc_blocks == (1, 2) and m.dec_blocks == (2, 1)
    assert hash(m) == hash(models.create("nafnet", enc_blocks=(1, 2), dec_blocks=(2, 1)))


def test_unknown_name_lists_valid_and_close_names():
    with pytest.raises(ValueError) as e:
        models.create("edsr_basline")
    msg = str(e.value)
    assert "'edsr_basline'" in msg and "Did you mean 'edsr_baseline'" in msg
    assert all(n in msg for n in models.names())


def test_unknown_kwarg_names_it_and_valid_fields():
    with pytest.raises(TypeError) as e:
        models.create("edsr_baseline", featurs=32)
    msg = str(e.value)
    assert "'featurs'" in msg and "did you mean 'features'" in msg
    assert "num_blocks" in msg and "dtype" in msg and "parent" not in msg


def test_register_rejects_unknown_preset_field_and_non_modules():
    with pytest.raises(TypeError, match="unknown fields"):
        models.register("bad_preset", nonsense=1)(models.EDSR)
    with pytest.raises(TypeError, match="flax.linen.Module"):
        models.register("bad_thing")(object)
    assert "bad_preset" not in models.names() and "bad_thing" not in models.names()


# ----------------------------------------------------------------------------- PyTorch parity
# The official architectures in numpy (tests/numpy_reference_nets.py) get a random state dict with
# the official keys and shapes; experiments/convert_pytorch.py converts that same dict; the jaxsr
# model must then reproduce the reference output. The reference computes in float64, jaxsr in
# float32: the allowed error is PARITY_TOL relative to the output's largest magnitude.
PARITY_TOL = 1e-5


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_pytorch",
                                                  REPO / "experiments" / "convert_pytorch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@functools.lru_cache(maxsize=None)
def jaxsr_model(name: str, **kw):
    """(model, jitted apply), shared between tests so each configuration compiles once."""
    model = models.create(name, **kw)
    return model, jax.jit(model.apply)


def run_reference(net: ref.Module, x, rgb_range: float = 1.0) -> np.ndarray:
    """NHWC input in [0, 1] -> reference NCHW forward of x * rgb_range in float64 -> NHWC output
    divided by rgb_range."""
    x = np.asarray(x, np.float64).transpose(0, 3, 1, 2) * rgb_range
    return net(x).transpose(0, 2, 3, 1) / rgb_range


def parity_error(got, want) -> float:
    want = np.asarray(want)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def assert_parity(got, want):
    err = parity_error(got, want)
    assert np.asarray(got).shape == np.asarray(want).shape
    assert err < PARITY_TOL, f"jaxsr vs official reference: max error {err:.2e} of max |output|"


# ------------------------------------------------------------- the numpy reference itself
def conv2d_literal(x, w, b, stride, padding, groups):
    """Direct sum from the torch.nn.Conv2d documentation (loops, float64)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // groups
    for oc in range(o):
        g = oc // per_group
        for y in range(oh):
            for xx in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, y * stride:y * stride + kh,
                           xx * stride:xx * stride + kw]
                out[:, oc, y, xx] = (patch * w[oc]).sum(axis=(1, 2, 3)) + b[oc]
    return out


@pytest.mark.parametrize("c,o,k,stride,padding,groups", [
    (3, 4, 3, 1, 1, 1), (4, 6, 3, 1, 1, 2), (6, 6, 3, 1, 1, 6), (4, 8, 2, 2, 0, 1),
    (5, 2, 1, 1, 0, 1), (2, 3, 3, 2, 1, 1),
])
def test_reference_conv2d_is_torch_conv(c, o, k, stride, padding, groups):
    rng = np.random.default_rng(c * 100 + o)
    x = rng.standard_normal((2, c, 5, 7))
    w = rng.standard_normal((o, c // groups, k, k))
    # Not symmetric under flips/transposes: a convolution (flipped kernel) would differ.
    b = rng.standard_normal(o)
    np.testing.assert_allclose(ref.conv2d(x, w, b, stride, padding, groups),
                               conv2d_literal(x, w, b, stride, padding, groups), rtol=1e-12,
                               atol=1e-12)
    # Hand-checked corner: a kernel with a single 1 at (0, 0) reads the pixel up-left.
    e = np.zeros((1, 1, 3, 3))
    e[0, 0, 0, 0] = 1
    img = np.arange(12.0).reshape(1, 1, 3, 4)
    np.testing.assert_array_equal(ref.conv2d(img, e, None, 1, 1)[0, 0],
                                  [[0, 0, 0, 0], [0, 0, 1, 2], [0, 4, 5, 6]])


def test_reference_pooling_norm_and_modules():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7))
    np.testing.assert_allclose(ref.adaptive_avg_pool2d(x, 1)[..., 0, 0], x.mean(axis=(2, 3)))
    # Adaptive bins (torch): rows [0, 3) and [2, 5) of 5; columns [0, 3), [2, 5), [4, 7) of 7.
    p = ref.adaptive_avg_pool2d(x, (2, 3))
    np.testing.assert_allclose(p[:, :, 1, 2], x[:, :, 2:5, 4:7].mean(axis=(2, 3)))
    np.testing.assert_allclose(p[:, :, 0, 1], x[:, :, 0:3, 2:5].mean(axis=(2, 3)))
    wt, bs = np.float32([1.5, -2.0, 0.5]), np.float32([0.1, 0.2, -0.3])
    y = ref.layer_norm2d(x, wt, bs, 1e-6)
    z = (y - bs[:, None, None]) / wt[:, None, None]
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose((z ** 2).mean(1), 1 / (1 + 1e-6 / x.var(1)), rtol=1e-9)
    # state_dict naming follows torch: own parameters first, Sequential indices count ReLU etc.
    blk = ref.NAFBlock(4)
    assert list(blk.state_dict())[:4] == ["beta", "gamma", "conv1.weight", "conv1.bias"]
    assert "sca.1.weight" in blk.state_dict() and blk.state_dict()["conv2.weight"].shape == (
        8, 1, 3, 3)
    with pytest.raises(KeyError, match="missing"):
        ref.ResBlock(ref.default_conv, 4, 3).load_state_dict({})


def test_reference_state_dict_keys_are_the_official_ones():
    """The official names, as in the released checkpoints (spelled out for tiny configs)."""
    assert list(ref.EDSR(2, 8, 4).state_dict()) == [
        "sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias",
        "head.0.weight", "head.0.bias",
        "body.0.body.0.weight", "body.0.body.0.bias", "body.0.body.2.weight", "body.0.body.2.bias",
        "body.1.body.0.weight", "body.1.body.0.bias", "body.1.body.2.weight", "body.1.body.2.bias",
        "body.2.weight", "body.2.bias",
        "tail.0.0.weight", "tail.0.0.bias", "tail.0.2.weight", "tail.0.2.bias",
        "tail.1.weight", "tail.1.bias"]
    rcan = ref.RCAN(1, 1, 8, 4, 3).state_dict()
    assert [k for k in rcan if k.startswith("body.")] == [
        "body.0.body.0.body.0.weight", "body.0.body.0.body.0.bias",
        "body.0.body.0.body.2.weight", "body.0.body.0.body.2.bias",
        "body.0.body.0.body.3.conv_du.0.weight", "body.0.body.0.body.3.conv_du.0.bias",
        "body.0.body.0.body.3.conv_du.2.weight", "body.0.body.0.body.3.conv_du.2.bias",
        "body.0.body.1.weight", "body.0.body.1.bias", "body.1.weight", "body.1.bias"]
    assert rcan["tail.0.0.weight"].shape == (72, 8, 3, 3)
    assert rcan["body.0.body.0.body.3.conv_du.0.weight"].shape == (2, 8, 1, 1)
    assert list(ref.BasicSREDSR(8, 1, 2).state_dict()) == [
        "conv_first.weight", "conv_first.bias", "body.0.conv1.weight", "body.0.conv1.bias",
        "body.0.conv2.weight", "body.0.conv2.bias", "conv_after_body.weight",
        "conv_after_body.bias", "upsample.0.weight", "upsample.0.bias", "conv_last.weight",
        "conv_last.bias"]
    assert "body.0.residual_group.0.rcab.3.attention.3.bias" in ref.BasicSRRCAN(8, 1, 1, 4, 2
                                                                               ).state_dict()
    naf = {k: v.shape for k, v in ref.NAFNet(3, 4, 1, (1, 2), (2, 1)).state_dict().items()}
    assert {"intro.weight", "ending.bias", "encoders.1.1.sca.1.weight", "downs.1.weight",
            "middle_blks.0.norm2.bias", "ups.0.0.weight", "decoders.0.1.beta",
            "decoders.1.0.gamma"} <= set(naf)
    assert naf["ups.0.0.weight"] == (32, 16, 1, 1) and "ups.0.0.bias" not in naf
    assert naf["downs.0.weight"] == (8, 4, 2, 2) and naf["encoders.0.0.beta"] == (1, 4, 1, 1)
    assert naf["encoders.0.0.norm1.weight"] == (4,)


# ------------------------------------------------------------- official layouts vs jaxsr
def test_official_param_counts_and_full_size_conversion():
    """Full-size official layouts: parameter counts, and every key converts onto the preset."""
    conv = load_converter()
    nets = {  # (reference net, jaxsr preset, scale)
        "edsr_baseline_x2": (ref.EDSR(16, 64, 2), "edsr_baseline", 2),
        "edsr_large_x3": (ref.EDSR(32, 256, 3, res_scale=0.1), "edsr_large", 3),
        "rcan_x4": (ref.RCAN(10, 20, 64, 16, 4), "rcan", 4),
        "nafnet_w32": (ref.NAFNet(3, 32, 1, (1, 1, 1, 28), (1, 1, 1, 1)), "nafnet_w32", 1),
    }
    counts = {k: v[0].num_parameters() for k, v in nets.items()}
    # The official EDSR/RCAN models hold two frozen MeanShift 1x1 convs (2 x 12 scalars).
    assert counts["edsr_baseline_x2"] - 24 == n_params("edsr_baseline", scale=2) == 1_369_859
    assert counts["edsr_large_x3"] - 24 == edsr_p(256, 32, 3) == 43_680_003
    assert counts["rcan_x4"] == 15_592_379 == rcan_p(64, 10, 20, 16, 4) + 24
    assert counts["nafnet_w32"] == 17_111_907
    for key in ("edsr_baseline_x2", "rcan_x4", "nafnet_w32"):  # edsr_large: same rules, 43M
        net, preset, scale = nets[key]
        kw = {} if preset.startswith("nafnet") else {"scale": scale}
        variables = conv.convert_state_dict(net.state_dict(), key.split("_")[0], rgb_range=255.0)
        conv.check_against_model(variables, models.create(preset, **kw))


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_edsr_matches_official_after_conversion(scale):
    conv = load_converter()
    net = ref.EDSR(2, 8, scale, res_scale=0.5)
    sd = ref.random_state_dict(net, seed=scale, rgb_range=255.0)
    net.load_state_dict(sd)
    x = rand((1, 6, 5, 3))
    model, apply = jaxsr_model("edsr", scale=scale, features=8, num_blocks=2, res_scale=0.5)
    variables = conv.convert_state_dict(sd, "edsr", rgb_range=255.0)
    conv.check_against_model(variables, model)
    assert_parity(apply(variables, x), run_reference(net, x, 255.0))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rcan_matches_official_after_conversion(scale):
    conv = load_converter()
    net = ref.RCAN(2, 2, 8, 4, scale)
    sd = ref.random_state_dict(net, seed=7 + scale, rgb_range=255.0)
    net.load_state_dict(sd)
    x = rand((1, 6, 7, 3))
    model, apply = jaxsr_model("rcan", scale=scale, features=8, num_groups=2, num_blocks=2,
                               reduction=4)
    variables = conv.convert_state_dict(sd, "rcan", rgb_range=255.0)
    conv.check_against_model(variables, model)
    assert_parity(apply(variables, x), run_reference(net, x, 255.0))


@pytest.mark.parametrize("arch", ["rcan", "nafnet"])
def test_unrolled_conversion_fits_unrolled_model(arch):
    """stacked=False writes block_i entries for models built with scan_blocks=False; same
    output as the official network."""
    conv = load_converter()
    if arch == "rcan":
        net, x, rgb = ref.RCAN(2, 2, 8, 4, 2), rand((1, 6, 7, 3)), 255.0
        model, apply = jaxsr_model("rcan", scale=2, features=8, num_groups=2, num_blocks=2,
                                   reduction=4, scan_blocks=False)
    else:
        net, x, rgb = ref.NAFNet(3, 4, 1, (1, 2), (2, 1)), rand((1, 11, 9, 3)), 1.0
        model, apply = jaxsr_model("nafnet", width=4, enc_blocks=(1, 2), middle_blocks=1,
                                   dec_blocks=(2, 1), scan_blocks=False)
    sd = ref.random_state_dict(net, seed=5, rgb_range=rgb)
    net.load_state_dict(sd)
    variables = conv.convert_state_dict(sd, arch, rgb_range=rgb, stacked=False)
    assert "block_1" in str(jax.tree_util.tree_structure(variables))
    conv.check_against_model(variables, model)
    assert_parity(apply(variables, x), run_reference(net, x, rgb))


@pytest.mark.parametrize("arch,scale", [("edsr", 4), ("edsr", 3), ("rcan", 2), ("rcan", 4)])
def test_basicsr_layouts_match_after_conversion(arch, scale):
    """BasicSR's EDSR/RCAN (conv_first, body.N.conv1, residual_group, rcab, attention, upsample.N,
    conv_last; scaling by img_range=255 inside the model) convert with the same rgb_range rule."""
    conv = load_converter()
    if arch == "edsr":
        net = ref.BasicSREDSR(8, 2, scale, res_scale=0.5)
        model, apply = jaxsr_model("edsr", scale=scale, features=8, num_blocks=2, res_scale=0.5)
        x = rand((1, 6, 5, 3))
    else:
        net = ref.BasicSRRCAN(8, 2, 2, 4, scale)
        model, apply = jaxsr_model("rcan", scale=scale, features=8, num_groups=2, num_blocks=2,
                                   reduction=4)
        x = rand((1, 6, 7, 3))
    sd = ref.random_state_dict(net, seed=11 + scale, rgb_range=255.0)
    net.load_state_dict(sd)
    variables = conv.convert_state_dict(sd, arch, rgb_range=255.0)
    conv.check_against_model(variables, model)
    assert_parity(apply(variables, x), run_reference(net, x))  # BasicSR takes [0, 1] itself


class FakeTensor:
    """What a torch tensor offers convert_state_dict: .detach().cpu().numpy()."""

    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


@pytest.fixture
def fake_torch(monkeypatch):
    """A stand-in `torch` module (save/load in memory, tensors as FakeTensor) so that
    load_torch_state_dict and the converter CLI run without PyTorch; records load's arguments."""
    store, calls = {}, []

    def wrap(obj):
        if isinstance(obj, dict):
            return {k: wrap(v) for k, v in obj.items()}
        return FakeTensor(np.asarray(obj)) if isinstance(obj, np.ndarray) else obj

    def save(obj, path):
        pathlib.Path(path).write_bytes(b"")
        store[str(path)] = obj

    def load(path, map_location=None, weights_only=False):
        calls.append({"map_location": map_location, "weights_only": weights_only})
        return wrap(store[str(path)])

    mod = types.ModuleType("torch")
    mod.save, mod.load, mod.calls = save, load, calls
    monkeypatch.setitem(sys.modules, "torch", mod)
    return mod


def test_nafnet_matches_official_after_conversion(tmp_path, fake_torch):
    conv = load_converter()
    net = ref.NAFNet(3, 4, 1, (1, 2), (2, 1))
    sd = ref.random_state_dict(net, seed=3)
    net.load_state_dict(sd)
    x = rand((1, 11, 9, 3))  # not a multiple of 4: the official pad-and-crop path
    model, apply = jaxsr_model("nafnet", width=4, enc_blocks=(1, 2), middle_blocks=1,
                               dec_blocks=(2, 1))
    # Official NAFNet checkpoints wrap the state_dict as {'params': ...}.
    fake_torch.save({"params": sd}, tmp_path / "naf.pth")
    variables = conv.convert_state_dict(conv.load_torch_state_dict(str(tmp_path / "naf.pth")),
                                        "nafnet")
    assert fake_torch.calls == [{"map_location": "cpu", "weights_only": True}]
    conv.check_against_model(variables, model)
    assert_parity(apply(variables, x), run_reference(net, x))


def _swap(tree, a: str, b: str):
    pa, pb = tree["params"], tree["params"]
    for k in a.split("/")[:-1]:
        pa = pa[k]
    for k in b.split("/")[:-1]:
        pb = pb[k]
    ka, kb = a.split("/")[-1], b.split("/")[-1]
    pa[ka], pb[kb] = pb[kb], pa[ka]


def _edit(tree, path: str, fn):
    node = tree["params"]
    *parents, leaf = path.split("/")
    for k in parents:
        node = node[k]
    node[leaf] = fn(node[leaf])


def _shuffle_order_ijc(k, r: int = 2):
    """Reorder a pre-shuffle conv's output channels from PyTorch's c*r*r + i*r + j to
    (i*r + j)*C + c (TensorFlow depth_to_space order)."""
    *lead, o = k.shape
    return k.reshape(*lead, o // (r * r), r * r).swapaxes(-1, -2).reshape(k.shape)


# Conversion mistakes that keep every shape (so check_against_model cannot see them).
MISTAKES = {
    "edsr": {
        "kernel H/W transposed": lambda v: _edit(v, "block_0/conv1/kernel",
                                                 lambda k: k.transpose(1, 0, 2, 3)),
        "kernel in/out swapped": lambda v: _edit(v, "body_conv/kernel",
                                                 lambda k: k.transpose(0, 1, 3, 2)),
        "kernel flipped (convolution)": lambda v: _edit(v, "head/kernel", lambda k: k[::-1, ::-1]),
        "blocks swapped": lambda v: _swap(v, "block_0", "block_1"),
        "conv1/conv2 swapped": lambda v: _swap(v, "block_1/conv1", "block_1/conv2"),
        "bias not divided by rgb_range": lambda v: _edit(v, "block_0/conv2/bias",
                                                         lambda b: b * 255),
        "upsampler output channels in (i, j, c) order": lambda v: _edit(
            v, "upsampler/conv_0/kernel", _shuffle_order_ijc),
    },
    "rcan": {
        "attention kernel not multiplied by rgb_range": lambda v: _edit(
            v, "group_1/block_0/ca/down/kernel", lambda k: k / 255),
        "attention bias divided by rgb_range": lambda v: _edit(v, "group_0/block_1/ca/up/bias",
                                                               lambda b: b / 255),
        "group conv / body conv swapped": lambda v: _swap(v, "group_1/conv", "body_conv"),
    },
    "nafnet": {
        "depthwise kernel H/W transposed": lambda v: _edit(
            v, "dec_0_block_1/conv2/kernel", lambda k: k.transpose(1, 0, 2, 3)),
        "beta/gamma swapped": lambda v: _swap(v, "enc_1_block_0/beta", "enc_1_block_0/gamma"),
        "norm1/norm2 swapped": lambda v: _swap(v, "middle_block_0/norm1", "middle_block_0/norm2"),
        "sca/conv3 swapped": lambda v: _swap(v, "enc_0_block_0/sca", "enc_0_block_0/conv3"),
        "decoder blocks swapped": lambda v: _swap(v, "dec_0_block_0", "dec_0_block_1"),
        "up conv output channels in (i, j, c) order": lambda v: _edit(v, "up_1/kernel",
                                                                       _shuffle_order_ijc),
    },
}


@pytest.mark.parametrize("arch", sorted(MISTAKES))
def test_parity_check_catches_shape_preserving_conversion_mistakes(arch):
    """The parity tests above are sensitive: each plausible conversion mistake that keeps all
    shapes (so the key/shape check passes) moves the output far beyond PARITY_TOL."""
    conv = load_converter()
    if arch == "edsr":
        net, x = ref.EDSR(2, 8, 2, res_scale=0.5), rand((1, 6, 5, 3))
        _, apply = jaxsr_model("edsr", scale=2, features=8, num_blocks=2, res_scale=0.5)
    elif arch == "rcan":
        net, x = ref.RCAN(2, 2, 8, 4, 2), rand((1, 6, 7, 3))
        _, apply = jaxsr_model("rcan", scale=2, features=8, num_groups=2, num_blocks=2,
                               reduction=4)
    else:
        net, x = ref.NAFNet(3, 4, 1, (1, 2), (2, 1)), rand((1, 11, 9, 3))
        _, apply = jaxsr_model("nafnet", width=4, enc_blocks=(1, 2), middle_blocks=1,
                               dec_blocks=(2, 1))
    rgb_range = 1.0 if arch == "nafnet" else 255.0
    sd = ref.random_state_dict(net, seed=21, rgb_range=rgb_range)
    want = run_reference(net.load_state_dict(sd), x, rgb_range)
    variables = conv.convert_state_dict(sd, arch, rgb_range=rgb_range)
    assert_parity(apply(variables, x), want)
    for name, mistake in MISTAKES[arch].items():
        broken = unstack_blocks(copy.deepcopy(variables))  # the mistakes name unrolled blocks
        mistake(broken)
        broken = stack_blocks(broken)
        assert jax.tree_util.tree_structure(broken) == jax.tree_util.tree_structure(variables)
        err = parity_error(apply(broken, x), want)
        assert err > 100 * PARITY_TOL, f"{arch}: '{name}' not detected (error {err:.1e})"


def test_converter_rejects_unknown_keys_and_wrong_shapes(tmp_path):
    conv = load_converter()
    with pytest.raises(KeyError, match="not understood.*foo.weight"):
        conv.convert_state_dict({"foo.weight": np.zeros((1, 1, 1, 1))}, "edsr")
    model = models.create("edsr", scale=2, features=8, num_blocks=1)
    variables = conv.convert_state_dict({"head.0.weight": np.zeros((8, 3, 3, 3)),
                                         "head.0.bias": np.zeros(8)}, "edsr")
    with pytest.raises(ValueError, match="missing .*blocks/conv1"):
        conv.check_against_model(variables, model)
    # A state dict of the wrong scale (x3 upsampler into an x2 model) is named, not loaded.
    sd = ref.random_state_dict(ref.EDSR(1, 8, 3), seed=0, rgb_range=255.0)
    with pytest.raises(ValueError, match=r"shape mismatches.*upsampler/conv_0/kernel"):
        conv.check_against_model(conv.convert_state_dict(sd, "edsr"), model)
    # Round trip through the .npz format.
    conv.save_npz(tmp_path / "w.npz", variables)
    back = conv.load_npz(tmp_path / "w.npz")
    np.testing.assert_array_equal(back["params"]["head"]["kernel"],
                                  variables["params"]["head"]["kernel"])


def test_converter_cli_on_full_size_edsr_baseline(tmp_path, capsys, fake_torch):
    """End to end at the real size: official-layout EDSR-baseline x2 checkpoint -> .npz -> same
    output (the .pt reading is faked, see test_load_torch_state_dict_reads_real_pt_files)."""
    conv = load_converter()
    net = ref.EDSR(16, 64, 2)
    sd = ref.random_state_dict(net, seed=0, rgb_range=255.0)
    net.load_state_dict(sd)
    fake_torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "edsr_baseline_x2.pt")
    assert conv.main(["--model", "edsr_baseline", "--scale", "2", "--input",
                      str(tmp_path / "edsr_baseline_x2.pt"), "--output",
                      str(tmp_path / "w.npz")]) == 0
    assert "1,369,859 parameters" in capsys.readouterr().out
    variables = conv.load_npz(tmp_path / "w.npz")
    x = rand((1, 6, 5, 3), seed=4)
    model = models.create("edsr_baseline", scale=2)
    assert_parity(jax.jit(model.apply)(variables, x), run_reference(net, x, 255.0))


# ------------------------------------------------------------- only with PyTorch installed
def test_reference_ops_match_torch():
    """The numpy reference primitives against torch itself (CI checks them against the literal
    definitions above instead)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    t = torch.from_numpy
    for c, o, k, s, p, g in [(4, 6, 3, 1, 1, 2), (6, 6, 3, 1, 1, 6), (4, 8, 2, 2, 0, 1)]:
        x, w, b = (rng.standard_normal((2, c, 5, 7)), rng.standard_normal((o, c // g, k, k)),
                   rng.standard_normal(o))
        np.testing.assert_allclose(ref.conv2d(x, w, b, s, p, g),
                                   F.conv2d(t(x), t(w), t(b), s, p, 1, g).numpy(), rtol=1e-10,
                                   atol=1e-10)
    for r in (2, 3):
        x = rng.standard_normal((2, 2 * r * r, 3, 4)).astype(np.float32)
        np.testing.assert_array_equal(ref.pixel_shuffle(x, r), F.pixel_shuffle(t(x), r).numpy())
    x = rng.standard_normal((2, 3, 5, 7))
    for size in (1, (2, 3)):
        np.testing.assert_allclose(ref.adaptive_avg_pool2d(x, size),
                                   F.adaptive_avg_pool2d(t(x), size).numpy(), rtol=1e-12)
    wt, bs = rng.standard_normal(3), rng.standard_normal(3)
    want = F.layer_norm(t(x).permute(0, 2, 3, 1), (3,), t(wt), t(bs), 1e-6).permute(0, 3, 1, 2)
    np.testing.assert_allclose(ref.layer_norm2d(x, wt, bs, 1e-6), want.numpy(), rtol=1e-10,
                               atol=1e-12)


def test_load_torch_state_dict_reads_real_pt_files(tmp_path):
    """Real torch.save files (plain, {'params': ...} as NAFNet, {'params_ema': ...} as BasicSR)
    read with weights_only=True and unwrap to the state dict."""
    torch = pytest.importorskip("torch")
    conv = load_converter()
    sd = {k: torch.from_numpy(v) for k, v in ref.random_state_dict(
        ref.NAFNet(3, 4, 1, (1,), (1,)), seed=0).items()}
    for i, obj in enumerate([sd, {"params": sd}, {"params_ema": sd, "params": {}}]):
        torch.save(obj, tmp_path / f"{i}.pth")
        back = conv.load_torch_state_dict(str(tmp_path / f"{i}.pth"))
        assert list(back) == list(sd)
        np.testing.assert_array_equal(back["intro.weight"].numpy(), sd["intro.weight"].numpy())
