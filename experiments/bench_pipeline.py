"""Training input pipeline throughput: crops/s decoding per crop against the decode-once store.

  python experiments/bench_pipeline.py [--n=32] [--data_dir=DIR] [--batch=16] [--hr_patch=192] \\
      [--scale=4] [--batches=20] [--workers=0,4] [--store_dir=DIR]

Writes `--n` synthetic DIV2K-sized PNG pairs (HR 2040x1356, LR 510x339 for x4; smooth random
content plus fine noise, so the files are about as large and slow to decode as photographs;
fixed seed) to a temporary folder, or reads `--data_dir` (a folder with lr/ and hr/). Then, for
each worker count in `--workers`, times `--batches` batches of `paired_loader` (batch `--batch`
of `--hr_patch` HR crops, augmentation on) over the folder source as `train_iterator` keeps it
for config.data.store='none' (every crop decodes its whole PNG pair: before issue 14) and
'disk' (decoded once into the memory-mapped store: a crop is an array slice), after one
warm-up batch (worker start-up excluded). The one-off store build is timed into a fresh store
folder (a temporary one unless `--store_dir`). Rows: section, store, worker_count, n_pairs,
batch, hr_patch, scale, crops_per_s, batch_ms, build_s, store_mb, png_mb, shuffle_ms, cpu_count,
time.

Small sets understate the store: grain's shuffling sampler (`index_shuffle`, cycle-walking over a
larger domain) costs about 60 / n ms per record for n records (12 ms at n=4, 0.07 ms at n=800),
which caps the loader near n * 16 crops/s whatever the reading costs; `shuffle_ms` reports it.
Measure with --n of a few hundred (DIV2K: 800) or --data_dir for numbers of record.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HR_SIZE = (1356, 2040)  # (H, W) of a DIV2K-sized HR image


def synthetic_pairs(folder: pathlib.Path, n: int, scale: int, seed: int = 0) -> pathlib.Path:
    """Writes n PNG pairs folder/{lr,hr}/NNNN.png (HR HR_SIZE, LR HR_SIZE // scale); returns
    folder. Content: bicubic-upsampled random colours (smooth regions and edges) plus Gaussian
    noise of std 6, deterministic per `seed`."""
    from PIL import Image
    h, w = (HR_SIZE[0] // scale) * scale, (HR_SIZE[1] // scale) * scale
    for sub in ("lr", "hr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        coarse = rng.integers(0, 256, (h // 48 + 1, w // 48 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
        hr = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(hr).save(folder / "hr" / f"{i:04d}.png")
        Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC).save(
            folder / "lr" / f"{i:04d}.png")
    return folder


def _folder_mb(folder: pathlib.Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2 ** 20


def _crops_per_s(source, args, workers: int) -> tuple[float, float]:
    """(crops/s, ms per batch) over `args.batches` batches after one warm-up batch."""
    from jaxsr.data import pipeline
    loader = pipeline.paired_loader(source, batch_size=args.batch, hr_patch=args.hr_patch,
                                    scale=args.scale, seed=0, worker_count=workers)
    it = iter(loader)
    next(it)  # warm-up: worker start-up, first reads
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    dt = time.perf_counter() - t0
    del it
    return args.batch * args.batches / dt, dt / args.batches * 1e3


def _shuffle_ms(n: int, calls: int = 200) -> float:
    """grain's cost per record of shuffling n records (its IndexSampler's index_shuffle)."""
    from grain._src.python.experimental.index_shuffle.python import index_shuffle_module
    t0 = time.perf_counter()
    for i in range(calls):
        index_shuffle_module.index_shuffle(i % n, max_index=n - 1, seed=1234, rounds=4)
    return (time.perf_counter() - t0) / calls * 1e3


def section(args) -> list[dict]:
    """One row per (store, worker count); see the module doc."""
    import ml_collections

    from jaxsr.data import store as store_lib
    from jaxsr.data.sources import PairedFolderSource
    from jaxsr.train import data as data_lib

    if args.workers and any(int(w) > 0 for w in str(args.workers).split(",")):
        from absl import flags
        if not flags.FLAGS.is_parsed():  # grain worker processes read absl flags
            flags.FLAGS.mark_as_parsed()
    with tempfile.TemporaryDirectory(prefix="jaxsr-bench-pipeline-") as tmp:
        tmp = pathlib.Path(tmp)
        data = pathlib.Path(args.data_dir) if args.data_dir else synthetic_pairs(
            tmp / "data", args.n, args.scale)
        source = PairedFolderSource(data, scale=args.scale)
        store_dir = pathlib.Path(args.store_dir) if args.store_dir else tmp / "stores"
        common = dict(section="pipeline", n_pairs=len(source), batch=args.batch,
                      hr_patch=args.hr_patch, scale=args.scale, png_mb=round(_folder_mb(data), 1),
                      shuffle_ms=round(_shuffle_ms(len(source)), 3), cpu_count=os.cpu_count(),
                      time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        d = ml_collections.ConfigDict(dict(cache_images=0, store="disk", store_dir=str(store_dir)))
        t0 = time.perf_counter()
        stored = data_lib.stored_source(d, source)
        build_s = time.perf_counter() - t0
        assert isinstance(stored, store_lib.DiskStore)
        store_mb = round(stored.nbytes / 2 ** 20, 1)
        rows = []
        for workers in (int(w) for w in str(args.workers).split(",")):
            for mode, src in (("none", source), ("disk", stored)):
                crops, ms = _crops_per_s(src, args, workers)
                rows.append(dict(common, store=mode, worker_count=workers,
                                 crops_per_s=round(crops, 1), batch_ms=round(ms, 1),
                                 build_s=round(build_s, 2) if mode == "disk" else 0.0,
                                 store_mb=store_mb if mode == "disk" else 0.0))
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32, help="synthetic 2K pairs to write")
    p.add_argument("--data_dir", default="", help="a folder with lr/ and hr/ instead")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hr_patch", type=int, default=192)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--batches", type=int, default=20, help="timed batches per row")
    p.add_argument("--workers", default="0", help="comma-separated grain worker counts")
    p.add_argument("--store_dir", default="", help="store folder (default: a temporary one)")
    return p


KEYS = ("store", "worker_count", "n_pairs", "batch", "hr_patch", "crops_per_s", "batch_ms",
        "build_s", "store_mb", "png_mb", "shuffle_ms")


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(KEYS) + " |", "|" + "---|" * len(KEYS)]
    lines += ["| " + " | ".join(str(r[k]) for k in KEYS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    rows = section(parser().parse_args(argv))
    print(markdown(rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
