"""experiments/flops.py: conv/dot MAC counts against hand counts (a tiny conv net, EDSR, scanned
blocks, grouped and strided convs, Dense), train = 3 x forward, and the peak-FLOP/s table."""
import pathlib
import sys

import flax.linen as nn
import jax.numpy as jnp
import pytest

from jaxsr import models

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import flops  # noqa: E402


class TinyNet(nn.Module):
    """conv3x3 3->4, relu, depthwise 3x3 (groups 4), conv 2x2 stride 2 4->8, dense 8->5."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
        x = nn.Conv(4, (3, 3), padding="SAME", feature_group_count=4)(x)
        x = nn.Conv(8, (2, 2), strides=(2, 2), padding="VALID")(x)
        x = jnp.tanh(x)   # elementwise: not counted
        return nn.Dense(5)(x)


def test_tiny_conv_net_hand_count():
    b, h, w = 2, 10, 6
    macs = (b * h * w * 4 * 9 * 3            # conv 3->4, 3x3, full resolution
            + b * h * w * 4 * 9 * 1          # depthwise: one input channel per output
            + b * 5 * 3 * 8 * 4 * 4          # 2x2 stride 2 -> (5, 3), 4 inputs x 2x2 taps
            + b * 5 * 3 * 5 * 8)             # dense 8 -> 5 per pixel
    assert flops.forward_flops(TinyNet(), (b, h, w, 3)) == 2 * macs
    assert flops.train_step_flops(TinyNet(), (b, h, w, 3)) == 3 * 2 * macs


def edsr_macs(b, h, w, f, n, scale):
    """EDSR by hand at LR size h x w (x2: one upsampler conv f -> 4f at LR size)."""
    assert scale == 2
    px = b * h * w
    return (px * 9 * 3 * f + n * 2 * px * 9 * f * f + px * 9 * f * f + px * 9 * f * 4 * f
            + 4 * px * 9 * f * 3)


@pytest.mark.parametrize("scan", [True, False])
def test_edsr_hand_count_scanned_or_unrolled(scan):
    kw = dict(features=8, num_blocks=3)
    try:
        model = models.create("edsr", scale=2, scan_blocks=scan, **kw)
    except TypeError:   # a jaxsr without scanned blocks
        if scan:
            pytest.skip("this jaxsr has no scan_blocks")
        model = models.create("edsr", scale=2, **kw)
    assert flops.forward_flops(model, (2, 12, 10, 3)) == 2 * edsr_macs(2, 12, 10, 8, 3, 2)


def test_edsr_baseline_preset_is_gflops_scale():
    # 1.37M parameters, almost all in 3x3 convs at LR resolution: ~2 * params FLOPs per LR pixel.
    fwd = flops.forward_flops(models.create("edsr_baseline", scale=2), (1, 48, 48, 3))
    assert fwd == 2 * edsr_macs(1, 48, 48, 64, 16, 2)
    assert 2 * 1.2e6 * 48 * 48 < fwd < 2 * 1.4e6 * 48 * 48


def test_peak_table_and_mfu():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "float32") == 495e12   # TF32
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "fp32") == 67e12
    assert flops.peak_flops("NVIDIA H200", "bfloat16") == 989e12
    assert flops.peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert flops.peak_flops("TPU v4", "bfloat16") == 275e12
    assert flops.peak_flops("TPU v5 lite", "bfloat16") == 197e12
    assert flops.peak_flops("TPU v5p", "bfloat16") == 459e12
    assert flops.peak_flops("TPU v6 lite", "bfloat16") == 918e12
    assert flops.peak_flops("cpu", "float32") is None
    assert flops.peak_flops("cpu", "float32", override_tflops=2.5) == 2.5e12
    assert flops.mfu(100e12, 989e12) == pytest.approx(100 / 989)
    assert flops.mfu(1e9, None) is None and flops.mfu(None, 1e12) is None


@pytest.mark.parametrize("name,scale,kw", [
    ("edsr", 2, dict(features=8, num_blocks=2)),
    ("rcan", 2, dict(features=16, num_groups=2, num_blocks=2, reduction=4)),
    ("nafnet", 1, dict(width=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1)))])
def test_xla_cost_analysis_cross_check(name, scale, kw):
    """XLA's count of the same forward is close: it adds elementwise work and skips taps in the
    zero padding (a 24x20 input: up to ~15% of a 3x3 conv's taps), and counts scanned blocks
    only after unrolling."""
    model = models.create(name, scale=scale, **kw)
    xla = flops.xla_forward_flops(model, (2, 24, 20, 3))
    if xla is None:
        pytest.skip("no XLA cost analysis on this backend")
    ours = flops.forward_flops(model, (2, 24, 20, 3))
    assert 0.8 * ours < xla < 1.25 * ours
