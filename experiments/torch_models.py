"""PyTorch reference networks for the jaxsr-vs-PyTorch benchmark (`benchmark.py --section=compare`).

Written from the papers and jaxsr's own definitions (jaxsr/models/edsr.py, rcan.py, nafnet.py),
layer for layer, so that the same configuration has the same parameters and, with the weights
copied, the same outputs (tests/test_torch_models.py). Parameter names follow the usual PyTorch
layouts that `experiments/convert_pytorch.py` reads: BasicSR's for EDSR and RCAN (conv_first,
body.N..., conv_after_body, upsample.{0,2}, conv_last), megvii-research/NAFNet's for NAFNet.

  EDSR   (Lim et al. 2017): mean shift, conv 3x3, N x [conv-ReLU-conv, * res_scale, + x], conv,
         + head output, upsampler (conv to F r^2 + pixel shuffle per x2/x3 stage), conv 3x3 -> 3,
         mean shift back. Images in [0, 1] (rgb_range 1), DIV2K mean as a non-trainable buffer.
  RCAN   (Zhang et al. 2018): as EDSR with G residual groups of B RCABs (conv-ReLU-conv-channel
         attention (avg pool, 1x1 F -> F/r, ReLU, 1x1 -> F, sigmoid) + x), a conv and a skip each.
  NAFNet (Chen et al. 2022): U-net of NAFBlocks (LayerNorm2d, 1x1 conv to 2c, 3x3 depthwise,
         SimpleGate, simplified channel attention, 1x1 conv, * beta + x; LayerNorm2d, 1x1 to 2c,
         SimpleGate, 1x1, * gamma + y), 2x2 stride-2 downsampling convs, 1x1 (no bias) + pixel
         shuffle upsampling, + input. The input is zero-padded at the bottom/right to a multiple
         of 2**levels and the output cropped back, as jaxsr and the official code do.

`create(name, scale=..., **overrides)` takes jaxsr registry names (edsr, edsr_baseline,
edsr_large, rcan, nafnet, nafnet_w32, nafnet_w64, nafnet_sidd_w32, nafnet_sidd_w64) with the same
preset fields (jaxsr's dtype, param_dtype, remat and scan_blocks are ignored). All models take NCHW float tensors in [0, 1] (any memory format) and return NCHW.
Needs torch (`pip install jaxsr[bench]` or `pip install torch`); not a jaxsr dependency.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)   # = jaxsr.models.common.DIV2K_RGB_MEAN


def conv(cin: int, cout: int, k: int, *, bias: bool = True, groups: int = 1, stride: int = 1,
         padding: int | None = None) -> nn.Conv2d:
    """Conv2d with 'same' padding k // 2 (jaxsr's `common.conv`)."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding,
                     bias=bias, groups=groups)


def upsampler(features: int, scale: int) -> nn.Sequential:
    """conv 3x3 to F r^2 then PixelShuffle(r) per stage: x2, x3 one stage, x4 two x2 stages,
    x1 none (indices 0, 2 = the two convs, as BasicSR's `Upsample`)."""
    if scale == 1:
        stages = []
    elif scale == 3:
        stages = [3]
    elif scale in (2, 4, 8):
        stages = [2] * {2: 1, 4: 2, 8: 3}[scale]
    else:
        raise ValueError(f"upsampler: scale={scale!r} not supported; use 1, 2, 3, 4 or 8")
    layers: list[nn.Module] = []
    for r in stages:
        layers += [conv(features, features * r * r, 3), nn.PixelShuffle(r)]
    return nn.Sequential(*layers)


class _MeanShift(nn.Module):
    def __init__(self):
        super().__init__()
        # Not persistent: a constant, not a parameter or a state_dict entry (as in jaxsr).
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1),
                             persistent=False)


class _HeadBodyTail(_MeanShift):
    """EDSR/RCAN layout: conv_first -> body -> conv_after_body (+ head skip) -> upsample ->
    conv_last, the DIV2K mean subtracted before and added after."""

    def __init__(self, scale: int, features: int, num_channels: int, body: nn.Module):
        super().__init__()
        self.conv_first = conv(num_channels, features, 3)
        self.body = body
        self.conv_after_body = conv(features, features, 3)
        self.upsample = upsampler(features, scale)
        self.conv_last = conv(features, num_channels, 3)

    def forward(self, x):
        x = self.conv_first(x - self.mean)
        y = self.conv_after_body(self.body(x)) + x
        return self.conv_last(self.upsample(y)) + self.mean


# ----------------------------------------------------------------------------- EDSR

class ResBlock(nn.Module):
    """x + res_scale * conv2(relu(conv1(x)))."""

    def __init__(self, features: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1 = conv(features, features, 3)
        self.conv2 = conv(features, features, 3)
        self.res_scale = res_scale

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        return x + (y * self.res_scale if self.res_scale != 1.0 else y)


class EDSR(_HeadBodyTail):
    def __init__(self, scale: int = 2, features: int = 64, num_blocks: int = 16,
                 res_scale: float = 1.0, num_channels: int = 3):
        super().__init__(scale, features, num_channels, nn.Sequential(
            *[ResBlock(features, res_scale) for _ in range(num_blocks)]))


# ----------------------------------------------------------------------------- RCAN

class ChannelAttention(nn.Module):
    def __init__(self, features: int, reduction: int = 16):
        super().__init__()
        mid = max(features // reduction, 1)
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv(features, mid, 1), nn.ReLU(),
                                       conv(mid, features, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.attention(x)


class RCAB(nn.Module):
    def __init__(self, features: int, reduction: int = 16):
        super().__init__()
        self.rcab = nn.Sequential(conv(features, features, 3), nn.ReLU(),
                                  conv(features, features, 3),
                                  ChannelAttention(features, reduction))

    def forward(self, x):
        return x + self.rcab(x)


class ResidualGroup(nn.Module):
    def __init__(self, features: int, num_blocks: int, reduction: int):
        super().__init__()
        self.residual_group = nn.Sequential(*[RCAB(features, reduction)
                                              for _ in range(num_blocks)])
        self.conv = conv(features, features, 3)

    def forward(self, x):
        return x + self.conv(self.residual_group(x))


class RCAN(_HeadBodyTail):
    def __init__(self, scale: int = 2, features: int = 64, num_groups: int = 10,
                 num_blocks: int = 20, reduction: int = 16, num_channels: int = 3):
        super().__init__(scale, features, num_channels, nn.Sequential(
            *[ResidualGroup(features, num_blocks, reduction) for _ in range(num_groups)]))


# ----------------------------------------------------------------------------- NAFNet

class LayerNorm2d(nn.Module):
    """LayerNorm over channels per pixel (eps 1e-6), statistics in float32 (as jaxsr)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        mu = xf.mean(1, keepdim=True)
        var = (xf - mu).square().mean(1, keepdim=True)
        y = (xf - mu) * torch.rsqrt(var + self.eps)
        y = y * self.weight.float().view(1, -1, 1, 1) + self.bias.float().view(1, -1, 1, 1)
        return y.to(x.dtype)


def simple_gate(x):
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFBlock(nn.Module):
    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw, ffn = c * dw_expand, c * ffn_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = conv(c, dw, 1)
        self.conv2 = conv(dw, dw, 3, groups=dw)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv(dw // 2, dw // 2, 1))
        self.conv3 = conv(dw // 2, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.norm2 = LayerNorm2d(c)
        self.conv4 = conv(c, ffn, 1)
        self.conv5 = conv(ffn // 2, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp):
        x = simple_gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta.to(x.dtype)
        x = self.conv5(simple_gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma.to(x.dtype)


class NAFNet(nn.Module):
    def __init__(self, scale: int = 1, width: int = 32, enc_blocks: Sequence[int] = (1, 1, 1, 28),
                 middle_blocks: int = 1, dec_blocks: Sequence[int] = (1, 1, 1, 1),
                 dw_expand: int = 2, ffn_expand: int = 2, num_channels: int = 3):
        super().__init__()
        if scale != 1:
            raise ValueError(f"NAFNet is a restoration model; got scale={scale!r}, use 1")
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"NAFNet: enc_blocks {tuple(enc_blocks)} and dec_blocks "
                             f"{tuple(dec_blocks)} must have the same length")
        blk = lambda ch, n: nn.Sequential(*[NAFBlock(ch, dw_expand, ffn_expand)  # noqa: E731
                                            for _ in range(n)])
        self.intro = conv(num_channels, width, 3)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n in enc_blocks:
            self.encoders.append(blk(ch, n))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.middle_blks = blk(ch, middle_blocks)
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(conv(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(blk(ch, n))
        self.ending = conv(width, num_channels, 3)
        self.pad_to = 2 ** len(enc_blocks)

    def forward(self, x):
        h, w = x.shape[-2:]
        inp = F.pad(x, (0, (-w) % self.pad_to, 0, (-h) % self.pad_to))
        y = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            y = enc(y)
            skips.append(y)
            y = down(y)
        y = self.middle_blks(y)
        for up, dec, skip in zip(self.ups, self.decoders, skips[::-1]):
            y = dec(up(y) + skip)
        out = self.ending(y) + inp
        return out[..., :h, :w]


# ----------------------------------------------------------------------------- registry

_NAF_GOPRO = dict(enc_blocks=(1, 1, 1, 28), middle_blocks=1, dec_blocks=(1, 1, 1, 1))
_NAF_SIDD = dict(enc_blocks=(2, 2, 4, 8), middle_blocks=12, dec_blocks=(2, 2, 2, 2))
PRESETS: dict[str, tuple[type, dict[str, Any]]] = {
    "edsr": (EDSR, {}),
    "edsr_baseline": (EDSR, dict(features=64, num_blocks=16, res_scale=1.0)),
    "edsr_large": (EDSR, dict(features=256, num_blocks=32, res_scale=0.1)),
    "rcan": (RCAN, {}),
    "nafnet": (NAFNet, {}),
    "nafnet_w32": (NAFNet, dict(width=32, **_NAF_GOPRO)),
    "nafnet_w64": (NAFNet, dict(width=64, **_NAF_GOPRO)),
    "nafnet_sidd_w32": (NAFNet, dict(width=32, **_NAF_SIDD)),
    "nafnet_sidd_w64": (NAFNet, dict(width=64, **_NAF_SIDD)),
}

# convert_pytorch.convert_state_dict's `arch` for each class.
ARCH = {EDSR: "edsr", RCAN: "rcan", NAFNet: "nafnet"}


def names() -> list[str]:
    return sorted(PRESETS)


def create(name: str, scale: int = 2, **overrides: Any) -> nn.Module:
    """The PyTorch network of jaxsr's registry name `name` (preset fields, `overrides` on top).

    Fields jaxsr has and a PyTorch model does not need (dtype, param_dtype, remat, scan_blocks)
    are ignored;
    unknown fields raise TypeError naming them."""
    if name not in PRESETS:
        raise ValueError(f"no PyTorch reference for model {name!r}; use one of {names()}")
    cls, preset = PRESETS[name]
    overrides = {k: v for k, v in overrides.items()
                 if k not in ("dtype", "param_dtype", "remat", "scan_blocks")}
    kwargs = {**preset, **overrides}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return cls(scale=scale, **kwargs)
    except TypeError as e:
        raise TypeError(f"torch_models.create({name!r}): {e}; fields of {cls.__name__}: "
                        f"{list(cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount])}"
                        ) from None


def arch_of(module: nn.Module) -> str:
    """'edsr' | 'rcan' | 'nafnet': the `convert_pytorch.convert_state_dict` layout of `module`."""
    return ARCH[type(module)]


def count_params(module: nn.Module) -> int:
    """Trainable parameters (the mean shift is a buffer, as in jaxsr a constant)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
