"""Plain-numpy transcriptions of the official PyTorch EDSR / RCAN / NAFNet architectures.

They exist so that tests can check `experiments/convert_pytorch.py` against the *official* layouts
without installing PyTorch. Everything is in PyTorch's conventions: NCHW activations, OIHW conv
weights, `bias` vectors, and state-dict keys produced the way `torch.nn.Module.state_dict()`
produces them (a tiny `Module` class registers parameters and sub-modules in assignment order;
`Sequential` / `ModuleList` children are named "0", "1", ..., parameter-free layers such as ReLU
or PixelShuffle included, so indices like `body.0.body.2` or `tail.0.2` come out as in torch).

Transcribed (structure, module names and forward passes) from:
  EDSR-PyTorch (thstkdgus35/EDSR-PyTorch, src/model/common.py + edsr.py + rcan.py; the RCAN
      authors' code, yulunzhang/RCAN, uses the same names): `EDSR`, `RCAN`
  BasicSR (XPixelGroup/BasicSR, basicsr/archs/edsr_arch.py + rcan_arch.py + arch_util.py):
      `BasicSREDSR`, `BasicSRRCAN`
  megvii-research/NAFNet (basicsr/models/archs/NAFNet_arch.py + arch_util.LayerNorm2d): `NAFNet`

Primitives (`conv2d`, `pixel_shuffle`, `adaptive_avg_pool2d`, `layer_norm2d`) follow the
definitions in the PyTorch documentation and are checked against literal loop definitions in
tests/test_models.py (and against torch itself when it happens to be installed).

Parameters are stored in float32 like a torch state dict; running a forward pass on a float64
input computes in float64 (numpy type promotion), which makes these a high-precision reference.
Freshly built modules hold placeholder values (zeros for conv weights/biases, the official
constants for LayerNorm and MeanShift); `random_state_dict` draws test weights.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


# ----------------------------------------------------------------------------- functional ops
def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1,
           padding: int = 0, groups: int = 1) -> np.ndarray:
    """torch.nn.functional.conv2d: cross-correlation, symmetric zero padding, groups.

    x (N, C, H, W), weight (O, C // groups, kH, kW), bias (O,) -> (N, O, H', W') with
    H' = (H + 2 padding - kH) // stride + 1 and
    out[n, o, y, x] = bias[o] + sum_{c, i, j} in_pad[n, g*Cg + c, y*s + i, x*s + j] * w[o, c, i, j]
    where g = o // (O // groups), Cg = C // groups.
    """
    n, c, _, _ = x.shape
    o, cg, kh, kw = weight.shape
    if c != cg * groups or o % groups:
        raise ValueError(f"conv2d: input channels {c}, weight {weight.shape}, groups {groups}")
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    oh, ow = win.shape[2:4]
    win = win.reshape(n, groups, cg, oh, ow, kh, kw)
    w = weight.reshape(groups, o // groups, cg, kh, kw)
    out = np.einsum("ngchwij,gocij->ngohw", win, w, optimize=True).reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out


def pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    """torch.nn.PixelShuffle, literally: out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w].
    """
    n, crr, h, w = x.shape
    if crr % (r * r):
        raise ValueError(f"pixel_shuffle: {crr} channels not divisible by {r * r}")
    c = crr // (r * r)
    out = np.zeros((n, c, h * r, w * r), x.dtype)
    for ci in range(c):
        for i in range(r):
            for j in range(r):
                out[:, ci, i::r, j::r] = x[:, ci * r * r + i * r + j]
    return out


def adaptive_avg_pool2d(x: np.ndarray, output_size: int | tuple[int, int]) -> np.ndarray:
    """torch.nn.AdaptiveAvgPool2d: output cell (i, j) averages rows floor(i H / oh) ..
    ceil((i + 1) H / oh) - 1 and the same for columns (output_size 1 = global average pool)."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = x.shape
    out = np.zeros((n, c, oh, ow), x.dtype)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def layer_norm2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """NAFNet's LayerNorm2d (LayerNormFunction.forward): normalise over channels per pixel,
    biased variance, y = weight * (x - mu) / sqrt(var + eps) + bias."""
    mu = x.mean(1, keepdims=True)
    var = ((x - mu) ** 2).mean(1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return weight.reshape(1, -1, 1, 1) * y + bias.reshape(1, -1, 1, 1)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# ----------------------------------------------------------------------------- module system
class Parameter:
    """A named float32 array in a Module (torch.nn.Parameter)."""

    def __init__(self, data, requires_grad: bool = True):
        self.data = np.asarray(data, np.float32)
        self.requires_grad = requires_grad


class Module:
    """Minimal torch.nn.Module: parameters and children registered in assignment order;
    `state_dict()` keys are dotted paths, own parameters before children (as torch does)."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value  # re-assignment keeps the original position, like torch
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only reached when normal lookup fails
        d = self.__dict__
        if name in d.get("_parameters", {}):
            return d["_parameters"][name].data
        if name in d.get("_modules", {}):
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: p.data for k, p in self.named_parameters()}

    def load_state_dict(self, state_dict) -> "Module":
        """Strict load: exactly the same keys and shapes (copies, float32)."""
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(state_dict)), sorted(
            set(state_dict) - set(params))
        bad = [k for k in params if k in state_dict
               and tuple(np.shape(state_dict[k])) != params[k].data.shape]
        if missing or unexpected or bad:
            raise KeyError(f"load_state_dict: missing {missing}, unexpected {unexpected}, "
                           f"wrong shape {bad}")
        for k, p in params.items():
            p.data = np.array(state_dict[k], np.float32)
        return self

    def num_parameters(self) -> int:
        return sum(p.data.size for _, p in self.named_parameters())

    def __call__(self, *args):
        return self.forward(*args)


class Sequential(Module):
    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


class ModuleList(Module):
    def __init__(self):
        super().__init__()

    def append(self, m: Module) -> None:
        setattr(self, str(len(self._modules)), m)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)


class Conv2d(Module):
    """torch.nn.Conv2d(in, out, k, stride, padding, groups, bias): weight (out, in // groups, k, k).
    Placeholder values are zeros (np.zeros does not touch memory, so full-size models are cheap to
    build for parameter counts); load real/random ones with `load_state_dict`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = True):
        super().__init__()
        self.stride, self.padding, self.groups = stride, padding, groups
        self.weight = Parameter(np.zeros((out_channels, in_channels // groups, kernel_size,
                                          kernel_size), np.float32))
        if bias:
            self.bias = Parameter(np.zeros(out_channels, np.float32))
        else:
            object.__setattr__(self, "bias", None)

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


class ReLU(Module):
    def __init__(self, inplace: bool = False):
        super().__init__()

    def forward(self, x):
        return relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return sigmoid(x)


class Identity(Module):
    def forward(self, x):
        return x


class PixelShuffle(Module):
    def __init__(self, upscale_factor: int):
        super().__init__()
        self.r = upscale_factor

    def forward(self, x):
        return pixel_shuffle(x, self.r)


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return adaptive_avg_pool2d(x, self.output_size)


# ----------------------------------------------------------------------------- EDSR-PyTorch
def default_conv(in_channels, out_channels, kernel_size, bias=True):
    return Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(Conv2d):
    """common.MeanShift: frozen 1x1 conv, weight eye / std, bias sign * rgb_range * mean / std."""

    def __init__(self, rgb_range, rgb_mean=DIV2K_RGB_MEAN, rgb_std=(1.0, 1.0, 1.0), sign=-1):
        super().__init__(3, 3, kernel_size=1)
        std = np.asarray(rgb_std, np.float32)
        self.weight = Parameter(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
                                / std.reshape(3, 1, 1, 1), requires_grad=False)
        self.bias = Parameter(sign * rgb_range * np.asarray(rgb_mean, np.float32) / std,
                              requires_grad=False)


class ResBlock(Module):
    """common.ResBlock (bn=False): body = [conv, act, conv]; x + body(x) * res_scale."""

    def __init__(self, conv, n_feats, kernel_size, bias=True, act=None, res_scale=1.0):
        super().__init__()
        m = []
        for i in range(2):
            m.append(conv(n_feats, n_feats, kernel_size, bias=bias))
            if i == 0:
                m.append(act if act is not None else ReLU(True))
        self.body = Sequential(*m)
        self.res_scale = res_scale

    def forward(self, x):
        res = self.body(x) * self.res_scale
        return res + x


class Upsampler(Sequential):
    """common.Upsampler (bn=False, act=False): per x2 stage [conv F -> 4F, PixelShuffle(2)],
    x3 [conv F -> 9F, PixelShuffle(3)]; scale 1 (2^0) gives an empty Sequential."""

    def __init__(self, conv, scale, n_feats, bias=True):
        m = []
        if (scale & (scale - 1)) == 0:
            for _ in range(int(math.log(scale, 2))):
                m.append(conv(n_feats, 4 * n_feats, 3, bias))
                m.append(PixelShuffle(2))
        elif scale == 3:
            m.append(conv(n_feats, 9 * n_feats, 3, bias))
            m.append(PixelShuffle(3))
        else:
            raise NotImplementedError(scale)
        super().__init__(*m)


class EDSR(Module):
    """model/edsr.py EDSR (input and output in [0, rgb_range])."""

    def __init__(self, n_resblocks=16, n_feats=64, scale=2, res_scale=1.0, rgb_range=255.0,
                 n_colors=3, conv=default_conv):
        super().__init__()
        kernel_size = 3
        act = ReLU(True)
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        m_head = [conv(n_colors, n_feats, kernel_size)]
        m_body = [ResBlock(conv, n_feats, kernel_size, act=act, res_scale=res_scale)
                  for _ in range(n_resblocks)]
        m_body.append(conv(n_feats, n_feats, kernel_size))
        m_tail = [Upsampler(conv, scale, n_feats), conv(n_feats, n_colors, kernel_size)]
        self.head = Sequential(*m_head)
        self.body = Sequential(*m_body)
        self.tail = Sequential(*m_tail)

    def forward(self, x):
        x = self.sub_mean(x)
        x = self.head(x)
        res = self.body(x)
        res = res + x
        x = self.tail(res)
        return self.add_mean(x)


class CALayer(Module):
    """model/rcan.py CALayer: avg_pool, then conv_du = [1x1 conv F -> F/r, ReLU,
    1x1 conv F/r -> F, Sigmoid] gating x."""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.avg_pool = AdaptiveAvgPool2d(1)
        self.conv_du = Sequential(
            Conv2d(channel, channel // reduction, 1, padding=0, bias=True), ReLU(True),
            Conv2d(channel // reduction, channel, 1, padding=0, bias=True), Sigmoid())

    def forward(self, x):
        return x * self.conv_du(self.avg_pool(x))


class RCAB(Module):
    """model/rcan.py RCAB: body = [conv, act, conv, CALayer]; x + body(x)."""

    def __init__(self, conv, n_feat, kernel_size, reduction, bias=True):
        super().__init__()
        modules_body = []
        for i in range(2):
            modules_body.append(conv(n_feat, n_feat, kernel_size, bias=bias))
            if i == 0:
                modules_body.append(ReLU(True))
        modules_body.append(CALayer(n_feat, reduction))
        self.body = Sequential(*modules_body)

    def forward(self, x):
        return self.body(x) + x


class ResidualGroup(Module):
    """model/rcan.py ResidualGroup: body = [n_resblocks RCAB, conv]; x + body(x)."""

    def __init__(self, conv, n_feat, kernel_size, reduction, n_resblocks):
        super().__init__()
        modules_body = [RCAB(conv, n_feat, kernel_size, reduction) for _ in range(n_resblocks)]
        modules_body.append(conv(n_feat, n_feat, kernel_size))
        self.body = Sequential(*modules_body)

    def forward(self, x):
        return self.body(x) + x


class RCAN(Module):
    """model/rcan.py RCAN (input and output in [0, rgb_range])."""

    def __init__(self, n_resgroups=10, n_resblocks=20, n_feats=64, reduction=16, scale=2,
                 rgb_range=255.0, n_colors=3, conv=default_conv):
        super().__init__()
        kernel_size = 3
        self.sub_mean = MeanShift(rgb_range, DIV2K_RGB_MEAN, (1.0, 1.0, 1.0))
        modules_head = [conv(n_colors, n_feats, kernel_size)]
        modules_body = [ResidualGroup(conv, n_feats, kernel_size, reduction, n_resblocks)
                        for _ in range(n_resgroups)]
        modules_body.append(conv(n_feats, n_feats, kernel_size))
        modules_tail = [Upsampler(conv, scale, n_feats), conv(n_feats, n_colors, kernel_size)]
        self.add_mean = MeanShift(rgb_range, DIV2K_RGB_MEAN, (1.0, 1.0, 1.0), 1)
        self.head = Sequential(*modules_head)
        self.body = Sequential(*modules_body)
        self.tail = Sequential(*modules_tail)

    def forward(self, x):
        x = self.sub_mean(x)
        x = self.head(x)
        res = self.body(x)
        res = res + x
        x = self.tail(res)
        return self.add_mean(x)


# ----------------------------------------------------------------------------- BasicSR
def make_layer(block, num, **kw) -> Sequential:
    return Sequential(*[block(**kw) for _ in range(num)])


class ResidualBlockNoBN(Module):
    """arch_util.ResidualBlockNoBN: identity + conv2(relu(conv1(x))) * res_scale."""

    def __init__(self, num_feat=64, res_scale=1.0):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = ReLU(True)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class Upsample(Sequential):
    """arch_util.Upsample: [Conv2d(F, 4F, 3, 1, 1), PixelShuffle(2)] per x2, or the x3 pair."""

    def __init__(self, scale, num_feat):
        m = []
        if (scale & (scale - 1)) == 0:
            for _ in range(int(math.log(scale, 2))):
                m.append(Conv2d(num_feat, 4 * num_feat, 3, 1, 1))
                m.append(PixelShuffle(2))
        elif scale == 3:
            m.append(Conv2d(num_feat, 9 * num_feat, 3, 1, 1))
            m.append(PixelShuffle(3))
        else:
            raise ValueError(scale)
        super().__init__(*m)


class _BasicSRSR(Module):
    """Shared BasicSR EDSR/RCAN trunk; input and output in [0, 1] (x scaled by img_range inside)."""

    def _init_trunk(self, num_feat, body, upscale, img_range, rgb_mean, num_in_ch=3, num_out_ch=3):
        self.img_range = img_range
        object.__setattr__(self, "mean", np.asarray(rgb_mean, np.float32).reshape(1, 3, 1, 1))
        self.conv_first = Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = body
        self.conv_after_body = Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x):
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x))
        res = res + x
        x = self.conv_last(self.upsample(res))
        return x / self.img_range + self.mean


class BasicSREDSR(_BasicSRSR):
    """basicsr/archs/edsr_arch.py EDSR."""

    def __init__(self, num_feat=64, num_block=16, upscale=4, res_scale=1.0, img_range=255.0,
                 rgb_mean=DIV2K_RGB_MEAN):
        super().__init__()
        self._init_trunk(num_feat, make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat,
                                              res_scale=res_scale), upscale, img_range, rgb_mean)


class ChannelAttention(Module):
    """rcan_arch.ChannelAttention: attention = [AvgPool(1), conv F -> F/s, ReLU, conv, Sigmoid]."""

    def __init__(self, num_feat, squeeze_factor=16):
        super().__init__()
        self.attention = Sequential(
            AdaptiveAvgPool2d(1), Conv2d(num_feat, num_feat // squeeze_factor, 1, padding=0),
            ReLU(True), Conv2d(num_feat // squeeze_factor, num_feat, 1, padding=0), Sigmoid())

    def forward(self, x):
        return x * self.attention(x)


class BasicSRRCAB(Module):
    """rcan_arch.RCAB: rcab = [conv, ReLU, conv, ChannelAttention]; rcab(x) * res_scale + x."""

    def __init__(self, num_feat, squeeze_factor=16, res_scale=1.0):
        super().__init__()
        self.res_scale = res_scale
        self.rcab = Sequential(Conv2d(num_feat, num_feat, 3, 1, 1), ReLU(True),
                               Conv2d(num_feat, num_feat, 3, 1, 1),
                               ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x):
        return self.rcab(x) * self.res_scale + x


class BasicSRResidualGroup(Module):
    """rcan_arch.ResidualGroup: conv(residual_group(x)) + x."""

    def __init__(self, num_feat, num_block, squeeze_factor=16, res_scale=1.0):
        super().__init__()
        self.residual_group = make_layer(BasicSRRCAB, num_block, num_feat=num_feat,
                                         squeeze_factor=squeeze_factor, res_scale=res_scale)
        self.conv = Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x):
        return self.conv(self.residual_group(x)) + x


class BasicSRRCAN(_BasicSRSR):
    """basicsr/archs/rcan_arch.py RCAN."""

    def __init__(self, num_feat=64, num_group=10, num_block=16, squeeze_factor=16, upscale=4,
                 res_scale=1.0, img_range=255.0, rgb_mean=DIV2K_RGB_MEAN):
        super().__init__()
        self._init_trunk(num_feat, make_layer(BasicSRResidualGroup, num_group, num_feat=num_feat,
                                              num_block=num_block, squeeze_factor=squeeze_factor,
                                              res_scale=res_scale), upscale, img_range, rgb_mean)


# ----------------------------------------------------------------------------- NAFNet
class LayerNorm2d(Module):
    """arch_util.LayerNorm2d: weight ones(C), bias zeros(C), eps 1e-6, over the channel axis."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = Parameter(np.ones(channels, np.float32))
        self.bias = Parameter(np.zeros(channels, np.float32))
        self.eps = eps

    def forward(self, x):
        return layer_norm2d(x, self.weight, self.bias, self.eps)


class SimpleGate(Module):
    def forward(self, x):
        x1, x2 = np.split(x, 2, axis=1)  # torch.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(Module):
    """NAFNet_arch.NAFBlock (drop_out_rate 0: dropouts are Identity)."""

    def __init__(self, c, DW_Expand=2, FFN_Expand=2):
        super().__init__()
        dw_channel = c * DW_Expand
        self.conv1 = Conv2d(c, dw_channel, kernel_size=1, padding=0, stride=1, groups=1)
        self.conv2 = Conv2d(dw_channel, dw_channel, kernel_size=3, padding=1, stride=1,
                            groups=dw_channel)
        self.conv3 = Conv2d(dw_channel // 2, c, kernel_size=1, padding=0, stride=1, groups=1)
        self.sca = Sequential(AdaptiveAvgPool2d(1),
                              Conv2d(dw_channel // 2, dw_channel // 2, kernel_size=1, padding=0,
                                     stride=1, groups=1))
        self.sg = SimpleGate()
        ffn_channel = FFN_Expand * c
        self.conv4 = Conv2d(c, ffn_channel, kernel_size=1, padding=0, stride=1, groups=1)
        self.conv5 = Conv2d(ffn_channel // 2, c, kernel_size=1, padding=0, stride=1, groups=1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = Identity()
        self.dropout2 = Identity()
        self.beta = Parameter(np.zeros((1, c, 1, 1), np.float32))
        self.gamma = Parameter(np.zeros((1, c, 1, 1), np.float32))

    def forward(self, inp):
        x = inp
        x = self.norm1(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.sg(x)
        x = x * self.sca(x)
        x = self.conv3(x)
        x = self.dropout1(x)
        y = inp + x * self.beta
        x = self.conv4(self.norm2(y))
        x = self.sg(x)
        x = self.conv5(x)
        x = self.dropout2(x)
        return y + x * self.gamma


class NAFNet(Module):
    """NAFNet_arch.NAFNet (input/output in [0, 1]; zero-pads bottom/right to 2**levels, crops)."""

    def __init__(self, img_channel=3, width=16, middle_blk_num=1, enc_blk_nums=(),
                 dec_blk_nums=()):
        super().__init__()
        self.intro = Conv2d(img_channel, width, kernel_size=3, padding=1, stride=1, groups=1)
        self.ending = Conv2d(width, img_channel, kernel_size=3, padding=1, stride=1, groups=1)
        self.encoders = ModuleList()
        self.decoders = ModuleList()
        self.middle_blks = ModuleList()
        self.ups = ModuleList()
        self.downs = ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.downs.append(Conv2d(chan, 2 * chan, 2, 2))
            chan = chan * 2
        self.middle_blks = Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(Sequential(Conv2d(chan, chan * 2, 1, bias=False), PixelShuffle(2)))
            chan = chan // 2
            self.decoders.append(Sequential(*[NAFBlock(chan) for _ in range(num)]))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp):
        _, _, h, w = inp.shape
        inp = self.check_image_size(inp)
        x = self.intro(inp)
        encs = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            encs.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, enc_skip in zip(self.decoders, self.ups, encs[::-1]):
            x = up(x)
            x = x + enc_skip
            x = decoder(x)
        x = self.ending(x)
        x = x + inp
        return x[:, :, :h, :w]

    def check_image_size(self, x):
        _, _, h, w = x.shape
        mod_pad_h = (self.padder_size - h % self.padder_size) % self.padder_size
        mod_pad_w = (self.padder_size - w % self.padder_size) % self.padder_size
        return np.pad(x, ((0, 0), (0, 0), (0, mod_pad_h), (0, mod_pad_w)))  # F.pad, zeros


# ----------------------------------------------------------------------------- test weights
def random_state_dict(net: Module, seed: int, rgb_range: float = 1.0) -> dict[str, np.ndarray]:
    """A random float32 state dict for `net` (official keys and shapes, same order).

    Frozen parameters (MeanShift) keep their official values. Scales mimic a trained model that
    works on images in [0, rgb_range], so that every term matters at float32 precision: conv
    weights ~ N(0, 1/fan_in), biases ~ N(0, (0.3 rgb_range)^2); the channel-attention convs
    (`conv_du` / `attention`) produce gate logits of a few units (weights 3x larger, the first
    one divided by rgb_range; biases ~ N(0, 0.5^2)) so the gates vary across channels;
    LayerNorm weights 1 + N(0, 0.3^2), LayerNorm biases ~ N(0, 0.3^2), beta and gamma
    ~ N(0, 0.5^2).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key, p in net.named_parameters():
        shape = p.data.shape
        if not p.requires_grad:
            out[key] = p.data.copy()
            continue
        attention = ".conv_du." in key or ".attention." in key
        first_attention = key.endswith((".conv_du.0.weight", ".attention.1.weight"))
        second_attention = key.endswith((".conv_du.2.weight", ".attention.3.weight"))
        z = rng.standard_normal(shape)
        if key.endswith((".beta", ".gamma")) or key in ("beta", "gamma"):
            v = 0.5 * z
        elif ".norm" in key or key.startswith("norm"):
            v = (1.0 + 0.3 * z) if key.endswith("weight") else 0.3 * z
        elif len(shape) == 4:  # conv weight (O, I, kh, kw)
            v = z / np.sqrt(np.prod(shape[1:]))
            if first_attention:
                v = 3.0 * v / rgb_range
            elif second_attention:
                v = 3.0 * v
        else:  # conv bias
            v = 0.5 * z if attention else 0.3 * rgb_range * z
        out[key] = v.astype(np.float32)
    return out
