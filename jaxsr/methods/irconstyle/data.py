"""IRConStyle training / evaluation data: real pairs from folders, or clean images degraded on
device with a fixed task (rain, haze, Gaussian colour noise of one sigma, motion blur).

`config.data` fields (configs/irconstyle.py): pair_dirs (roots with lr_subdir / hr_subdir;
empty = synthetic), train_range / val_range ('1-40': inclusive numeric range of the file stems;
'' = all), val_dirs (default: pair_dirs), clean_dir ('' = the shipped clean_hr sample),
val_clean_dir ('' = hold out the last val_count images of clean_dir), degradation ('rain' |
'haze' | 'noise' | 'blur'), noise_sigma (0-255 scale), plus the fields
`jaxsr.train.data.train_iterator` reads (batch_size, hr_patch, augment, worker_count,
cache_images).
"""
from __future__ import annotations

import functools
import pathlib
from typing import Any, Callable

import jax
import ml_collections

from jaxsr.data import pipeline
from jaxsr.data.sources import ImageFolderSource, PairedFolderSource
from jaxsr.train import data as data_lib

DEGRADATIONS = ("rain", "haze", "noise", "blur")


class ConcatSource:
    """Records of several sources one after the other; names prefixed by the folder name
    ('rain100l/041') so that sets sharing file names stay distinct."""

    def __init__(self, sources: list[tuple[str, Any]]):
        self.parts = [(tag, src) for tag, src in sources]
        self.index = [(p, i) for p, (_, src) in enumerate(self.parts) for i in range(len(src))]

    def __len__(self) -> int:
        return len(self.index)

    def fingerprint(self) -> str | None:
        """Changes when any part's records change (None if a part cannot say): lets large sets
        go to the decoded store (`config.data.store`)."""
        from jaxsr.data.store import source_fingerprint
        parts = [source_fingerprint(src) for _, src in self.parts]
        return None if None in parts else repr([(tag, f) for (tag, _), f in zip(self.parts, parts)])

    def __getitem__(self, i: int) -> dict:
        p, j = self.index[int(i)]
        tag, src = self.parts[p]
        rec = dict(src[j])
        rec["name"] = f"{tag}/{rec['name']}"
        return rec


def in_range(name: str, spec: str) -> bool:
    """True if the numeric file stem `name` lies in spec 'lo-hi' (inclusive); '' = always."""
    if not spec:
        return True
    lo, _, hi = spec.partition("-")
    try:
        n = int(pathlib.Path(name).stem)
    except ValueError:
        return False
    return int(lo) <= n <= int(hi or lo)


def paired_source(dirs, d: ml_collections.ConfigDict, spec: str) -> ConcatSource:
    """The pairs of every root in `dirs` whose stem is in `spec` (ValueError if none)."""
    parts = []
    for root in dirs:
        src = PairedFolderSource(pathlib.Path(root).expanduser(), lr_subdir=d.lr_subdir,
                                 hr_subdir=d.hr_subdir, scale=1)
        keep = [i for i, n in enumerate(src.names) if in_range(n, spec)]
        parts.append((pathlib.Path(root).name, data_lib.Subset(src, keep)))
    out = ConcatSource(parts)
    if not len(out):
        raise ValueError(f"no pairs in {list(dirs)} with names in range {spec!r}; check "
                         "config.data.pair_dirs / train_range / val_range")
    return out


def make_degrader(d: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """(key, clean (B, H, W, 3) float in [0, 1]) -> degraded, same shape, float32 in [0, 1]."""
    from jaxsr import degradations
    from jaxsr.degradations import noise
    kind = d.degradation
    if kind not in DEGRADATIONS:
        raise ValueError(f"config.data.degradation={kind!r} is unknown; use one of {DEGRADATIONS}")
    if kind == "noise":
        sigma = float(d.noise_sigma)

        def add_noise(key, x):
            keys = jax.random.split(key, x.shape[0])
            return jax.vmap(lambda k, im: noise.gaussian_noise(k, im, sigma, False))(keys, x)
        return add_noise
    task = {"rain": "rain", "haze": "haze", "blur": "motion_blur"}[kind]
    return functools.partial(degradations.synthesize, task, scale=1, mode="same")


def sources(config: ml_collections.ConfigDict):
    """(train source, eval pairs [(lq uint8, clean uint8, name)], degrader or None)."""
    d = config.data
    if d.pair_dirs:
        train = paired_source(d.pair_dirs, d, d.train_range)
        val = paired_source(d.val_dirs or d.pair_dirs, d, d.val_range)
        return train, pipeline.eval_pairs(val), None
    from jaxsr.methods.supervised import synthetic_eval_pairs
    root = data_lib.resolve_dir(d.clean_dir, "clean_hr")
    src = ImageFolderSource(root)
    if d.val_clean_dir:
        train, val = src, ImageFolderSource(pathlib.Path(d.val_clean_dir).expanduser())
    else:
        train, val = data_lib.split_train_val(src, d.val_count)
    degrade = make_degrader(d)
    return train, synthetic_eval_pairs(config, val, jax.jit(degrade)), degrade
