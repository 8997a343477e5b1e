"""The PCL step: where gradients go (L_CL reaches the SR network by default and exactly not with
`released_code_gradient`; no cross-gradients between the two updates), the step equals the two
updates made by hand, no recompiles after step 1, and 8 simulated devices equal 1.

Run as a script (`python tests/test_pcl_step.py OUT.npz`) it is the multi-device worker.
"""
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny(**overrides):
    from jaxsr.config_util import load_config_file, override
    config = load_config_file(str(REPO / "configs" / "pcl.py"), "tiny")
    for key, value in overrides.items():
        override(config, key, value)
    return config


def setup(config, gain=0.3):
    """(model, net, objectives, state, batch) with a real HR batch (4 crops of 32 px) and the
    ReZero gain set to `gain` (at 0 the network's inner parameters get no gradient at all)."""
    from jaxsr import samples as shipped
    from jaxsr.imageio import list_images, read_image
    from jaxsr.methods.pcl import train as pcl
    from jaxsr.model_factory import build_model
    model, net = build_model(config.model), pcl.build_embedding(config.pcl)
    sr_tx, e_tx = pcl.sr_optimizer(config), pcl.embed_optimizer(config)
    state = pcl.init_state(config, model, net, sr_tx, e_tx)
    state = state.replace(params={**state.params,
                                  "residual_gain": jnp.full((3,), gain, jnp.float32)})
    files = list_images(shipped.path("clean_hr"))[:4]
    hr = np.stack([read_image(f)[40:72, 50:82] for f in files])
    return model, net, pcl.Objectives(model, net, config), state, {"hr": hr}, (sr_tx, e_tx)


def inputs(state, batch, scale=4):
    from jaxsr.methods.pcl import train as pcl
    from jaxsr.methods.pcl.samples import make_samples
    from jaxsr.train.state import step_key
    hr = jnp.asarray(batch["hr"], jnp.float32) / 255.0
    lr = pcl.make_lr(hr, scale)
    pos, neg, _ = make_samples(step_key(state), hr, lr)
    return hr, lr, pos, neg


def norms(tree):
    return [float(jnp.sqrt(jnp.sum(x ** 2))) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("released", [False, True])
def test_cl_gradient_reaches_sr_network_only_without_released_switch(released):
    config = tiny(**{"pcl.released_code_gradient": released})
    _, _, obj, state, batch, _ = setup(config)
    hr, lr, pos, neg = inputs(state, batch)
    e, stats = state.aux["embed"].params, state.buffers["embed_batch_stats"]
    @jax.jit
    def grads(p):
        part = lambda i: jax.grad(  # noqa: E731
            lambda q: jax.tree.leaves(obj.sr(q, e, stats, lr, hr, pos, neg))[i])(p)
        return part(2), part(0), part(1)  # d cl, d total, d l1 (leaves: loss, l1, cl, ...)
    g, total, l1 = grads(state.params)
    if released:
        assert all(n == 0.0 for n in norms(g))  # exactly zero, every leaf
    else:
        assert all(n > 0.0 for n in norms(g))   # every SR parameter feels L_CL
    # Either way the total SR gradient is L1's plus alpha times this one.
    for t, a, b in zip(jax.tree.leaves(total), jax.tree.leaves(l1), jax.tree.leaves(g)):
        np.testing.assert_allclose(np.asarray(t), np.asarray(a + obj.alpha * b), rtol=1e-4,
                                   atol=1e-9)


def test_no_cross_gradients_between_the_two_updates():
    config = tiny()
    _, _, obj, state, batch, _ = setup(config)
    hr, lr, pos, neg = inputs(state, batch)
    e, stats = state.aux["embed"].params, state.buffers["embed_batch_stats"]
    # L_CLD: gradient for the embedding, none for the SR network.
    g_sr, g_e = jax.jit(jax.grad(lambda p, q: obj.embedding(p, q, stats, lr, pos, neg)[0],
                                 argnums=(0, 1)))(state.params, e)
    assert all(n == 0.0 for n in norms(g_sr)) and sum(norms(g_e)) > 0
    # L1 + alpha L_CL: gradient for the SR network, none for the (frozen) embedding.
    g_sr, g_e = jax.jit(jax.grad(lambda p, q: obj.sr(p, q, stats, lr, hr, pos, neg)[0],
                                 argnums=(0, 1)))(state.params, e)
    assert all(n == 0.0 for n in norms(g_e)) and all(n > 0 for n in norms(g_sr))


def test_step_is_embedding_update_then_sr_update_and_compiles_once():
    from jaxsr.methods.pcl import train as pcl
    from jaxsr.train import mesh as mesh_lib
    from jaxsr.train.state import apply_aux_update, apply_update
    from jaxsr.train.steps import compile_step
    import optax
    config = tiny()
    model, net, obj, state, batch, _ = setup(config)
    # SGD: updates linear in the gradients, so the comparison is at float-eps level (Adam turns
    # summation noise in near-zero gradient entries into lr-sized steps).
    sr_tx, e_tx = optax.sgd(0.1), optax.sgd(0.1)
    state = state.replace(opt_state=sr_tx.init(state.params), aux={"embed": state.aux[
        "embed"].replace(opt_state=e_tx.init(state.aux["embed"].params))})
    hr, lr, pos, neg = inputs(state, batch)
    # By hand, from the public objectives: embedding first, then SR through the new embedding.
    (cld, (stats, _, _)), g_e = jax.jit(jax.value_and_grad(obj.embedding, argnums=1,
                                                           has_aux=True))(
        state.params, state.aux["embed"].params, state.buffers["embed_batch_stats"], lr, pos,
        neg)
    want = apply_aux_update(state, "embed", g_e, cld, e_tx)
    want = want.replace(buffers={"embed_batch_stats": stats})
    (loss, _), g = jax.jit(jax.value_and_grad(obj.sr, has_aux=True))(
        want.params, want.aux["embed"].params, stats, lr, hr, pos, neg)
    want = apply_update(want, g, loss, sr_tx, 0.0)

    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    rep = mesh_lib.replicated(mesh)
    step = compile_step(pcl.make_step(model, net, config, sr_tx, e_tx), mesh, rep)
    got, metrics = step(jax.device_put(jax.tree.map(jnp.copy, state), rep), batch)  # donated
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)
    assert float(metrics["cld"]) == pytest.approx(float(cld), rel=1e-5)
    assert int(got.step) == 1
    # No recompiles after step 1: new data, new step keys, same program.
    rng = np.random.default_rng(0)
    for _ in range(3):
        got, metrics = step(got, {"hr": rng.integers(0, 256, batch["hr"].shape, np.uint8)})
    assert step._cache_size() == 1
    assert np.isfinite(float(metrics["loss"])) and int(got.step) == 4


@pytest.mark.slow  # two subprocesses that each compile the PCL step
def test_eight_simulated_devices_equal_one(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    outs = {}
    procs = {n: subprocess.Popen([sys.executable, __file__, str(tmp_path / f"{n}.npz"), str(n)],
                                 env=env, cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for n in (1, 8)}
    for n, p in procs.items():
        outs[n], _ = p.communicate(timeout=300)
        assert p.returncode == 0, outs[n][-3000:]
    assert "devices 8" in outs[8]
    one, eight = np.load(tmp_path / "1.npz"), np.load(tmp_path / "8.npz")
    assert len(one.files) > 10
    for k in one.files:
        np.testing.assert_allclose(one[k], eight[k], rtol=1e-4, atol=1e-6, err_msg=k)


def _worker(out: str, devices: int):
    """Two PCL steps (SGD for both networks: linear in the gradient, so only float-eps
    summation noise) on a batch of 8 sharded over `devices`; saves every state leaf."""
    from jaxsr.methods.pcl import train as pcl
    from jaxsr.train import mesh as mesh_lib
    from jaxsr.train.steps import compile_step
    config = tiny(**{"optim.name": "sgd", "optim.lr": 0.05, "data.batch_size": 8,
                     "train.loss": "charbonnier"})
    model, net, _, state, batch, _ = setup(config)
    import optax
    sr_tx, e_tx = optax.sgd(0.05), optax.sgd(0.01)
    state = pcl.init_state(config, model, net, sr_tx, e_tx)
    state = state.replace(params={**state.params, "residual_gain": jnp.full((3,), 0.3)})
    hr = np.concatenate([batch["hr"], batch["hr"][:, ::-1]])
    mesh = mesh_lib.make_mesh(jax.devices()[:devices])
    rep = mesh_lib.replicated(mesh)
    step = compile_step(pcl.make_step(model, net, config, sr_tx, e_tx), mesh, rep)
    state = jax.device_put(state, rep)
    for i in range(2):
        state, metrics = step(state, mesh_lib.put_global_batch({"hr": np.roll(hr, i, 0)}, mesh))
    leaves = jax.tree.leaves(jax.device_get(state))
    np.savez(out, **{f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)},
             loss=np.asarray(metrics["loss"]), cld=np.asarray(metrics["cld"]))
    print("devices", mesh.devices.size, "loss", float(metrics["loss"]))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _worker(sys.argv[1], int(sys.argv[2]))
