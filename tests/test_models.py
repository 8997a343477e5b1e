"""Tests for jaxsr.models: pixel shuffle order, shapes, exact parameter counts, dtypes, training,
registry errors, and (when PyTorch is installed) equivalence with PyTorch transcriptions of the
official EDSR / RCAN / NAFNet architectures through experiments/convert_pytorch.py.

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

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsr.models as models
from jaxsr.models import count_params, pixel_shuffle, pixel_unshuffle

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
def pixel_shuffle_reference_nchw(x: np.ndarray, r: int) -> np.ndarray:
    """Literal transcription of PyTorch's definition, NCHW:
    out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w]."""
    n, crr, h, w = x.shape
    c = crr // (r * r)
    out = np.zeros((n, c, h * r, w * r), x.dtype)
    for ci in range(c):
        for i in range(r):
            for j in range(r):
                out[:, ci, i::r, j::r] = x[:, ci * r * r + i * r + j]
    return out


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_pytorch_definition(r):
    x = np.random.default_rng(r).standard_normal((2, 3 * r * r, 4, 5)).astype(np.float32)
    want = pixel_shuffle_reference_nchw(x, r).transpose(0, 2, 3, 1)
    got = np.asarray(pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), r))
    np.testing.assert_array_equal(got, want)
    # pixel_unshuffle is its exact inverse.
    np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(got), r)),
                                  x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_torch(r):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(10 + r).standard_normal((2, 2 * r * r, 3, 4)).astype(np.float32)
    want = torch.nn.functional.pixel_shuffle(torch.from_numpy(x), r).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), r))
    np.testing.assert_array_equal(got, want)


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
    k = np.asarray(params["params"]["block_0"]["conv1"]["kernel"])  # (3, 3, 8, 8), fan_in 72
    assert np.abs(k).max() <= 1 / np.sqrt(72) and k.std() > 0.5 / np.sqrt(3 * 72)
    assert not np.any(np.asarray(params["params"]["block_0"]["conv1"]["bias"]))


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


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_pytorch",
                                                  REPO / "experiments" / "convert_pytorch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def torch_refs():
    """PyTorch transcriptions of the official architectures, with the official module names."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    mean = (0.4488, 0.4371, 0.4040)

    def c(i, o, k, bias=True):
        return tnn.Conv2d(i, o, k, padding=k // 2, bias=bias)

    def shift(rgb_range, sign):
        m = c(3, 3, 1)
        m.weight.data = torch.eye(3).view(3, 3, 1, 1)
        m.bias.data = sign * rgb_range * torch.tensor(mean)
        for p in m.parameters():
            p.requires_grad = False
        return m

    def upsampler(f, s):
        layers = []
        for r in {1: [], 2: [2], 3: [3], 4: [2, 2]}[s]:
            layers += [c(f, r * r * f, 3), tnn.PixelShuffle(r)]
        return tnn.Sequential(*layers)

    class ResBlock(tnn.Module):
        def __init__(self, f, res_scale):
            super().__init__()
            self.body = tnn.Sequential(c(f, f, 3), tnn.ReLU(), c(f, f, 3))
            self.res_scale = res_scale

        def forward(self, x):
            return x + self.body(x) * self.res_scale

    class CALayer(tnn.Module):
        def __init__(self, f, red):
            super().__init__()
            self.avg_pool = tnn.AdaptiveAvgPool2d(1)
            self.conv_du = tnn.Sequential(c(f, f // red, 1), tnn.ReLU(), c(f // red, f, 1),
                                          tnn.Sigmoid())

        def forward(self, x):
            return x * self.conv_du(self.avg_pool(x))

    class RCAB(tnn.Module):
        def __init__(self, f, red):
            super().__init__()
            self.body = tnn.Sequential(c(f, f, 3), tnn.ReLU(), c(f, f, 3), CALayer(f, red))

        def forward(self, x):
            return x + self.body(x)

    class Group(tnn.Module):
        def __init__(self, f, b, red):
            super().__init__()
            self.body = tnn.Sequential(*[RCAB(f, red) for _ in range(b)], c(f, f, 3))

        def forward(self, x):
            return x + self.body(x)

    class SR(tnn.Module):
        """EDSR (blocks = ResBlocks) or RCAN (blocks = residual groups); input in [0, 255]."""

        def __init__(self, f, blocks, s, rgb_range=255.0):
            super().__init__()
            self.sub_mean, self.add_mean = shift(rgb_range, -1), shift(rgb_range, 1)
            self.head = tnn.Sequential(c(3, f, 3))
            self.body = tnn.Sequential(*blocks, c(f, f, 3))
            self.tail = tnn.Sequential(upsampler(f, s), c(f, 3, 3))

        def forward(self, x):
            x = self.head(self.sub_mean(x))
            return self.add_mean(self.tail(x + self.body(x)))

    def edsr(f, b, s, res_scale):
        return SR(f, [ResBlock(f, res_scale) for _ in range(b)], s)

    def rcan(f, g, b, red, s):
        return SR(f, [Group(f, b, red) for _ in range(g)], s)

    class LN2d(tnn.Module):
        def __init__(self, ch):
            super().__init__()
            self.weight = tnn.Parameter(torch.ones(ch))
            self.bias = tnn.Parameter(torch.zeros(ch))

        def forward(self, x):
            mu = x.mean(1, keepdim=True)
            var = (x - mu).pow(2).mean(1, keepdim=True)
            y = (x - mu) / (var + 1e-6).sqrt()
            return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)

    class NAFBlock(tnn.Module):
        def __init__(self, ch):
            super().__init__()
            self.conv1, self.conv2 = c(ch, 2 * ch, 1), tnn.Conv2d(2 * ch, 2 * ch, 3, padding=1,
                                                                  groups=2 * ch)
            self.conv3 = c(ch, ch, 1)
            self.sca = tnn.Sequential(tnn.AdaptiveAvgPool2d(1), c(ch, ch, 1))
            self.conv4, self.conv5 = c(ch, 2 * ch, 1), c(ch, ch, 1)
            self.norm1, self.norm2 = LN2d(ch), LN2d(ch)
            self.beta = tnn.Parameter(torch.zeros((1, ch, 1, 1)))
            self.gamma = tnn.Parameter(torch.zeros((1, ch, 1, 1)))

        def forward(self, inp):
            x = self.conv2(self.conv1(self.norm1(inp)))
            a, b = x.chunk(2, dim=1)
            x = a * b
            x = self.conv3(x * self.sca(x))
            y = inp + x * self.beta
            a, b = self.conv4(self.norm2(y)).chunk(2, dim=1)
            return y + self.conv5(a * b) * self.gamma

    class NAFNet(tnn.Module):
        def __init__(self, w, enc, m, dec):
            super().__init__()
            self.intro, self.ending = c(3, w, 3), c(w, 3, 3)
            self.encoders, self.downs = tnn.ModuleList(), tnn.ModuleList()
            self.ups, self.decoders = tnn.ModuleList(), tnn.ModuleList()
            ch = w
            for n in enc:
                self.encoders.append(tnn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
                self.downs.append(tnn.Conv2d(ch, 2 * ch, 2, 2))
                ch *= 2
            self.middle_blks = tnn.Sequential(*[NAFBlock(ch) for _ in range(m)])
            for n in dec:
                self.ups.append(tnn.Sequential(tnn.Conv2d(ch, 2 * ch, 1, bias=False),
                                               tnn.PixelShuffle(2)))
                ch //= 2
                self.decoders.append(tnn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
            self.pad = 2 ** len(enc)

        def forward(self, inp):
            h, w = inp.shape[-2:]
            inp = tnn.functional.pad(inp, (0, (-w) % self.pad, 0, (-h) % self.pad))
            x, skips = self.intro(inp), []
            for e, d in zip(self.encoders, self.downs):
                x = e(x)
                skips.append(x)
                x = d(x)
            x = self.middle_blks(x)
            for dcd, u, s in zip(self.decoders, self.ups, skips[::-1]):
                x = dcd(u(x) + s)
            return (self.ending(x) + inp)[..., :h, :w]

    return torch, edsr, rcan, NAFNet


def randomize_torch(torch, net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "mean" not in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return net


def assert_close(got, want):
    """float32 agreement relative to the output magnitude (random weights give outputs ~10)."""
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0,
                               atol=2e-6 * float(np.abs(want).max()) + 1e-6)


def run_torch(torch, net, x, rgb_range):
    with torch.no_grad():
        out = net(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2) * rgb_range))
    return out.numpy().transpose(0, 2, 3, 1) / rgb_range


def test_torch_param_counts_of_official_layouts():
    torch, edsr, rcan, nafnet = torch_refs()
    with torch.device("meta"):
        counts = {
            "edsr_baseline_x2": edsr(64, 16, 2, 1.0), "edsr_large_x3": edsr(256, 32, 3, 0.1),
            "rcan_x4": rcan(64, 10, 20, 16, 4),
            "nafnet_w32": nafnet(32, (1, 1, 1, 28), 1, (1,) * 4),
        }
        counts = {k: sum(p.numel() for p in v.parameters()) for k, v in counts.items()}
    # The official EDSR/RCAN models hold two frozen MeanShift 1x1 convs (2 x 12 scalars).
    assert counts["edsr_baseline_x2"] - 24 == n_params("edsr_baseline", scale=2) == 1_369_859
    assert counts["edsr_large_x3"] - 24 == edsr_p(256, 32, 3) == 43_680_003
    assert counts["rcan_x4"] == 15_592_379 == rcan_p(64, 10, 20, 16, 4) + 24
    assert counts["nafnet_w32"] == 17_111_907


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_edsr_matches_torch_after_conversion(scale):
    torch, edsr, _, _ = torch_refs()
    conv = load_converter()
    net = randomize_torch(torch, edsr(8, 2, scale, 0.5), scale)
    x = rand((1, 6, 5, 3))
    model = models.create("edsr", scale=scale, features=8, num_blocks=2, res_scale=0.5)
    variables = conv.convert_state_dict(net.state_dict(), "edsr", rgb_range=255.0)
    conv.check_against_model(variables, model)
    assert_close(jax.jit(model.apply)(variables, x), run_torch(torch, net, x, 255.0))


@pytest.mark.parametrize("scale", [2, 4])
def test_rcan_matches_torch_after_conversion(scale):
    torch, _, rcan, _ = torch_refs()
    conv = load_converter()
    net = randomize_torch(torch, rcan(8, 2, 2, 4, scale), 7)
    x = rand((1, 6, 7, 3))
    model = models.create("rcan", scale=scale, features=8, num_groups=2, num_blocks=2,
                          reduction=4)
    variables = conv.convert_state_dict(net.state_dict(), "rcan", rgb_range=255.0)
    conv.check_against_model(variables, model)
    assert_close(jax.jit(model.apply)(variables, x), run_torch(torch, net, x, 255.0))


def test_nafnet_matches_torch_after_conversion(tmp_path):
    torch, _, _, nafnet = torch_refs()
    conv = load_converter()
    net = randomize_torch(torch, nafnet(4, (1, 2), 1, (2, 1)), 3)
    x = rand((1, 11, 9, 3))
    model = models.create("nafnet", width=4, enc_blocks=(1, 2), middle_blocks=1, dec_blocks=(2, 1))
    # Official NAFNet checkpoints wrap the state_dict as {'params': ...}.
    torch.save({"params": net.state_dict()}, tmp_path / "naf.pth")
    variables = conv.convert_state_dict(conv.load_torch_state_dict(str(tmp_path / "naf.pth")),
                                        "nafnet")
    conv.check_against_model(variables, model)
    assert_close(jax.jit(model.apply)(variables, x), run_torch(torch, net, x, 1.0))


def test_converter_rejects_unknown_keys_and_wrong_shapes(tmp_path):
    conv = load_converter()
    with pytest.raises(KeyError, match="not understood.*foo.weight"):
        conv.convert_state_dict({"foo.weight": np.zeros((1, 1, 1, 1))}, "edsr")
    model = models.create("edsr", scale=2, features=8, num_blocks=1)
    variables = conv.convert_state_dict({"head.0.weight": np.zeros((8, 3, 3, 3)),
                                         "head.0.bias": np.zeros(8)}, "edsr")
    with pytest.raises(ValueError, match="missing .*block_0/conv1"):
        conv.check_against_model(variables, model)
    # Round trip through the .npz format.
    conv.save_npz(tmp_path / "w.npz", variables)
    back = conv.load_npz(tmp_path / "w.npz")
    np.testing.assert_array_equal(back["params"]["head"]["kernel"],
                                  variables["params"]["head"]["kernel"])


def test_converter_cli_on_full_size_edsr_baseline(tmp_path, capsys):
    """End to end at the real size: official-layout EDSR-baseline x2 .pt -> .npz -> same output."""
    torch, edsr, _, _ = torch_refs()
    conv = load_converter()
    torch.manual_seed(0)
    net = edsr(64, 16, 2, 1.0)
    torch.save(net.state_dict(), tmp_path / "edsr_baseline_x2.pt")
    assert conv.main(["--model", "edsr_baseline", "--scale", "2", "--input",
                      str(tmp_path / "edsr_baseline_x2.pt"), "--output",
                      str(tmp_path / "w.npz")]) == 0
    assert "1,369,859 parameters" in capsys.readouterr().out
    variables = conv.load_npz(tmp_path / "w.npz")
    x = rand((1, 6, 5, 3), seed=4)
    model = models.create("edsr_baseline", scale=2)
    assert_close(jax.jit(model.apply)(variables, x), run_torch(torch, net, x, 255.0))
