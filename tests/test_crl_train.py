"""CRL-SR's step and state: the deployed parameter tree holds only E_l + SR decoder; each
ablation switch removes its networks; gradients reach the networks each term should train;
the jitted step compiles once."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.config_util import load_config_file
from jaxsr.methods.crl import train as crl
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.steps import compile_step

REPO = pathlib.Path(__file__).resolve().parents[1]
AUX = {"lr_head", "details_remover", "extractor", "rec_decoder"}


def setup(variant="tiny"):
    config = load_config_file(str(REPO / "configs" / "crl.py"), variant)
    terms, nets = crl.Terms.of(config), crl.build_networks(config)
    tx, aux_tx = crl.make_optimizers(config)
    state = crl.init_state(config, nets, terms, tx, aux_tx)
    return config, terms, nets, tx, aux_tx, state


def batch(config, seed=0):
    p, b = config.data.hr_patch, config.data.batch_size
    return {"hr": np.random.default_rng(seed).integers(0, 256, (b, p, p, 3), dtype=np.uint8)}


def _keys(tree, prefix=""):
    out = set()
    for k, v in tree.items():
        out.add(prefix + k)
        if hasattr(v, "items"):
            out |= _keys(v, prefix + k + "/")
    return out


def test_deployed_tree_is_only_degradation_remover_and_sr_decoder():
    config, terms, nets, *_, state = setup()
    top = set(state.params)
    assert top == {"net", "residual_gain"}            # the factory's bicubic global residual
    assert set(state.params["net"]) == {"encoder", "decoder"}
    names = _keys(state.params)
    assert not any(a in n for n in names for a in AUX | {"stem", "fc1", "fc2"})
    assert set(state.aux) == AUX
    # The deployed module built from config.model alone has exactly this tree.
    from jaxsr.model_factory import build_model
    model = build_model(config.model)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 12, 12, 3))))
    assert jax.tree.structure(shapes["params"]) == jax.tree.structure(state.params)


@pytest.mark.parametrize("variant,aux", [
    ("tiny", AUX), ("tiny,no_bc", {"lr_head", "extractor", "rec_decoder"}),
    ("tiny,no_srnce", {"lr_head", "details_remover"}),
    ("tiny,no_rec", {"lr_head", "details_remover", "extractor"}), ("tiny,l1", set())])
def test_switches_remove_their_networks(variant, aux):
    config = load_config_file(str(REPO / "configs" / "crl.py"), variant)
    assert set(crl.Terms.of(config).aux_names) == aux


def _losses(variant, **overrides):
    config, terms, nets, *_, state = setup(variant)
    for k, v in overrides.items():
        config.crl[k] = v
    terms = crl.Terms.of(config)
    hr = jnp.asarray(batch(config)["hr"]).astype(jnp.float32) / 255
    lr = crl.degrade_batch(jax.random.key(0), hr, crl.level_spec(config, "train"), nets.scale)
    pos = crl.sample_positions(jax.random.key(1), lr.shape[1], lr.shape[2], 16)
    aux = {n: a.params for n, a in state.aux.items()}
    # Kick the ReZero gain so the SR output depends on the network.
    params = {**state.params, "residual_gain": jnp.ones(3)}
    fn = lambda p, a: crl.crl_losses(nets, terms, config.crl, p, a, lr, hr, pos)
    (_, parts), (g, ga) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(params, aux)
    return parts, g, ga, (nets, terms, config, params, aux, lr, hr, pos)


def _norm(tree):
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_each_term_trains_the_networks_it_should():
    parts, g, ga, ctx = _losses("tiny")
    assert set(parts) == {"l1", "l_bc", "l_srnce", "l_rec"}
    assert all(np.isfinite(float(v)) for v in parts.values())
    assert all(_norm(ga[n]) > 0 for n in AUX)
    nets, terms, config, params, aux, lr, hr, pos = ctx
    # Only L_rec reaches D_rec; only L_bc reaches E_h.
    only = lambda **kw: crl.Terms(**{**dict(bc=False, srnce=False, rec=False, l_bc=0.0,
                                            l_nce=0.0, l_rec=0.0), **kw})
    def grads(t, argnum):
        fn = lambda p, a: crl.crl_losses(nets, t, config.crl, p, a, lr, hr, pos)[0]
        return jax.grad(fn, argnums=argnum)(params, aux)
    bc_only = grads(only(bc=True, l_bc=1.0), 1)
    assert _norm(bc_only["details_remover"]) > 0 and _norm(bc_only["lr_head"]) > 0
    # L_bc reaches the deployed E_l but not the SR decoder.
    g_bc = grads(only(bc=True, l_bc=1.0), 0)
    g_l1 = grads(only(), 0)
    assert _norm(jax.tree.map(lambda a, b: a - b, g_bc["net"]["encoder"],
                              g_l1["net"]["encoder"])) > 0
    np.testing.assert_allclose(_norm(g_bc["net"]["decoder"]), _norm(g_l1["net"]["decoder"]),
                               rtol=1e-6)
    # L_srnce: negatives are stop-gradient (config default) -> no gradient into lr_head.
    sr_only = grads(only(srnce=True, l_nce=1.0), 1)
    assert _norm(sr_only["lr_head"]) == 0 and _norm(sr_only["extractor"]) > 0


def test_step_compiles_once_and_updates_every_network():
    config, terms, nets, tx, aux_tx, state = setup()
    traces = []
    inner = crl.make_step(nets, terms, config, tx, aux_tx, crl.level_spec(config, "train"))

    def step(s, b):
        traces.append(1)
        return inner(s, b)
    mesh = mesh_lib.make_mesh()
    jitted = compile_step(step, mesh, mesh_lib.replicated(mesh))
    before = jax.tree.map(np.asarray, state)
    state = jax.device_put(state, mesh_lib.replicated(mesh))
    for i in range(3):
        state, metrics = jitted(state, mesh_lib.put_global_batch(batch(config, i), mesh))
    assert len(traces) == 1
    assert int(state.step) == 3 and int(state.nonfinite) == 0
    for name in AUX:
        assert int(state.aux[name].opt_state[0].count) == 3
        changed = jax.tree.map(lambda a, b: np.any(np.asarray(a) != b), state.aux[name].params,
                               before.aux[name].params)
        assert any(jax.tree.leaves(changed)), name
    assert set(metrics) >= {"loss", "l1", "l_bc", "l_srnce", "l_rec", "grad_norm"}
