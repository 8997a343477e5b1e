"""A synthetic few-shot target whose distortion mix is known: defocus blur + mild shot noise.

Used to check DRTL's relations against a known truth (issue 15): the target is a defocus disk of
radius --radius px applied at full resolution (the 'defocus_blur' auxiliary task draws radius 1-4
px and then resamples by drtl.aux_scale) followed by colour Poisson shot noise (no auxiliary task
models Poisson noise; 'gaussian_noise' is its nearest relative). So blur tasks should rank
first, the noise task next, and rain / haze / JPEG last.

  python experiments/make_synthetic_target.py --src_dir=../shared/data/kodak24 \\
      --out_dir=runs/synthetic_defocus_noise

Writes OUT/hr/NAME.png (the central --crop x --crop of each source image) and OUT/lr/NAME.png
(the same size, distorted) and OUT/README.md (parameters, command). Deterministic: image i uses
noise key fold_in(--seed, i).
"""
from __future__ import annotations

import pathlib
import sys

from absl import app, flags

_SRC = flags.DEFINE_string("src_dir", None, "Folder of clean images (png/jpg).", required=True)
_OUT = flags.DEFINE_string("out_dir", None, "Output folder (lr/ and hr/).", required=True)
_CROP = flags.DEFINE_integer("crop", 512, "Central crop size (px); 0 = whole image.")
_RADIUS = flags.DEFINE_float("radius", 6.0, "Defocus disk radius (px, full resolution).")
_PEAK = flags.DEFINE_float("peak", 1000.0, "Poisson peak: photons of a white pixel (larger = "
                           "cleaner; 1000 gives a noise std of about 4-6/255 at mid grey).")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")


def distort(img, key, radius: float, peak: float):
    """(H, W, 3) float in [0, 1] -> disk blur of `radius` px, then colour Poisson noise."""
    from jaxsr.degradations import blur as blur_ops
    from jaxsr.degradations import noise as noise_ops
    size = 2 * int(radius + 2) + 1
    blurred = blur_ops.blur(img, blur_ops.disk_kernel(radius, size))
    return noise_ops.poisson_noise(key, blurred, peak)


def main(argv):
    del argv
    import jax
    import numpy as np
    from jaxsr.imageio import read_image, write_image
    src, out = pathlib.Path(_SRC.value), pathlib.Path(_OUT.value)
    paths = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not paths:
        raise app.UsageError(f"no png/jpg images in {src}; point --src_dir at clean images.")
    for sub in ("lr", "hr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    fn = jax.jit(lambda img, key: distort(img, key, _RADIUS.value, _PEAK.value))
    for i, path in enumerate(paths):
        hr = read_image(path)
        if _CROP.value:
            h, w = hr.shape[:2]
            c = min(_CROP.value, h, w)
            hr = hr[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        lr = fn(hr.astype(np.float32) / 255.0, jax.random.fold_in(jax.random.key(_SEED.value), i))
        write_image(out / "hr" / f"{path.stem}.png", hr)
        write_image(out / "lr" / f"{path.stem}.png",
                    np.round(np.asarray(lr) * 255.0).clip(0, 255).astype(np.uint8))
    (out / "README.md").write_text(
        f"Synthetic target from `{src}` ({len(paths)} images, central {_CROP.value}-px crop): "
        f"defocus disk radius {_RADIUS.value} px at full resolution, then colour Poisson noise "
        f"with peak {_PEAK.value}, seed {_SEED.value}.\n\n"
        "    python " + " ".join(sys.argv) + "\n")
    print(f"wrote {len(paths)} pairs to {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    app.run(main)
