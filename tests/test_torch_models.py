"""experiments/torch_models.py: the PyTorch reference networks of the benchmark's `compare` section
have jaxsr's parameter count and per-layer shapes for the same configuration, and - with the
weights carried over by experiments/convert_pytorch.py's `convert_state_dict` - jaxsr's outputs
(float32, 1e-4). Skipped without torch."""
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import traverse_util  # noqa: E402

from jaxsr import models  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import convert_pytorch  # noqa: E402
import torch_models  # noqa: E402

try:   # models with scanned (stacked) blocks; the converter may still write block_i names
    from jaxsr.models.stacking import params_for
except ImportError:   # unrolled layout only
    params_for = lambda model, variables: variables  # noqa: E731


def convert(torch_model, jax_model):
    """convert_pytorch's Flax variables for `torch_model`, in the layout `jax_model` expects."""
    variables = convert_pytorch.convert_state_dict(torch_model.state_dict(),
                                                   torch_models.arch_of(torch_model), 1.0)
    return params_for(jax_model, variables)

# Published parameter counts (jaxsr/models docstrings; official models minus frozen MeanShift).
PRESET_COUNTS = [("edsr_baseline", 2, 1_369_859), ("edsr_baseline", 4, 1_517_571),
                 ("rcan", 2, 15_444_643), ("nafnet_w32", 1, 17_111_907)]

TINY = [
    ("edsr", 2, dict(features=8, num_blocks=2)),
    ("edsr", 3, dict(features=8, num_blocks=1, res_scale=0.1)),
    ("edsr", 4, dict(features=8, num_blocks=1)),
    ("rcan", 2, dict(features=16, num_groups=2, num_blocks=2, reduction=4)),
    ("nafnet", 1, dict(width=8, enc_blocks=(1, 2), middle_blocks=1, dec_blocks=(1, 1))),
]


def jax_param_count(name, scale, **kw):
    model = models.create(name, scale=scale, **kw)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return models.count_params(shapes["params"]), shapes["params"], model


@pytest.mark.parametrize("name,scale,count", PRESET_COUNTS)
def test_preset_param_counts(name, scale, count):
    torch_model = torch_models.create(name, scale=scale)
    assert torch_models.count_params(torch_model) == count
    assert jax_param_count(name, scale)[0] == count


@pytest.mark.parametrize("name,scale,kw", TINY)
def test_tiny_param_counts_and_layer_shapes(name, scale, kw):
    torch_model = torch_models.create(name, scale=scale, **kw)
    n, shapes, jax_model = jax_param_count(name, scale, **kw)
    assert torch_models.count_params(torch_model) == n
    # Per layer: the converted PyTorch state dict has exactly the jaxsr tree's keys and shapes.
    variables = convert(torch_model, jax_model)
    got = {k: v.shape for k, v in traverse_util.flatten_dict(variables["params"], sep="/").items()}
    want = {k: v.shape for k, v in traverse_util.flatten_dict(shapes, sep="/").items()}
    assert got == want


def _randomize(module, seed):
    """Non-trivial values everywhere (NAFNet's beta/gamma start at zero, LayerNorm at 1/0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("beta", "gamma")) or ".norm" in name:
                base = 1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") else 0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _outputs(name, scale, kw, hw=(13, 11), seed=0):
    torch_model = torch_models.create(name, scale=scale, **kw).eval()
    torch.manual_seed(seed)
    torch_model.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
    _randomize(torch_model, seed)
    jax_model = models.create(name, scale=scale, **kw)
    variables = convert(torch_model, jax_model)
    x = np.random.default_rng(seed).random((2, *hw, 3), dtype=np.float32)
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    got = np.asarray(jax.jit(jax_model.apply)(variables, jnp.asarray(x)))
    return got, want


@pytest.mark.parametrize("name,scale,kw", TINY)
def test_tiny_outputs_match_jaxsr(name, scale, kw):
    got, want = _outputs(name, scale, kw)
    assert got.shape == want.shape == (2, 13 * scale, 11 * scale, 3)
    assert np.abs(want).max() > 0.1   # a real signal, not all zeros
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_edsr_baseline_outputs_match_jaxsr():
    got, want = _outputs("edsr_baseline", 2, {}, hw=(12, 10))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name,scale", [("rcan", 2), ("nafnet_w32", 1)])
def test_full_presets_outputs_match_jaxsr(name, scale):
    got, want = _outputs(name, scale, {}, hw=(16, 16))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_create_errors_name_the_fix():
    with pytest.raises(ValueError, match="edsr_baseline"):
        torch_models.create("unet")
    with pytest.raises(TypeError, match="num_blocks"):
        torch_models.create("edsr", num_block=3)
    with pytest.raises(ValueError, match="scale"):
        torch_models.create("nafnet_w32", scale=2)
