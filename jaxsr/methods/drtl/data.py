"""DRTL data: the few-shot target pairs, the held-out target pairs, and the auxiliary HR pool.

`config.data` fields: target_dir ('' = the shipped `target_sample`), target_sample, lr_subdir,
hr_subdir, shots (N few-shot pairs used for relation estimation and fine-tuning), eval_count
(held-out target pairs evaluated; 0 = all the rest), shot_seed (which pairs are the shots:
0 = the first N by name, otherwise a seeded random choice among the non-held-out pairs), aux_dir ('' = the shipped
`aux_sample`), hr_patch, batch_size (per task), target_batch, worker_count, cache_images
(sets with at most this many images are decoded once and kept in memory).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ml_collections
import numpy as np

from jaxsr.data import pipeline
from jaxsr.data.sources import ImageFolderSource, PairedFolderSource
from jaxsr.train.data import Subset, resolve_dir, stored_source
from jaxsr.train.mesh import local_batch_size


@dataclasses.dataclass
class TargetSplit:
    """Few-shot target pairs (`shots`) and held-out target pairs (`heldout`) as sources."""
    shots: Any
    heldout: Any
    shot_names: list[str]
    heldout_names: list[str]


def split_target(d: ml_collections.ConfigDict, scale: int) -> TargetSplit:
    """Held-out pairs: the last `d.eval_count` by name (0 = every pair not used as a shot).
    Shots: `d.shots` pairs from the others, the first ones by name (`shot_seed` 0) or a seeded
    random choice, so different seeds adapt on different pairs but evaluate on the same ones."""
    root = resolve_dir(d.target_dir, d.target_sample)
    source = PairedFolderSource(root, lr_subdir=d.lr_subdir, hr_subdir=d.hr_subdir, scale=scale)
    n = len(source)
    pool = n - d.eval_count if d.eval_count else n - 1
    if d.eval_count >= n or not 1 <= d.shots <= pool:
        raise ValueError(f"config.data.shots={d.shots} and eval_count={d.eval_count} do not fit "
                         f"the {n} pairs in {root}: need shots + eval_count <= {n} and at least "
                         "one held-out pair")
    order = np.arange(pool)
    if d.shot_seed:
        order = np.random.default_rng(d.shot_seed).permutation(pool)
    shots = sorted(order[:d.shots].tolist())
    rest = list(range(pool, n)) if d.eval_count else sorted(set(range(n)) - set(shots))
    names = list(source.names)
    return TargetSplit(stored_source(d, Subset(source, shots)),
                       Subset(source, rest),
                       [names[i] for i in shots], [names[i] for i in rest])


def aux_source(d: ml_collections.ConfigDict):
    """The clean auxiliary HR images, kept decoded as `d.store` says (in memory when at most
    d.cache_images, else a memory-mapped store: `jaxsr.train.data.stored_source`)."""
    return stored_source(d, ImageFolderSource(resolve_dir(d.aux_dir, d.aux_sample)))


class JointIterator:
    """Zips the auxiliary HR iterator and the target pair iterator; saveable state.

    Yields {'aux_hr': uint8 (K, B, P, P, 3), 'target_lr': uint8 (Bt, p, p, 3),
    'target_hr': uint8 (Bt, P, P, 3)}: the auxiliary loader's flat batch of K*B crops is split
    into K task batches here, so every task sees different images.
    """

    def __init__(self, aux_loader, target_loader, num_tasks: int):
        self.aux_loader, self.target_loader, self.num_tasks = aux_loader, target_loader, num_tasks
        self.aux, self.target = iter(aux_loader), iter(target_loader)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        hr = next(self.aux)["hr"]
        t = next(self.target)
        return {"aux_hr": hr.reshape((self.num_tasks, -1) + hr.shape[1:]),
                "target_lr": t["lr"], "target_hr": t["hr"]}

    def get_state(self) -> dict:
        return {"aux": pipeline.iterator_state(self.aux),
                "target": pipeline.iterator_state(self.target)}

    def set_state(self, state: dict) -> None:
        self.aux = pipeline.restore_iterator(self.aux_loader, state["aux"])
        self.target = pipeline.restore_iterator(self.target_loader, state["target"])


def joint_iterator(d: ml_collections.ConfigDict, split: TargetSplit, num_tasks: int,
                   per_task: int, scale: int, seed: int) -> JointIterator:
    """Aux HR crops for K tasks x `per_task` images plus a batch of few-shot target crops."""
    aux = pipeline.hr_loader(aux_source(d), batch_size=num_tasks * local_batch_size(
        per_task, "config.data.batch_size"), hr_patch=d.hr_patch, seed=seed,
        worker_count=d.worker_count)
    target = pipeline.paired_loader(split.shots, batch_size=local_batch_size(
        d.target_batch, "config.data.target_batch"), hr_patch=d.hr_patch, scale=scale,
        seed=seed + 1, worker_count=d.worker_count)
    return JointIterator(aux, target, num_tasks)


def target_iterator(d: ml_collections.ConfigDict, split: TargetSplit, scale: int,
                    seed: int) -> pipeline.Batches:
    """Checkpointable batches of few-shot target crops for fine-tuning (supervised batches)."""
    loader = pipeline.paired_loader(split.shots, batch_size=local_batch_size(
        d.finetune_batch, "config.data.finetune_batch"), hr_patch=d.hr_patch, scale=scale,
        seed=seed + 2, worker_count=d.worker_count)
    return pipeline.Batches(loader)


def target_lr_crops(split: TargetSplit, size: int, per_image: int, seed: int) -> np.ndarray:
    """(N*per_image, size, size, 3) uint8 random crops of the few-shot target LR images, for the
    target node of the knowledge graph."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(len(split.shots)):
        lr = split.shots[i]["lr"]
        h, w = lr.shape[:2]
        if h < size or w < size:
            raise ValueError(f"target LR {split.shot_names[i]} is {h}x{w}, smaller than the "
                             f"relation crop {size}; lower config.relation.crop")
        for _ in range(per_image):
            y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            crops.append(lr[y:y + size, x:x + size])
    return np.stack(crops)


def describe(split: TargetSplit) -> str:
    return (f"{len(split.shot_names)} shot(s) {split.shot_names}, "
            f"{len(split.heldout_names)} held out {split.heldout_names}")


def set_aside_last(src, dst, count: int, subdirs=("lr", "hr")) -> pathlib.Path:
    """`dst`: links to every pair of `src` but the last `count` by name (matched by stem across
    `subdirs`, the last of which lists the pairs), so those pairs are never read: choices made
    on `dst` (validation pairs, recipes) keep the evaluation pairs unseen. Returns `dst`."""
    src, dst = pathlib.Path(src).expanduser().resolve(), pathlib.Path(dst)
    stems = sorted(p.stem for p in (src / subdirs[-1]).iterdir())
    keep = set(stems[:len(stems) - count])
    for sub in subdirs:
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for path in (src / sub).iterdir():
            link = dst / sub / path.name
            if path.stem in keep and not link.exists():
                link.symlink_to(path)
    return dst
