"""Convert official PyTorch EDSR / RCAN / NAFNet weights into jaxsr Flax parameters.

Supported key layouts:
  edsr:   EDSR-PyTorch (head.0, body.N.body.{0,2}, body.<n>, tail.0.{0,2}, tail.1, sub/add_mean)
          and BasicSR (conv_first, body.N.conv{1,2}, conv_after_body, upsample.{0,2}, conv_last)
  rcan:   RCAN official / EDSR-PyTorch (head.0, body.G.body.B.body.{0,2,3.conv_du.{0,2}}, ...)
          and BasicSR (conv_first, body.G.residual_group.B.rcab.{0,2,3.attention.{1,3}}, ...)
  nafnet: megvii-research/NAFNet (intro, encoders.L.B.*, downs.L, middle_blks.B.*, ups.L.0,
          decoders.L.B.*, ending); checkpoints whose top level is {'params': state_dict} work too.

EDSR and RCAN were trained on images in [0, rgb_range] (255 for the released models) while the
jaxsr models work in [0, 1]. The network between the mean shifts is positively homogeneous except
for conv biases and the channel-attention gate, so the conversion is exact up to rounding: every
conv bias is divided by rgb_range, and the first channel-attention conv kernel is multiplied by it
(its input is then 1/rgb_range smaller, so the gate is unchanged). Conv kernels OIHW -> HWIO.

Usage:
  python experiments/convert_pytorch.py --model edsr_baseline --scale 2 \
      --input edsr_baseline_x2-1bc95232.pt --output edsr_baseline_x2.npz
The .npz holds the flattened Flax tree ('params/head/kernel', ...); `load_npz` restores it.
Repeated blocks are written in the layout the model expects: stacked for the default
`scan_blocks=True` ('params/blocks/conv1/kernel' (n, 3, 3, F, F), RCAN 'params/groups/blocks/...',
NAFNet 'params/enc_3_blocks/...'; see `jaxsr.models.stacking`), one entry per block ('block_0',
...) with `--unrolled` for models built with scan_blocks=False.
The script checks every key and shape against `jaxsr.models.create(model, scale=...)`.
Needs torch only to read .pt/.pth files (`pip install torch`; not a jaxsr requirement).
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Mapping

import numpy as np

_EDSR_RULES: list[tuple[str, str]] = [
    # EDSR-PyTorch layout (`body.<n_blocks>` without an inner `.body.` is the last body conv).
    (r"head\.0\.(weight|bias)", r"head/\1"),
    (r"body\.(\d+)\.body\.0\.(weight|bias)", r"block_\1/conv1/\2"),
    (r"body\.(\d+)\.body\.2\.(weight|bias)", r"block_\1/conv2/\2"),
    (r"body\.(\d+)\.(weight|bias)", r"body_conv/\2"),
    (r"tail\.0\.(\d+)\.(weight|bias)", r"upsampler/conv_{half:\1}/\2"),
    (r"tail\.1\.(weight|bias)", r"tail/\1"),
    # BasicSR layout.
    (r"conv_first\.(weight|bias)", r"head/\1"),
    (r"body\.(\d+)\.conv1\.(weight|bias)", r"block_\1/conv1/\2"),
    (r"body\.(\d+)\.conv2\.(weight|bias)", r"block_\1/conv2/\2"),
    (r"conv_after_body\.(weight|bias)", r"body_conv/\1"),
    (r"upsample\.(\d+)\.(weight|bias)", r"upsampler/conv_{half:\1}/\2"),
    (r"conv_last\.(weight|bias)", r"tail/\1"),
]

_RCAN_RULES: list[tuple[str, str]] = [
    (r"head\.0\.(weight|bias)", r"head/\1"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.0\.(weight|bias)", r"group_\1/block_\2/conv1/\3"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.2\.(weight|bias)", r"group_\1/block_\2/conv2/\3"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0\.(weight|bias)",
     r"group_\1/block_\2/ca/down/\3"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2\.(weight|bias)",
     r"group_\1/block_\2/ca/up/\3"),
    (r"body\.(\d+)\.body\.(\d+)\.(weight|bias)", r"group_\1/conv/\3"),
    (r"body\.(\d+)\.(weight|bias)", r"body_conv/\2"),
    (r"tail\.0\.(\d+)\.(weight|bias)", r"upsampler/conv_{half:\1}/\2"),
    (r"tail\.1\.(weight|bias)", r"tail/\1"),
    (r"conv_first\.(weight|bias)", r"head/\1"),
    (r"body\.(\d+)\.residual_group\.(\d+)\.rcab\.0\.(weight|bias)", r"group_\1/block_\2/conv1/\3"),
    (r"body\.(\d+)\.residual_group\.(\d+)\.rcab\.2\.(weight|bias)", r"group_\1/block_\2/conv2/\3"),
    (r"body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.(weight|bias)",
     r"group_\1/block_\2/ca/down/\3"),
    (r"body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.(weight|bias)",
     r"group_\1/block_\2/ca/up/\3"),
    (r"body\.(\d+)\.conv\.(weight|bias)", r"group_\1/conv/\2"),
    (r"conv_after_body\.(weight|bias)", r"body_conv/\1"),
    (r"upsample\.(\d+)\.(weight|bias)", r"upsampler/conv_{half:\1}/\2"),
    (r"conv_last\.(weight|bias)", r"tail/\1"),
]

_NAF_BLOCK = r"(conv[1-5]|norm[12])\.(weight|bias)|sca\.1\.(weight|bias)|beta|gamma"
_NAFNET_RULES: list[tuple[str, str]] = [
    (r"intro\.(weight|bias)", r"intro/\1"),
    (r"ending\.(weight|bias)", r"ending/\1"),
    (r"encoders\.(\d+)\.(\d+)\.(.+)", r"enc_\1_block_\2/{block:\3}"),
    (r"middle_blks\.(\d+)\.(.+)", r"middle_block_\1/{block:\2}"),
    (r"decoders\.(\d+)\.(\d+)\.(.+)", r"dec_\1_block_\2/{block:\3}"),
    (r"downs\.(\d+)\.(weight|bias)", r"down_\1/\2"),
    (r"ups\.(\d+)\.0\.weight", r"up_\1/weight"),
]

# Keys of frozen buffers/constants that jaxsr models implement as constants.
_IGNORED = re.compile(r"(sub_mean|add_mean)\.(weight|bias)")


def _expand(template: str) -> str:
    """Resolve `{half:N}` (Sequential index of an upsampler conv -> stage) and `{block:...}`."""
    template = re.sub(r"\{half:(\d+)\}", lambda m: str(int(m.group(1)) // 2), template)

    def block(m: re.Match) -> str:
        rest = m.group(1)
        if not re.fullmatch(_NAF_BLOCK, rest):
            raise KeyError(rest)
        return rest.replace("sca.1.", "sca.").replace(".", "/")

    return re.sub(r"\{block:(.+)\}", block, template)


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, template in rules:
        m = re.fullmatch(pattern, key)
        if m:
            try:
                return _expand(m.expand(template))
            except KeyError:
                return None
    return None


def _to_flax_leaf(path: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """weight OIHW -> kernel HWIO; norm weight/bias and beta/gamma (1,C,1,1) -> (C,)."""
    parts = path.split("/")
    leaf = parts[-1]
    if leaf in ("beta", "gamma"):
        return path, value.reshape(-1)
    if parts[-2].startswith("norm"):
        return path, value
    if leaf == "weight":
        if value.ndim != 4:
            raise ValueError(f"{path}: expected a 4-D conv weight, got shape {value.shape}")
        return "/".join(parts[:-1] + ["kernel"]), np.transpose(value, (2, 3, 1, 0))
    return path, value


def convert_state_dict(state_dict: Mapping[str, Any], arch: str,
                       rgb_range: float = 255.0, stacked: bool = True) -> dict[str, Any]:
    """PyTorch state_dict (name -> array/tensor) -> Flax variables {'params': {...}} (numpy f32).

    arch: 'edsr', 'rcan' or 'nafnet'. rgb_range: the image range the weights were trained on
    (255 for official EDSR/RCAN, ignored for NAFNet which works in [0, 1]). stacked: repeated
    blocks stacked as the default models (`scan_blocks=True`) expect; False: one entry per block
    (`block_0`, ...), for models built with scan_blocks=False.
    Raises KeyError naming any key that the layout does not know.
    """
    rules = {"edsr": _EDSR_RULES, "rcan": _RCAN_RULES, "nafnet": _NAFNET_RULES}.get(arch)
    if rules is None:
        raise ValueError(f"arch={arch!r} not supported; use 'edsr', 'rcan' or 'nafnet'")
    if arch == "nafnet":
        rgb_range = 1.0
    flat: dict[str, np.ndarray] = {}
    unknown = []
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if _IGNORED.fullmatch(key):
            continue
        path = _rename(key, rules)
        if path is None:
            unknown.append(key)
            continue
        arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value,
                         dtype=np.float32)
        path, arr = _to_flax_leaf(path, arr)
        if rgb_range != 1.0:
            if path.endswith("ca/down/kernel"):
                arr = arr * np.float32(rgb_range)
            elif path.endswith("/bias") and "/ca/" not in path:
                arr = arr / np.float32(rgb_range)
        if path in flat:
            raise KeyError(f"two PyTorch keys map to {path!r} (second: {key!r})")
        flat[path] = arr
    if unknown:
        raise KeyError(f"{len(unknown)} PyTorch keys not understood for arch={arch!r}, e.g. "
                       f"{unknown[:5]}; is this an official {arch} checkpoint?")
    tree: dict[str, Any] = {}
    for path, arr in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
    if stacked:
        from jaxsr.models.stacking import stack_blocks
        tree = stack_blocks(tree)
    return {"params": tree}


def check_against_model(variables: Mapping[str, Any], model: Any,
                        sample_shape: tuple[int, ...] = (1, 16, 16, 3)) -> None:
    """Raise ValueError listing missing / unexpected / mis-shaped keys versus `model.init`."""
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    want = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(sample_shape, jnp.float32))
    want_flat = traverse_util.flatten_dict(want, sep="/")
    got_flat = traverse_util.flatten_dict(dict(variables), sep="/")
    missing = sorted(set(want_flat) - set(got_flat))
    extra = sorted(set(got_flat) - set(want_flat))
    shapes = [f"{k}: checkpoint {tuple(got_flat[k].shape)} vs model {tuple(want_flat[k].shape)}"
              for k in sorted(set(want_flat) & set(got_flat))
              if tuple(got_flat[k].shape) != tuple(want_flat[k].shape)]
    if missing or extra or shapes:
        raise ValueError(
            "converted weights do not fit the model (wrong preset or scale?): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}; "
            f"shape mismatches {shapes[:5]}")


def load_torch_state_dict(path: str) -> dict[str, Any]:
    """Read a .pt/.pth file (needs torch); unwraps {'params': ...} / {'state_dict': ...}."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs PyTorch: pip install torch") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    return dict(obj)


def save_npz(path: str, variables: Mapping[str, Any]) -> None:
    """Flattened ('params/head/kernel' -> array) .npz of a Flax variables tree."""
    from flax import traverse_util
    flat = traverse_util.flatten_dict(dict(variables), sep="/")
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def load_npz(path: str) -> dict[str, Any]:
    """Inverse of `save_npz`: the nested Flax variables tree (numpy arrays)."""
    from flax import traverse_util
    with np.load(path) as z:
        return traverse_util.unflatten_dict({k: z[k] for k in z.files}, sep="/")


_ARCH_OF: dict[str, str] = {"edsr": "edsr", "edsr_baseline": "edsr", "edsr_large": "edsr",
                            "rcan": "rcan"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="jaxsr model name (edsr_baseline, edsr_large, rcan, nafnet_w32, ...)")
    parser.add_argument("--scale", type=int, default=None, help="SR scale (not for NAFNet)")
    parser.add_argument("--input", required=True, help="PyTorch .pt/.pth state_dict")
    parser.add_argument("--output", required=True, help="output .npz")
    parser.add_argument("--rgb-range", type=float, default=255.0,
                        help="image range the EDSR/RCAN weights were trained on (default 255)")
    parser.add_argument("--unrolled", action="store_true",
                        help="write one entry per block (block_0, ...) for a model built with "
                             "scan_blocks=False (default: stacked, as the models are by default)")
    args = parser.parse_args(argv)

    import jaxsr.models as models

    arch = "nafnet" if args.model.startswith("nafnet") else _ARCH_OF.get(args.model)
    if arch is None:
        parser.error(f"--model {args.model!r}: no PyTorch layout known; use one of "
                     f"{sorted(_ARCH_OF)} or a nafnet preset")
    kwargs = {} if args.scale is None else {"scale": args.scale}
    if args.unrolled:
        kwargs["scan_blocks"] = False
    model = models.create(args.model, **kwargs)
    variables = convert_state_dict(load_torch_state_dict(args.input), arch, args.rgb_range,
                                   stacked=not args.unrolled)
    check_against_model(variables, model)
    save_npz(args.output, variables)
    n = sum(v.size for v in __import__("jax").tree_util.tree_leaves(variables))
    print(f"wrote {args.output}: {n:,} parameters for {args.model} {kwargs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
