"""config.model.residual_init: both starts equal the identity/bicubic baseline exactly; only
'zero_tail' gives the network's weights a gradient (and a unit gain) from the start."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxsr.imresize import imresize
from jaxsr.model_factory import build_model, init_params


def _model(init, name="edsr", scale=2, kwargs=None):
    return build_model(ml_collections.ConfigDict({
        "name": name, "scale": scale, "dtype": "float32", "global_residual": True,
        "residual_init": init, "kwargs": kwargs or {"num_blocks": 1, "features": 8}}))


@pytest.mark.parametrize("init", ["rezero", "zero_tail"])
def test_start_equals_the_baseline(init):
    model = _model(init)
    params = init_params(model, jax.random.key(0), 12)
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 12, 10, 3)), jnp.float32)
    y = model.apply({"params": params}, x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(imresize(x, output_shape=(24, 20))))
    gain = np.asarray(params["residual_gain"])
    assert (gain == (1.0 if init == "zero_tail" else 0.0)).all()


def test_only_zero_tail_trains_the_network_from_the_start():
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, 12, 12, 3)), jnp.float32)
    t = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (2, 24, 24, 3)), jnp.float32)
    norms = {}
    for init in ("rezero", "zero_tail"):
        model = _model(init)
        params = init_params(model, jax.random.key(0), 12)
        g = jax.grad(lambda p: jnp.mean(jnp.abs(model.apply({"params": p}, x) - t)))(params)
        norms[init] = float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g["net"]))))
        if init == "zero_tail":  # the zeroed tail gets the gradient; layers below it do not yet
            assert float(jnp.abs(g["net"]["tail"]["kernel"]).max()) > 0
    assert norms["rezero"] == 0.0 and norms["zero_tail"] > 0


@pytest.mark.parametrize("name, scale, kwargs", [
    ("rcan", 3, {"num_groups": 1, "num_blocks": 1, "features": 8, "reduction": 4}),
    ("unet", 1, {"width": 8, "depth": 2, "residual": False})])
def test_other_networks_start_at_the_baseline(name, scale, kwargs):
    model = _model("zero_tail", name, scale, kwargs)
    params = init_params(model, jax.random.key(0), 16)
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 3)), jnp.float32)
    base = x if scale == 1 else imresize(x, output_shape=(16 * scale, 16 * scale))
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), np.asarray(base),
                               atol=1e-6)


def test_a_network_that_adds_its_input_is_refused_and_bad_names():
    kw = {"width": 8, "enc_blocks": (1,), "middle_blocks": 1, "dec_blocks": (1,)}
    with pytest.raises(ValueError, match="NAFNet's output still depends on its input"):
        init_params(_model("zero_tail", "nafnet", 1, kw), jax.random.key(0), 16)
    with pytest.raises(ValueError, match="residual_init='zeros' is unknown"):
        _model("zeros")


def test_scan_blocks_switch_reaches_models_that_have_it():
    cfg = ml_collections.ConfigDict({"name": "edsr", "scale": 2, "dtype": "float32",
                                     "global_residual": True, "scan_blocks": False,
                                     "kwargs": {"num_blocks": 2, "features": 8}})
    assert build_model(cfg).net.scan_blocks is False
    cfg.scan_blocks = True
    assert build_model(cfg).net.scan_blocks is True
    cfg.name, cfg.kwargs = "unet", {"width": 8, "depth": 2}   # no repeated blocks: ignored
    assert build_model(cfg).net.width == 8
