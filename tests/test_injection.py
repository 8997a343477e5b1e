"""Feature / code injection into UNet and NAFNet (jaxsr.models.injection, IRConStyle style).

Without side inputs the networks must be exactly the plain ones (same parameter tree and values
for the same key, same outputs; the plain parameter counts are pinned by tests/test_models.py).
With them, only the injection modules are added. Their parameter count, with c_i = width 2^(i+1)
the width after down_i, C_i the channels of features[i], c = width 2^depth and D the code size:
  sum_i [C_i c_i (proj 1x1, no bias) + 2 c_i c_i (fuse 1x1, no bias)]
  + D c + c (Dense) + 2 c c (fuse 1x1, no bias).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import jaxsr.models as models
from jaxsr.models import count_params
from jaxsr.models.injection import prepare_features

KEY = jax.random.key(0, impl="rbg")  # fast-compiling PRNG on CPU (see test_models.py)
NETS = {
    "unet": dict(width=4, depth=2, convs_per_level=1),
    # Blocks are beside the point here (and cost compile time): one NAFBlock, at the bottleneck.
    "nafnet": dict(width=4, enc_blocks=(0, 0), middle_blocks=1, dec_blocks=(0, 0)),
}
FEA_C = (3, 5)  # channels of features[0], features[1]
CODE_D = 7


def rand(shape, seed=0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


def side_inputs(b: int, h: int, w: int, seed: int = 1):
    """features at ceil(h / 2**(i+1)) and a code, as a stride-2 encoder would give them."""
    feas = [rand((b, -(-h // 2 ** (i + 1)), -(-w // 2 ** (i + 1)), c), seed + i)
            for i, c in enumerate(FEA_C)]
    return feas, rand((b, CODE_D), seed + 10) - 0.5


class Net:
    """A tiny restorer with its plain (`v0`) and injected (`vi`) variables for one input."""

    def __init__(self, name: str):
        self.model = models.create(name, **NETS[name])
        self.x = rand((2, 16, 16, 3))
        self.feas, self.code = side_inputs(2, 16, 16)
        self.fwd = jax.jit(self.model.apply)
        both = jax.jit(lambda x, f, c: (self.model.init(KEY, x),
                                        self.model.init(KEY, x, features=f, code=c)))
        self.v0, self.vi = both(self.x, self.feas, self.code)  # one compile for the two inits


@functools.lru_cache(maxsize=None)
def build(name: str) -> Net:
    return Net(name)


@pytest.fixture(params=["unet", "nafnet"])
def net(request) -> Net:
    return build(request.param)


def flat(tree) -> dict:
    return traverse_util.flatten_dict(tree["params"], sep="/")


def injection_p(width: int, depth: int, fea_c, code_d) -> int:
    n = 0
    for i, c_f in enumerate(fea_c):
        c = width * 2 ** (i + 1)
        n += c_f * c + 2 * c * c
    c = width * 2 ** depth
    return n + code_d * c + c + 2 * c * c if code_d else n


@pytest.mark.parametrize("name,scale", [("unet", 1), ("unet", 2), ("nafnet", 1)])
def test_without_side_inputs_the_program_is_unchanged(name, scale):
    """features=None, code=None trace to the very same init and apply programs as the plain call
    (so parameters and outputs are bit-identical); no injection parameter exists."""
    model = models.create(name, scale=scale, **NETS[name])
    x = jnp.zeros((2, 16, 16, 3))
    none = dict(features=None, code=None)
    init0 = jax.make_jaxpr(lambda k, x: model.init(k, x))(KEY, x)
    init1 = jax.make_jaxpr(lambda k, x: model.init(k, x, **none))(KEY, x)
    assert str(init0) == str(init1)
    v = jax.eval_shape(model.init, KEY, x)
    assert not any("fuse" in k for k in flat(v))
    app0 = jax.make_jaxpr(lambda v, x: model.apply(v, x))(v, x)
    app1 = jax.make_jaxpr(lambda v, x: model.apply(v, x, **none))(v, x)
    assert str(app0) == str(app1)


def test_plain_params_keep_their_values_and_outputs_match(net):
    """Same key: the plain parameters are the same numbers with or without injection (Flax folds
    the module path into the key); the plain output equals the None-call output."""
    base, full = flat(net.v0), flat(net.vi)
    assert set(base) <= set(full)
    assert all(np.array_equal(full[k], base[k]) for k in base)
    y0 = net.fwd(net.v0, net.x)
    assert np.array_equal(y0, jax.jit(functools.partial(net.model.apply, features=None,
                                                        code=None))(net.v0, net.x))


def test_injection_adds_only_its_own_parameters(net):
    base = flat(net.v0)
    for side, fea_c, code_d in [(dict(features=net.feas, code=net.code), FEA_C, CODE_D),
                                (dict(features=net.feas), FEA_C, 0),
                                (dict(code=net.code), (), CODE_D)]:
        full = flat(jax.eval_shape(functools.partial(net.model.init, **side), KEY, net.x))
        extra = sorted(set(full) - set(base))
        want = ([f"feat_fuse_{i}/{m}/kernel" for i in range(len(fea_c)) for m in ("fuse", "proj")]
                + (["code_fuse/dense/bias", "code_fuse/dense/kernel", "code_fuse/fuse/kernel"]
                   if code_d else []))
        assert extra == sorted(want), extra
        assert set(full) - set(extra) == set(base)
        assert count_params({k: full[k] for k in extra}) == injection_p(4, 2, fea_c, code_d)


def test_side_inputs_change_the_output_and_get_gradients(net):
    y = net.fwd(net.vi, net.x, features=net.feas, code=net.code)
    feas2, code2 = side_inputs(2, 16, 16, seed=5)
    for i in range(len(net.feas)):
        other = [feas2[j] if j == i else f for j, f in enumerate(net.feas)]
        assert not np.allclose(net.fwd(net.vi, net.x, features=other, code=net.code), y,
                               rtol=1e-5, atol=0), i
    assert not np.allclose(net.fwd(net.vi, net.x, features=net.feas, code=code2), y,
                           rtol=1e-5, atol=0)

    def loss(feas, code):
        return jnp.mean(jnp.square(net.model.apply(net.vi, net.x, features=feas, code=code) - .5))
    g_feas, g_code = jax.jit(jax.grad(loss, argnums=(0, 1)))(net.feas, net.code)
    assert all(g.shape == f.shape for g, f in zip(g_feas, net.feas))
    assert g_code.shape == net.code.shape
    for g in (*g_feas, g_code):
        assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0


def test_odd_sizes_take_encoder_sized_features_zero_padded():
    x_shape = (2, 13, 18, 3)  # padded to 16 x 20 inside; levels at 8 x 10 and 4 x 5
    feas, code = side_inputs(2, 13, 18)
    assert [f.shape[1:3] for f in feas] == [(7, 9), (4, 5)]
    out = prepare_features("UNet", feas, x_shape, 2)
    assert [f.shape for f in out] == [(2, 8, 10, 3), (2, 4, 5, 5)]
    np.testing.assert_array_equal(out[0][:, :7, :9], feas[0])
    assert float(jnp.abs(out[0][:, 7:]).max()) == 0 and float(jnp.abs(out[0][:, :, 9:]).max()) == 0
    # Already padded maps pass unchanged; the network accepts either and keeps the input size.
    assert all(np.array_equal(a, b) for a, b in zip(prepare_features("UNet", out, x_shape, 2),
                                                    out))
    for name in NETS:
        model = models.create(name, **NETS[name])
        x = jnp.zeros(x_shape)
        for f in (feas, out):
            v = jax.eval_shape(functools.partial(model.init, features=f, code=code), KEY, x)
            y = jax.eval_shape(functools.partial(model.apply, features=f, code=code), v, x)
            assert y.shape == x_shape


@pytest.mark.parametrize("name,label", [("unet", "UNet"), ("nafnet", "NAFNet")])
def test_wrong_shapes_name_the_expected_ones(name, label):
    model = models.create(name, **NETS[name])
    x = jnp.zeros((2, 16, 16, 3))
    feas, code = side_inputs(2, 16, 16)

    def trace(**side):
        jax.eval_shape(functools.partial(model.init, KEY, **side), x)

    expected = "(B=2, 8, 8, C_0), (B=2, 4, 4, C_1)"
    with pytest.raises(ValueError) as e:
        trace(features=feas[:1])
    assert f"{label}: features must be a sequence of 2 maps" in str(e.value)
    assert expected in str(e.value) and "got 1 maps" in str(e.value)
    with pytest.raises(ValueError, match=r"got one array"):
        trace(features=feas[0])
    with pytest.raises(ValueError) as e:
        trace(features=[feas[0], feas[0]])
    assert "features[1] has shape (2, 8, 8, 3); expected (B=2, 4, 4, C_1)" in str(e.value)
    assert expected in str(e.value)
    with pytest.raises(ValueError, match=r"features\[0\] has shape \(1, 8, 8, 3\); expected "
                                         r"\(B=2, 8, 8, C_0\)"):
        trace(features=[feas[0][:1], feas[1]])
    with pytest.raises(ValueError, match=rf"{label}: code has shape \(7,\); expected \(B=2, D\)"):
        trace(code=code[0])
    with pytest.raises(ValueError, match=r"code has shape \(3, 7\); expected \(B=2, D\)"):
        trace(code=jnp.zeros((3, CODE_D)))


def test_conv_encoder_drives_a_unet_end_to_end():
    """ConStyle wiring: encoder maps at H/2, H/4 and its code feed a depth-2 U-Net; the
    restoration loss trains the encoder too (joint training)."""
    enc = models.create_side("conv_encoder", stages=((4, FEA_C[0]), (8, FEA_C[1]), (8, 16)),
                             hidden_dims=(8,), code_dim=CODE_D)
    net = build("unet")
    ev = jax.jit(lambda x: enc.init(KEY, x, train=False))(net.x)

    def loss(enc_params):
        (code, feas), _ = enc.apply({"params": enc_params, "batch_stats": ev["batch_stats"]},
                                    net.x, train=True, mutable=["batch_stats"])
        assert [f.shape for f in feas] == [(2, 8, 8, 3), (2, 4, 4, 5)] and code.shape == (2, 7)
        return jnp.mean(jnp.abs(net.model.apply(net.vi, net.x, features=feas, code=code) - net.x))
    g = jax.jit(jax.grad(loss))(ev["params"])
    norms = {k: float(jnp.abs(a).max()) for k, a in flat({"params": g}).items()}
    assert all(n > 0 for n in norms.values()), norms


def test_global_residual_passes_side_inputs_to_the_network():
    """config.model.global_residual wraps the restorer; features and code reach it unchanged:
    wrapper(x, features, code) = x + g * unet(x, features, code) with the wrapper's gain g."""
    import ml_collections
    from jaxsr.model_factory import build_model
    cfg = ml_collections.ConfigDict({"name": "unet", "scale": 1, "global_residual": True,
                                     "kwargs": {"width": 8, "depth": 2}})
    wrapped = build_model(cfg)
    x = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
    feats = [jax.random.normal(jax.random.key(1), (1, 8, 8, 5)),
             jax.random.normal(jax.random.key(2), (1, 4, 4, 6))]
    code = jax.random.normal(jax.random.key(3), (1, 7))
    params = wrapped.init(jax.random.key(4), x, features=feats, code=code)["params"]
    params = {**params, "residual_gain": jnp.full((3,), 0.5)}
    got = wrapped.apply({"params": params}, x, features=feats, code=code)
    inner = wrapped.net.apply({"params": params["net"]}, x, features=feats, code=code)
    np.testing.assert_allclose(got, x + 0.5 * inner, rtol=1e-6, atol=1e-6)
    assert "code_fuse" in params["net"] and "feat_fuse_1" in params["net"]
