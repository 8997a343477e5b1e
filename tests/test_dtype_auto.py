"""config.model.dtype='auto': bfloat16 compute on GPU/TPU, float32 on CPU, for training,
inference and export (one artifact choosing by platform, its dtypes stated in the metadata)."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxsr import config_blocks
from jaxsr import export as ex
from jaxsr.checkpoint import Checkpointer
from jaxsr.model_factory import build_model, build_side_model, resolve_dtype
from jaxsr.run_config import make_forward
from model_helpers import random_params  # noqa: E402  (tests/ is on sys.path)

KWARGS = {"num_blocks": 1, "features": 8}


def _cfg(dtype, scale=2):
    return ml_collections.ConfigDict({"name": "edsr", "scale": scale, "dtype": dtype,
                                      "global_residual": True, "kwargs": dict(KWARGS)})


@pytest.mark.parametrize("platform, want", [
    ("cpu", jnp.float32), ("gpu", jnp.bfloat16), ("cuda", jnp.bfloat16),
    ("rocm", jnp.bfloat16), ("tpu", jnp.bfloat16), ("TPU", jnp.bfloat16)])
def test_auto_resolves_per_platform(platform, want):
    assert resolve_dtype("auto", platform) == want


def test_explicit_names_and_unknown_name():
    assert resolve_dtype("float32", "tpu") == jnp.float32
    assert resolve_dtype("bfloat16", "cpu") == jnp.bfloat16
    with pytest.raises(ValueError, match=r"config.model.dtype='fp8' is unknown; use one of "
                                         r"\['auto', 'float32', 'bfloat16', 'float16'\]"):
        resolve_dtype("fp8")
    with pytest.raises(ValueError, match="side network 'conv_encoder': dtype='fp8'"):
        build_side_model({"name": "conv_encoder", "dtype": "fp8"})


def test_every_method_config_defaults_to_auto():
    assert config_blocks.model().dtype == "auto"
    import importlib
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.get_config().model.dtype == "auto", path.name


def test_auto_on_an_accelerator_computes_bf16_with_float32_params_and_output():
    """The model built for 'tpu' computes in bfloat16 (outputs differ from float32 by bf16
    rounding, not more); its parameters and its output are float32, so losses are float32."""
    f32, bf16 = build_model(_cfg("auto"), "cpu"), build_model(_cfg("auto"), "tpu")
    assert f32.net.dtype == jnp.float32 and bf16.net.dtype == jnp.bfloat16
    params = random_params(f32, 1)
    params_b = bf16.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(params_b)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params_b))
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 12, 10, 3)), jnp.float32)
    y32 = f32.apply({"params": params}, x)
    y16 = bf16.apply({"params": params}, x)
    assert y32.dtype == jnp.float32 and y16.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(y32 - y16)))
    assert 0 < err < 0.05, err  # bf16 has an 8-bit mantissa: ~0.4% relative per op


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("auto_run")
    config = ml_collections.ConfigDict({
        "method": "supervised", "model": _cfg("auto").to_dict(),
        "data": {"sample": "clean_hr", "train_dir": ""},
        "train": {"ema_decay": 0.99, "best_metric": "psnr_y"}, "eval": {"tile": 32}})
    model = build_model(_cfg("float32"))
    params = random_params(model, 2)
    ckpt = Checkpointer(path, async_save=False)
    ckpt.save(3, {"params": params, "ema_params": params}, metrics={}, config=config)
    ckpt.close()
    return path, model, params


def test_export_auto_states_dtypes_and_runs_float32_on_cpu(auto_run, tmp_path):
    workdir, model, params = auto_run
    path = ex.export_run(workdir, tmp_path / "all", platforms=["cpu", "cuda", "tpu"])
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["compute_dtype"] == {"cpu": "float32", "cuda": "bfloat16", "tpu": "bfloat16"}
    loaded = ex.load(path)
    # The bf16 program is in the artifact beside the float32 one...
    text = loaded.exported.mlir_module()
    assert "bf16" in text and "f32" in text
    # ...and on this CPU the float32 one runs: equal to the float32 model.
    x = np.random.default_rng(1).uniform(0, 1, (1, 11, 9, 3)).astype(np.float32)
    want = np.asarray(jax.jit(make_forward(model))(params, x))
    np.testing.assert_allclose(np.asarray(loaded(x)), want, atol=1e-5)


def test_export_dtype_override(auto_run, tmp_path):
    workdir, model, params = auto_run
    path = ex.export_run(workdir, tmp_path / "bf16", platforms=["cpu"], dtype="bfloat16")
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["compute_dtype"] == {"cpu": "bfloat16"}
    x = np.random.default_rng(1).uniform(0, 1, (1, 11, 9, 3)).astype(np.float32)
    want = np.asarray(jax.jit(make_forward(model))(params, x))
    err = np.abs(np.asarray(ex.load(path)(x)) - want).max()
    assert 0 < err < 0.05, err
    with pytest.raises(ValueError, match="--dtype='int8' is unknown"):
        ex.export_run(workdir, tmp_path / "bad", platforms=["cpu"], dtype="int8")
    assert not (tmp_path / "bad").exists()
