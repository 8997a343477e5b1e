"""grain training pipeline: aligned crops, augmentation, determinism, resume, sharding, errors."""
import json
import pathlib

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from jaxsr import samples
from jaxsr.data import pipeline as P
from jaxsr.data import sources


def _paired_source(scale, sizes, seed=0):
    """Random LR images; HR = LR nearest-upsampled by `scale` (np.repeat), as a list of dicts."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate(sizes):
        lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append({"lr": lr, "hr": np.repeat(np.repeat(lr, scale, 0), scale, 1),
                    "name": f"img{i}.png"})
    return out


def _constant_source(n, size=8):
    """HR-only records whose pixels all equal the record id: identifies records after cropping."""
    return [{"hr": np.full((size, size + 3, 3), i, np.uint8), "name": f"c{i}"} for i in range(n)]


def _dihedral_variants(img):
    """The 8 elements of the dihedral group acting on a square image (independent of pipeline)."""
    return [np.rot90(img, k) for k in range(4)] + [np.rot90(np.fliplr(img), k) for k in range(4)]


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _ids(batches):
    return [int(b["hr"][i, 0, 0, 0]) for b in batches for i in range(b["hr"].shape[0])]


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_crops_are_aligned_real_crops(scale):
    sizes = [(14, 17), (20, 15), (12, 12)]
    src = _paired_source(scale, sizes, seed=scale)
    hr_patch = 12 if scale != 1 else 8
    p = hr_patch // scale
    loader = P.paired_loader(src, batch_size=4, hr_patch=hr_patch, scale=scale, seed=1,
                             shard_index=0, shard_count=1)
    for batch in _take(loader, 3):
        assert set(batch) == {"lr", "hr"}
        assert batch["lr"].shape == (4, p, p, 3) and batch["lr"].dtype == np.uint8
        assert batch["hr"].shape == (4, hr_patch, hr_patch, 3) and batch["hr"].dtype == np.uint8
        for lr, hr in zip(batch["lr"], batch["hr"]):
            np.testing.assert_array_equal(np.repeat(np.repeat(lr, scale, 0), scale, 1), hr)
            # The LR patch is a dihedral variant of a p x p window of one of the source images.
            found = any(
                np.array_equal(v, lr)
                for rec in src
                for y in range(rec["lr"].shape[0] - p + 1)
                for x in range(rec["lr"].shape[1] - p + 1)
                for v in _dihedral_variants(rec["lr"][y:y + p, x:x + p]))
            assert found


def test_augment_gives_all_8_dihedral_variants_and_off_gives_identity():
    img = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    src = [{"hr": img, "name": "only"}]
    variants = _dihedral_variants(img)
    seen = set()
    for batch in _take(P.hr_loader(src, batch_size=8, hr_patch=6, seed=3), 12):
        for patch in batch["hr"]:
            matches = [k for k, v in enumerate(variants) if np.array_equal(v, patch)]
            assert len(matches) == 1
            seen.add(matches[0])
    assert seen == set(range(8))
    for batch in _take(P.hr_loader(src, batch_size=8, hr_patch=6, seed=3, augment=False), 3):
        for patch in batch["hr"]:
            np.testing.assert_array_equal(patch, img)


def test_same_seed_same_batches_different_seed_different():
    src = _paired_source(2, [(16, 16)] * 5)
    make = lambda seed: P.paired_loader(src, batch_size=2, hr_patch=8, scale=2, seed=seed)
    a, b, c = _take(make(7), 6), _take(make(7), 6), _take(make(8), 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["hr"], y["hr"])
        np.testing.assert_array_equal(x["lr"], y["lr"])
    assert any(not np.array_equal(x["hr"], z["hr"]) for x, z in zip(a, c))


def test_new_crops_every_epoch():
    src = _paired_source(1, [(16, 16)])  # one record: every batch element is a new draw of it
    patches = [b["hr"][0] for b in _take(P.paired_loader(src, batch_size=1, hr_patch=4, scale=1,
                                                          seed=0), 10)]
    assert len({p.tobytes() for p in patches}) > 5


@pytest.mark.parametrize("k", [1, 4])
def test_resume_from_saved_state_matches_uninterrupted_run(k):
    sizes = [(10, 11)] * 5  # 5 records, batch 2: the run crosses epoch boundaries
    make = lambda: P.paired_loader(_paired_source(2, sizes), batch_size=2, hr_patch=8, scale=2,
                                   seed=11)
    full = _take(make(), k + 5)
    it = iter(make())
    for _ in range(k):
        next(it)
    state = P.iterator_state(it)
    assert isinstance(json.loads(state), dict)  # JSON-able
    resumed = P.restore_iterator(make(), state)  # fresh loader and source objects
    for want in full[k:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["hr"], want["hr"])
        np.testing.assert_array_equal(got["lr"], want["lr"])
    fresh = P.restore_iterator(make(), None)
    np.testing.assert_array_equal(next(fresh)["hr"], full[0]["hr"])


def test_restore_rejects_state_of_a_different_loader():
    src = _constant_source(4)
    it = iter(P.hr_loader(src, batch_size=1, hr_patch=4, seed=0))
    next(it)
    state = P.iterator_state(it)
    with pytest.raises(ValueError, match="[Ss]ampler"):
        P.restore_iterator(P.hr_loader(src, batch_size=1, hr_patch=4, seed=1), state)


def test_orbax_checkpoint_manager_roundtrip(tmp_path):
    make = lambda: P.hr_loader(_constant_source(5), batch_size=2, hr_patch=4, seed=2)
    it = iter(make())
    for _ in range(3):
        next(it)
    with ocp.CheckpointManager(tmp_path) as mngr:
        mngr.save(3, args=ocp.args.Composite(
            params=ocp.args.StandardSave({"w": np.arange(3.0)}), data=P.CheckpointSave(it)))
        mngr.wait_until_finished()
        want = [next(it)["hr"] for _ in range(4)]
        restored = mngr.restore(3, args=ocp.args.Composite(
            params=ocp.args.StandardRestore({"w": np.zeros(3)}),
            data=P.CheckpointRestore(iter(make()))))
    np.testing.assert_array_equal(restored["params"]["w"], np.arange(3.0))
    for w in want:
        np.testing.assert_array_equal(next(restored["data"])["hr"], w)


def test_single_shard_epochs_are_permutations():
    n = 5
    ids = _ids(_take(P.hr_loader(_constant_source(n), batch_size=1, hr_patch=4, seed=5,
                                 shard_index=0, shard_count=1), 4 * n))
    epochs = [ids[e * n:(e + 1) * n] for e in range(4)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs


def test_default_sharding_is_single_process_on_cpu():
    ids = _ids(_take(P.hr_loader(_constant_source(4), batch_size=4, hr_patch=4, seed=0), 1))
    assert sorted(ids) == [0, 1, 2, 3]


@pytest.mark.parametrize("n", [5, 6])
def test_shards_are_disjoint_and_cover_the_dataset(n):
    seen = []
    for shard in range(2):
        loader = P.hr_loader(_constant_source(n), batch_size=1, hr_patch=4, seed=9,
                             shard_index=shard, shard_count=2)
        ids = _ids(_take(loader, 4 * n))
        shard_set = set(ids)
        m = len(shard_set)
        # every shard-epoch of m consecutive records is a permutation of the shard's records
        assert all(set(ids[e * m:(e + 1) * m]) == shard_set for e in range(len(ids) // m))
        seen.append(shard_set)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(n))


def test_finite_epochs_equal_shards():
    counts, union = [], set()
    for shard in range(2):
        loader = P.hr_loader(_constant_source(6), batch_size=1, hr_patch=4, seed=9,
                             shard_index=shard, shard_count=2, num_epochs=2)
        ids = _ids(list(loader))
        counts.append(len(ids))
        assert sorted(ids[:3]) == sorted(ids[3:])  # two passes over the same 3 records
        union |= set(ids)
    assert counts == [6, 6] and union == set(range(6))


def test_record_smaller_than_patch_raises_with_its_name():
    src = _paired_source(2, [(16, 16), (16, 16), (5, 30)])
    with pytest.raises(ValueError, match=r"img2\.png.*smaller"):
        _take(P.paired_loader(src, batch_size=3, hr_patch=12, scale=2, seed=0), 1)
    small = [{"hr": np.zeros((16, 7, 3), np.uint8), "name": "narrow.png"}]
    with pytest.raises(ValueError, match=r"narrow\.png.*smaller"):
        _take(P.hr_loader(small, batch_size=1, hr_patch=8, seed=0), 1)


def test_bad_records_and_arguments_raise_clear_errors():
    src = _paired_source(2, [(8, 8)])
    with pytest.raises(ValueError, match=r"img0\.png.*scale=3"):
        _take(P.paired_loader(src, batch_size=1, hr_patch=6, scale=3, seed=0), 1)
    with pytest.raises(KeyError, match="hr_loader"):
        _take(P.paired_loader(_constant_source(1), batch_size=1, hr_patch=4, scale=1, seed=0), 1)
    with pytest.raises(ValueError, match="multiple of scale"):
        P.paired_loader(src, batch_size=1, hr_patch=10, scale=4, seed=0)
    with pytest.raises(ValueError, match="shard_count"):
        P.paired_loader(src, batch_size=1, hr_patch=8, scale=2, seed=0, shard_index=1)


def test_eval_pairs_returns_full_images_in_order():
    src = _paired_source(3, [(7, 9), (5, 4)])
    pairs = P.eval_pairs(src)
    assert [name for _, _, name in pairs] == ["img0.png", "img1.png"]
    for (lr, hr, _), rec in zip(pairs, src):
        np.testing.assert_array_equal(lr, rec["lr"])
        np.testing.assert_array_equal(hr, rec["hr"])


# ---- real shipped samples -----------------------------------------------------------------

class _LocalPairs:
    """Independent minimal reader of a {lr,hr}/NNN.png folder (sorted by file name)."""

    def __init__(self, root: pathlib.Path):
        self.files = sorted((root / "hr").glob("*.png"))
        self.root = root

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        f = self.files[i]
        read = lambda p: np.asarray(Image.open(p).convert("RGB"))
        return {"lr": read(self.root / "lr" / f.name), "hr": read(f), "name": f.stem}


def _locate(patch, images):
    """(image index, y, x) of an exact occurrence of `patch` in one of `images`, or None."""
    p = patch.shape[0]
    for i, img in enumerate(images):
        rows = np.lib.stride_tricks.sliding_window_view(img[:img.shape[0] - p + 1, :, 0], p, 1)
        ys, xs = np.nonzero(np.all(rows == patch[0, :, 0], axis=-1))  # candidates: first row
        for y, x in zip(ys, xs):
            if np.array_equal(img[y:y + p, x:x + p], patch):
                return i, int(y), int(x)
    return None


def test_loader_on_shipped_city100_samples_keeps_pairs_aligned():
    src = _LocalPairs(samples.path("city100_nikon"))
    assert len(src) == 8
    records = [src[i] for i in range(len(src))]
    hrs = [r["hr"] for r in records]
    batch = _take(P.paired_loader(src, batch_size=4, hr_patch=48, scale=1, seed=0,
                                  augment=False), 1)[0]
    assert batch["lr"].shape == batch["hr"].shape == (4, 48, 48, 3)
    for lr, hr in zip(batch["lr"], batch["hr"]):
        where = _locate(hr, hrs)
        assert where is not None
        i, y, x = where
        np.testing.assert_array_equal(lr, records[i]["lr"][y:y + 48, x:x + 48])


def test_loader_over_paired_folder_source_matches_local_reader():
    root = samples.path("city100_nikon")
    theirs, ours = sources.PairedFolderSource(root), _LocalPairs(root)
    assert len(theirs) == len(ours)
    make = lambda s: P.paired_loader(s, batch_size=4, hr_patch=64, scale=1, seed=4)
    for a, b in zip(_take(make(theirs), 2), _take(make(ours), 2)):
        np.testing.assert_array_equal(a["lr"], b["lr"])
        np.testing.assert_array_equal(a["hr"], b["hr"])
    pairs = P.eval_pairs(theirs)
    assert [name for _, _, name in pairs] == [f.stem for f in ours.files]
    for (lr, hr, _), i in zip(pairs, range(len(ours))):
        assert lr.shape == hr.shape == (256, 256, 3)
        np.testing.assert_array_equal(hr, ours[i]["hr"])


def test_hr_loader_over_image_folder_source_on_clean_samples():
    src = sources.ImageFolderSource(samples.path("clean_hr"))
    images = [np.asarray(Image.open(f).convert("RGB"))
              for f in sorted(samples.path("clean_hr").glob("*.png"))]
    batch = _take(P.hr_loader(src, batch_size=4, hr_patch=32, seed=0, augment=False), 1)[0]
    assert set(batch) == {"hr"} and batch["hr"].shape == (4, 32, 32, 3)
    for patch in batch["hr"]:
        assert _locate(patch, images) is not None
