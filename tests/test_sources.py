"""jaxsr.data.sources over small folders written with PIL."""
import pickle

import numpy as np
import pytest
from PIL import Image

import jaxsr.data.sources as sources_mod
from jaxsr.data.sources import ImageFolderSource, PairedFolderSource, match_pairs
from jaxsr.imageio import PairMismatchError

RNG = np.random.default_rng(7)


def save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def rand(h, w, c=3):
    return RNG.integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


def make_pairs(root, names, scale, lr_hw=(4, 6), lr_ext="png", hr_ext="png"):
    out = {}
    for n in names:
        lr = save(root / "lr" / f"{n}.{lr_ext}", rand(*lr_hw))
        hr = save(root / "hr" / f"{n}.{hr_ext}", rand(lr_hw[0] * scale, lr_hw[1] * scale))
        out[n] = (lr, hr)
    return out


def test_paired_exact_values_and_inferred_scale(tmp_path):
    ref = make_pairs(tmp_path, ["b", "a", "c10"], 2, lr_ext="png", hr_ext="bmp")
    src = PairedFolderSource(tmp_path)
    assert len(src) == 3 and src.scale == 2
    assert src.names == ["a", "b", "c10"]
    for i, name in enumerate(src.names):
        rec = src[i]
        assert rec["name"] == name
        assert rec["lr"].dtype == np.uint8 and rec["hr"].shape == (8, 12, 3)
        np.testing.assert_array_equal(rec["lr"], ref[name][0])
        np.testing.assert_array_equal(rec["hr"], ref[name][1])
    np.testing.assert_array_equal(src[-1]["hr"], ref["c10"][1])
    with pytest.raises(IndexError):
        src[3]


def test_same_size_pairs_scale_one(tmp_path):
    make_pairs(tmp_path, ["001", "002"], 1, lr_hw=(9, 7))
    src = PairedFolderSource(tmp_path)
    assert src.scale == 1 and src[0]["lr"].shape == src[0]["hr"].shape == (9, 7, 3)


def test_custom_subdirs_and_gray(tmp_path):
    save(tmp_path / "rain" / "x.png", rand(5, 5, 0))
    save(tmp_path / "clean" / "x.jpg", rand(5, 5))
    src = PairedFolderSource(tmp_path, lr_subdir="rain", hr_subdir="clean", scale=1)
    assert src[0]["lr"].shape == (5, 5, 3)


def test_missing_partner_names_files(tmp_path):
    make_pairs(tmp_path, ["a", "b"], 2)
    save(tmp_path / "lr" / "orphan.png", rand(4, 6))
    with pytest.raises(ValueError) as info:
        PairedFolderSource(tmp_path)
    msg = str(info.value)
    assert "orphan.png" in msg and str(tmp_path / "hr") in msg and "Fix" in msg


def test_duplicate_stem(tmp_path):
    make_pairs(tmp_path, ["a"], 2)
    save(tmp_path / "lr" / "a.bmp", rand(4, 6))
    with pytest.raises(ValueError, match=r"a\.bmp"):
        PairedFolderSource(tmp_path)


def test_size_mismatch_and_inconsistent_scale(tmp_path):
    make_pairs(tmp_path, ["a"], 2)
    save(tmp_path / "lr" / "b.png", rand(4, 6))
    save(tmp_path / "hr" / "b.png", rand(12, 18))  # scale 3 in a scale-2 folder
    # checked up front, from the headers (issue 13): before any training step
    with pytest.raises(ValueError, match="disagree with scale 2") as info:
        PairedFolderSource(tmp_path)
    assert "lr/b.png" in str(info.value) and "hr/b.png" in str(info.value)
    assert "a.png" not in str(info.value) and "needs HR = 8x12" in str(info.value)
    src = PairedFolderSource(tmp_path, check=False)  # still checked when read
    assert src.scale == 2
    src[0]
    with pytest.raises(PairMismatchError) as info:
        src[1]
    assert "lr/b.png" in str(info.value) and "hr/b.png" in str(info.value)


def test_non_integer_scale(tmp_path):
    save(tmp_path / "lr" / "a.png", rand(4, 6))
    save(tmp_path / "hr" / "a.png", rand(6, 9))
    with pytest.raises(ValueError, match="integer scale"):
        PairedFolderSource(tmp_path)


def test_missing_folder(tmp_path):
    (tmp_path / "lr").mkdir()
    with pytest.raises(FileNotFoundError, match="hr"):
        PairedFolderSource(tmp_path)


def test_lazy_and_picklable(tmp_path, monkeypatch):
    ref = make_pairs(tmp_path, ["a", "b"], 3)

    def boom(*a, **k):
        raise AssertionError("pixels read during construction")

    monkeypatch.setattr(sources_mod, "read_pair", boom)
    monkeypatch.setattr(sources_mod, "read_image", boom)
    src = PairedFolderSource(tmp_path, scale=None)
    hr_src = ImageFolderSource(tmp_path / "hr")
    monkeypatch.undo()
    src2 = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(src2[1]["hr"], ref["b"][1])
    assert pickle.loads(pickle.dumps(hr_src))[0]["name"] == "a"


def test_image_folder(tmp_path):
    a = save(tmp_path / "img2.png", rand(6, 8))
    g = save(tmp_path / "img1.jpg", np.full((5, 5), 77, np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    src = ImageFolderSource(tmp_path)
    assert len(src) == 2 and src.names == ["img1", "img2"]
    rec = src[0]
    assert set(rec) == {"hr", "name"} and rec["hr"].shape == (5, 5, 3)
    assert abs(int(rec["hr"].astype(int).mean()) - int(g.mean())) <= 1
    np.testing.assert_array_equal(src[1]["hr"], a)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderSource(tmp_path / "empty")


def test_match_pairs_custom_keys(tmp_path):
    for name in ["0001x2.png", "0002x2.png"]:
        save(tmp_path / "lr" / name, rand(2, 2))
    for name in ["0001.png", "0002.png"]:
        save(tmp_path / "hr" / name, rand(4, 4))
    pairs = match_pairs(sorted((tmp_path / "lr").iterdir()), sorted((tmp_path / "hr").iterdir()),
                        lr_key=lambda p: p.stem[:-2])
    assert [(n, lr.name, hr.name) for n, lr, hr in pairs] == [
        ("0001", "0001x2.png", "0001.png"), ("0002", "0002x2.png", "0002.png")]


def test_city100_shared_data(shared_data):
    src = PairedFolderSource(shared_data / "city100" / "nikon_d5500")
    assert len(src) == 50 and src.scale == 1
    rec = src[0]
    assert rec["name"] == "001" and rec["lr"].shape == rec["hr"].shape == (512, 512, 3)


def test_in_memory_source_equals_its_source_and_caches_only_small_sets(tmp_path):
    from jaxsr.data.sources import InMemorySource, cache_if_small
    rng = np.random.default_rng(0)
    for i in range(3):
        for sub, size in (("lr", 8), ("hr", 16)):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                tmp_path / sub / f"{i:03d}.png")
    source = PairedFolderSource(tmp_path)
    cached = InMemorySource(source)
    assert len(cached) == 3
    for i in range(3):
        a, b = source[i], cached[i]
        assert a["name"] == b["name"]
        np.testing.assert_array_equal(a["lr"], b["lr"])
        np.testing.assert_array_equal(a["hr"], b["hr"])
    assert cached.identity_class is PairedFolderSource  # the pipeline's name for resumed state
    assert isinstance(cache_if_small(source, 3), InMemorySource)
    assert cache_if_small(source, 2) is source
