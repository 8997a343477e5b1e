"""Writes CRL-SR's fixed-seed blind-SR benchmark: Set14 and BSD100 HR degraded by the
multi-source, spatially variant generator (jaxsr/methods/crl/degrade.py) at x2 and x4 and three
difficulty levels (configs/crl.py: crl.degrade.{easy, medium, hard}), as paired folders, so every
method and baseline is scored on identical LR images.

    python experiments/crl_benchmark_data.py --data_dir=../shared/data --out=BENCH [--seed=2107]
      [--sets=set14,bsd100] [--scales=2,4] [--limit=0]

Layout: BENCH/<set>/x<s>/<level>/{lr,hr,uniformity}/NNN.png and BENCH/meta.json (levels,
seed, canvas sizes). `uniformity` = max_k of the K blend masks at HR size, x255: 255 where one
degradation rules the pixel, ~255/K where several mix (for region-wise scores). Image i of a
(set, scale, level) uses key fold_in(key(seed + 1000 * set_id + 100 * scale + level_id), i);
each image is mirror-padded to its set's canvas (a multiple of 16 covering every image) so one
compiled generator serves the set; the LR and masks are cropped back.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxsr.config_util import load_config_file  # noqa: E402
from jaxsr.imageio import list_images, read_image, write_image  # noqa: E402
from jaxsr.methods.crl.degrade import degrade_with_masks, uniformity  # noqa: E402
from jaxsr.methods.crl.train import LEVELS, level_spec  # noqa: E402
from jaxsr.pixels import to_float, to_uint8  # noqa: E402

SETS = {"set14": 0, "bsd100": 1}


def hr_folder(data_dir: pathlib.Path, name: str, scale: int) -> pathlib.Path:
    """Set14 comes cropped per scale (x{s}/hr); BSD100 HR is cropped to a multiple of 4."""
    return data_dir / "set14" / f"x{scale}" / "hr" if name == "set14" else data_dir / "bsd100" / "hr"


def load_hr(folder: pathlib.Path, scale: int, limit: int = 0) -> list[tuple[str, np.ndarray]]:
    files = list_images(folder)
    files = files[:limit] if limit else files
    out = []
    for f in files:
        img = read_image(f)
        if img.ndim == 2 or img.shape[-1] == 1:          # Set14 003 is grayscale
            img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=-1)
        h, w = img.shape[0] // scale * scale, img.shape[1] // scale * scale
        out.append((f.stem, np.ascontiguousarray(img[:h, :w, :3])))
    return out


def write_benchmark(data_dir, out, seed=2107, sets=("set14", "bsd100"), scales=(2, 4),
                    limit=0, config_path=REPO / "configs" / "crl.py") -> dict:
    data_dir, out = pathlib.Path(data_dir), pathlib.Path(out)
    config = load_config_file(str(config_path))
    meta = {"seed": seed, "levels": {lv: json.loads(config.crl.degrade[lv].to_json())
                                     for lv in LEVELS}, "sets": {}}
    for name in sets:
        for scale in scales:
            images = load_hr(hr_folder(data_dir, name, scale), scale, limit)
            ch = -(-max(i.shape[0] for _, i in images) // 16) * 16
            cw = -(-max(i.shape[1] for _, i in images) // 16) * 16
            meta["sets"][f"{name}/x{scale}"] = {"count": len(images), "canvas": [ch, cw]}
            for lv_id, level in enumerate(LEVELS):
                spec = level_spec(config, level)
                fn = jax.jit(lambda k, x, spec=spec, s=scale: degrade_with_masks(k, x, spec, s))
                base = jax.random.key(seed + 1000 * SETS[name] + 100 * scale + lv_id)
                root = out / name / f"x{scale}" / level
                for i, (stem, hr) in enumerate(images):
                    lr, masks = on_canvas(fn, jax.random.fold_in(base, i), hr, (ch, cw), scale)
                    write_image(root / "lr" / f"{stem}.png", to_uint8(lr))
                    write_image(root / "hr" / f"{stem}.png", hr)
                    u = np.asarray(uniformity(masks))
                    write_image(root / "uniformity" / f"{stem}.png",
                                np.repeat(np.round(u * 255).astype(np.uint8)[..., None], 3, -1))
                print(f"{name} x{scale} {level}: {len(images)} pairs -> {root}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def on_canvas(fn, key, hr: np.ndarray, canvas: tuple[int, int], scale: int):
    """fn(key, (ch, cw, 3) float) on hr (h, w, 3) uint8 mirror-padded (bottom/right, numpy
    'symmetric') to `canvas`; returns (lr (h/s, w/s, 3) float, masks (K, h, w)) as numpy."""
    h, w = hr.shape[:2]
    padded = np.pad(hr, ((0, canvas[0] - h), (0, canvas[1] - w), (0, 0)), mode="symmetric")
    lr, masks = fn(key, to_float(jnp.asarray(padded)))
    return np.asarray(lr)[:h // scale, :w // scale], np.asarray(masks)[:, :h, :w]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=2107)
    p.add_argument("--sets", default="set14,bsd100")
    p.add_argument("--scales", default="2,4")
    p.add_argument("--limit", type=int, default=0, help="first N images of each set (0 = all)")
    a = p.parse_args()
    write_benchmark(a.data_dir, a.out, a.seed, tuple(a.sets.split(",")),
                    tuple(int(s) for s in a.scales.split(",")), a.limit)


if __name__ == "__main__":
    main()
