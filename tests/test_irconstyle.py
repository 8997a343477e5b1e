"""IRConStyle (jaxsr/methods/irconstyle): parameter counts, MoCo momentum and queue, the
ConStyle losses against numpy, gradients (none into the key encoder; none into the encoder after
the ConStyle phase) and the injection into the plain U-Net. All at tiny sizes, except the
parameter counts (shape-only, no compute)."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsr.models as models
from jaxsr.config_util import load_config_file, override
from jaxsr.methods.irconstyle import moco
from jaxsr.methods.irconstyle.losses import constyle_losses
from jaxsr.methods.irconstyle.model import (ENCODER_STAGES, ConStyleNet, nafblock_params,
                                            restorer_params)
from jaxsr.methods.irconstyle import train as ic_train

count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731


def shapes(net, size=32):
    return jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


# ------------------------------------------------------------------ parameter counts
def test_constyle_encoder_has_the_published_1_19m_parameters():
    # Convs without bias: 9 c_in c_out. Head: Linear (d_in d_out + d_out) + BN (2 d_out).
    convs, c_in = 0, 3
    for stage in ENCODER_STAGES:
        for c_out in stage:
            convs += 9 * c_in * c_out
            c_in = c_out
    head = (256 * 128 + 128 + 2 * 128) + (128 * 128 + 128 + 2 * 128)
    assert convs + head == 1_190_832
    enc = models.create_side("conv_encoder")
    variables = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                train=False))
    assert count(variables["params"]) == 1_190_832
    assert round(count(variables["params"]) / 1e6, 2) == 1.19
    # The deployed tree carries the encoder (params + its 2 x 2 x 128 BN statistics).
    p = shapes(models.create("constyle_nafnet"))["params"]
    assert count(p["encoder"]["params"]) == 1_190_832
    assert count(p["encoder"]["batch_stats"]) == 512


def test_constyle_nafnet_parameter_count_matches_the_hand_formula():
    assert nafblock_params(48) == 7 * 48 ** 2 + 33 * 48
    p = shapes(models.create("constyle_nafnet"))["params"]
    restorer = restorer_params(48, (7, 8, 9), 9, (9, 8, 7), (32, 64, 128), 128)
    assert count(p["restorer"]) == restorer == 8_316_435
    total = count(p["encoder"]["params"]) + restorer
    # The layout in ../shared/methods/irconstyle.md (widths d, 2d, 3d, 4d; d = 48) gives 9.51 M,
    # not the published 12.74 M: the missing 3.2 M are in a part of the authors' network that
    # the design notes do not describe. Pinned here so that a layout change is noticed.
    assert total == 9_507_267
    assert abs(total - 12.74e6) / 12.74e6 > 0.2


# ------------------------------------------------------------------ MoCo
def test_momentum_update_matches_hand_computation():
    k = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(-3.0)}}
    q = {"a": jnp.array([3.0, -2.0]), "b": {"c": jnp.array(5.0)}}
    out = moco.momentum_update(k, q, 0.999)
    np.testing.assert_allclose(out["a"], [0.999 * 1 + 0.001 * 3, 0.999 * 2 - 0.001 * 2],
                               rtol=1e-6)
    np.testing.assert_allclose(out["b"]["c"], 0.999 * -3 + 0.001 * 5, rtol=1e-6)


@pytest.mark.parametrize("size,batch", [(8, 2), (7, 3), (5, 5)])
def test_queue_is_a_fifo_with_wrap_around_like_a_python_list(size, batch):
    queue = moco.init_queue(jax.random.key(0), size, 2)
    q, ptr = queue["queue"], queue["pointer"]
    ref = collections.deque([tuple(r) for r in np.asarray(q)], maxlen=size)  # oldest first
    ref_ptr = 0
    rng = np.random.default_rng(0)
    for _ in range(6):
        rows = rng.normal(size=(batch, 2)).astype(np.float32)
        q, ptr = moco.enqueue(q, ptr, jnp.asarray(rows))
        ref_ptr = (ref_ptr + batch) % size
        for r in rows:
            ref.append(tuple(r))          # drops the oldest
        assert int(ptr) == ref_ptr
        # Row i of the ring holds the list entry at (i - pointer) mod K (oldest at the pointer).
        got = [tuple(np.asarray(q)[(ref_ptr + i) % size]) for i in range(size)]
        np.testing.assert_array_equal(np.array(got), np.array(list(ref)))


# ------------------------------------------------------------------ losses vs numpy
def _np_losses(h, qc, kc, queue, t, normalize):
    def nz(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8) if normalize else x
    q, k, q1 = nz(qc), nz(kc), nz(h)
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T], 1) / t
    m = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(1)) + m[:, 0]
    nce = np.mean(lse - logits[:, 0])
    content = np.mean((q - k) ** 2)
    b, d = q.shape
    gram = lambda z: z @ z.T / (d * b)  # noqa: E731
    style = (-np.mean((gram(q1) - gram(queue[:b])) ** 2)
             - np.mean((gram(q) - gram(queue[b:2 * b])) ** 2))
    return nce, content, style


@pytest.mark.parametrize("normalize", [True, False])
def test_constyle_losses_match_numpy(normalize):
    rng = np.random.default_rng(1)
    h, qc, kc = (rng.normal(size=(4, 6)) for _ in range(3))
    queue = rng.normal(size=(10, 6))
    want = _np_losses(h, qc, kc, queue, 0.07 if normalize else 5.0, normalize)
    got = constyle_losses(*(jnp.asarray(x, jnp.float32) for x in (h, qc, kc, queue)),
                          temperature=0.07 if normalize else 5.0, normalize=normalize)
    np.testing.assert_allclose([got["infonce"], got["content"], got["style"]], want,
                               rtol=2e-5, atol=1e-7)


# ------------------------------------------------------------------ steps and gradients
def tiny_config(**overrides):
    config = load_config_file("configs/irconstyle.py", "tiny,denoise25")
    override(config, "data.hr_patch", 16)
    for k, v in overrides.items():
        override(config, k, v)
    return config


def _setup(config):
    from jaxsr.model_factory import build_model
    net = build_model(config.model)
    n1 = ic_train.constyle_steps(config, net)
    tx = ic_train.make_irconstyle_optimizer(config.optim, config.train.num_steps, n1)
    state = ic_train.init_state(config, net, tx)
    degrade = __import__("jaxsr.methods.irconstyle.data", fromlist=["x"]).make_degrader(
        config.data)
    return net, tx, state, degrade


def _batch(seed, config):
    rng = np.random.default_rng(seed)
    p = config.data.hr_patch
    return {"hr": jnp.asarray(rng.integers(0, 256, (config.data.batch_size, p, p, 3),
                                           dtype=np.uint8))}


def test_no_gradient_reaches_the_key_encoder():
    from jaxsr.losses import pixel_loss
    config = tiny_config()
    net, _, state, _ = _setup(config)
    enc = net.encoder_module()
    rng = np.random.default_rng(0)
    lq, clean = (jnp.asarray(rng.random((4, 16, 16, 3), np.float32)) for _ in range(2))
    key_enc = jax.tree.map(lambda x: x + 0.01, state.buffers["key_encoder"])

    def total(params, key_params):
        (k_code, _), _ = enc.apply({"params": key_params, "batch_stats":
                                    key_enc["batch_stats"]}, clean, train=True,
                                   mutable=["batch_stats"])
        (q_code, feats, hidden), _ = enc.apply(params["encoder"], lq, train=True,
                                               return_hidden=True, mutable=["batch_stats"])
        out = net.apply({"params": params}, lq, encoder_out=(q_code, feats))
        parts = constyle_losses(hidden[0], q_code, k_code, state.buffers["queue"])
        return pixel_loss(out, clean) + parts["infonce"] + parts["content"] + parts["style"]

    g_params, g_key = jax.jit(jax.grad(total, argnums=(0, 1)))(state.params, key_enc["params"])
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(g_key))
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(
        g_params["encoder"]["params"]))) > 0   # the query encoder does get gradient


def test_encoder_trains_in_the_constyle_phase_then_stops_changing():
    config = tiny_config(**{"constyle.steps": 2, "train.num_steps": 5})
    net, tx, state, degrade = _setup(config)
    s1 = jax.jit(ic_train.make_constyle_step(net, tx, config, degrade))
    s2 = jax.jit(ic_train.make_restore_step(net, tx, config, degrade))
    leaves = lambda s, k: [np.asarray(x) for x in jax.tree.leaves(s.params[k])]  # noqa: E731
    enc0, queue0 = leaves(state, "encoder"), np.asarray(state.buffers["queue"])
    key0 = [np.asarray(x) for x in jax.tree.leaves(state.buffers["key_encoder"]["params"])]
    for i in range(2):
        state, metrics = s1(state, _batch(i, config))
        assert set(metrics) >= {"l1", "infonce", "content", "style"}
    enc1 = leaves(state, "encoder")
    assert all(not np.array_equal(a, b) for a, b in zip(enc0, enc1))  # params and BN stats
    key1 = [np.asarray(x) for x in jax.tree.leaves(state.buffers["key_encoder"]["params"])]
    # Key encoder after 2 steps = momentum average of the query encoders before each step.
    assert any(not np.array_equal(a, b) for a, b in zip(key0, key1))
    assert int(state.buffers["pointer"]) == (2 * config.data.batch_size) % \
        config.constyle.queue_size
    assert not np.array_equal(np.asarray(state.buffers["queue"]), queue0)
    restorer1 = leaves(state, "restorer")
    buffers1 = jax.tree.map(np.asarray, state.buffers)
    for i in range(3):
        state, _ = s2(state, _batch(10 + i, config))
    for a, b in zip(enc1, leaves(state, "encoder")):
        np.testing.assert_array_equal(a, b)           # frozen: params and BN statistics
    jax.tree.map(np.testing.assert_array_equal, buffers1,
                 jax.tree.map(np.asarray, state.buffers))
    assert any(not np.array_equal(a, b) for a, b in zip(restorer1, leaves(state, "restorer")))


# ------------------------------------------------------------------ injection
def test_injected_features_change_the_output_and_zeroed_reproduce_the_plain_unet():
    kw = dict(restorer="unet", width=4, unet_depth=3, unet_convs=1,
              encoder_stages=((4, 8), (8, 8), (8, 8), (8, 16)), encoder_hidden=(8,), code_dim=8)
    net, plain = ConStyleNet(**kw), ConStyleNet(inject=False, **kw)
    x = jnp.asarray(np.random.default_rng(0).random((2, 12, 12, 3), np.float32))  # padded to 16
    p = jax.jit(net.init)(jax.random.key(0), x)["params"]
    pp = jax.jit(plain.init)(jax.random.key(0), x)["params"]
    enc = net.encoder_module()
    code, feats = jax.jit(lambda v, x: enc.apply(v, net.pad(x), train=False))(p["encoder"], x)
    apply = jax.jit(lambda p, x, side: net.apply({"params": p}, x, encoder_out=side))
    out = apply(p, x, (code, feats))
    out2 = apply(p, x, (code * 2 + 1, [f * 3 + 1 for f in feats]))
    assert float(jnp.max(jnp.abs(out - out2))) > 1e-4        # the side inputs matter
    # Zero side inputs + fuse convs that pass the restorer's own channels through (identity on
    # them) and a zero Dense bias = the plain U-Net with the same shared parameters.
    r = jax.tree.map(jnp.asarray, dict(p["restorer"]))
    r = {**r, **{k: v for k, v in pp["restorer"].items()}}   # the plain net's shared weights
    for name in [k for k in p["restorer"] if k.startswith("feat_fuse") or k == "code_fuse"]:
        fuse = p["restorer"][name]["fuse"]["kernel"]          # (1, 1, 2w, w)
        w = fuse.shape[-1]
        ident = jnp.zeros_like(fuse).at[0, 0, :w, :].set(jnp.eye(w))
        r[name] = jax.tree.map(lambda t: t, dict(p["restorer"][name]))
        r[name]["fuse"] = {"kernel": ident}
        if name == "code_fuse":
            r[name]["dense"] = {**p["restorer"][name]["dense"],
                                "bias": jnp.zeros_like(p["restorer"][name]["dense"]["bias"])}
    zero = (jnp.zeros_like(code), [jnp.zeros_like(f) for f in feats])
    got = apply({**p, "restorer": r}, x, zero)
    want = jax.jit(plain.apply)({"params": pp}, x)
    np.testing.assert_allclose(got, want, atol=1e-5)
