"""The decode-once store: same records and batches as its source, atomic, rebuilt on change."""
import os
import pathlib
import pickle
import threading

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxsr.config_util import ConfigError
from jaxsr.data import pipeline as P
from jaxsr.data import store as S
from jaxsr.data.sources import DataError, ImageFolderSource, InMemorySource, PairedFolderSource
from jaxsr.train import data as data_lib


def _png(path: pathlib.Path, h: int, w: int, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


def _paired_folder(root: pathlib.Path, n: int = 5, scale: int = 2) -> pathlib.Path:
    for i in range(n):
        h, w = 12 + i, 14 + 2 * i  # sizes differ per record
        _png(root / "lr" / f"{i:03d}.png", h, w, seed=2 * i)
        _png(root / "hr" / f"{i:03d}.png", h * scale, w * scale, seed=2 * i + 1)
    return root


def _image_folder(root: pathlib.Path, n: int = 4) -> pathlib.Path:
    for i in range(n):
        _png(root / f"img{i}.png", 20 + i, 24, seed=10 + i)
    return root


def _assert_same_records(a, b):
    assert len(a) == len(b)
    for i in range(len(a)):
        ra, rb = a[i], b[i]
        assert sorted(ra) == sorted(rb)
        for k in ra:
            if isinstance(ra[k], np.ndarray):
                assert ra[k].dtype == rb[k].dtype and np.array_equal(ra[k], rb[k]), (i, k)
            else:
                assert ra[k] == rb[k], (i, k)


def _tmp_entries(root: pathlib.Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-"))


def test_paired_and_hr_only_stores_return_the_source_records(tmp_path):
    paired = PairedFolderSource(_paired_folder(tmp_path / "pairs"))
    hr_only = ImageFolderSource(_image_folder(tmp_path / "clean"))
    for source in (paired, hr_only):
        store = S.disk_store(source, tmp_path / "stores", progress=False)
        _assert_same_records(store, source)
        rec = store[-1]
        assert not rec["hr"].flags.writeable  # a view of the read-only map, not a copy
        assert store.identity_name == f"jaxsr.data.sources.{type(source).__name__}"
    assert store.nbytes == sum(source[i]["hr"].nbytes for i in range(len(source)))
    with pytest.raises(IndexError):
        store[len(store)]


def test_second_use_reuses_the_store_without_decoding(tmp_path, monkeypatch):
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs"))
    first = S.disk_store(source, tmp_path / "stores", progress=False)
    monkeypatch.setattr(PairedFolderSource, "__getitem__",
                        lambda self, i: pytest.fail("decoded again"))
    again = S.disk_store(PairedFolderSource(tmp_path / "pairs"), tmp_path / "stores")
    assert again.path == first.path
    assert [p.name for p in (tmp_path / "stores").iterdir()] == [first.path.name]


def test_store_batches_equal_source_batches_and_positions_carry_over(tmp_path):
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs", n=6))
    store = S.disk_store(source, tmp_path / "stores", progress=False)
    kw = dict(batch_size=4, hr_patch=8, scale=2, seed=3)
    plain, stored = iter(P.paired_loader(source, **kw)), iter(P.paired_loader(store, **kw))
    for _ in range(5):  # past one epoch
        a, b = next(plain), next(stored)
        np.testing.assert_array_equal(a["lr"], b["lr"])
        np.testing.assert_array_equal(a["hr"], b["hr"])
    # A position saved without the store resumes with it (and the other way round).
    state = P.iterator_state(plain)
    resumed = P.restore_iterator(P.paired_loader(store, **kw), state)
    back = P.restore_iterator(P.paired_loader(source, **kw), P.iterator_state(stored))
    for _ in range(3):
        a, b, c = next(plain), next(resumed), next(back)
        np.testing.assert_array_equal(a["hr"], b["hr"])
        np.testing.assert_array_equal(a["hr"], c["hr"])
    hr = ImageFolderSource(_image_folder(tmp_path / "clean"))
    hr_store = S.disk_store(hr, tmp_path / "stores", progress=False)
    a = next(iter(P.hr_loader(hr, batch_size=2, hr_patch=16, seed=0)))
    b = next(iter(P.hr_loader(hr_store, batch_size=2, hr_patch=16, seed=0)))
    np.testing.assert_array_equal(a["hr"], b["hr"])


def test_store_pickles_by_path_without_pixels(tmp_path):
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs"))
    store = S.disk_store(source, tmp_path / "stores", progress=False)
    store[0]  # maps opened: still not pickled
    blob = pickle.dumps(store)
    assert len(blob) < 300 < store.nbytes
    _assert_same_records(pickle.loads(blob), source)
    keyed = pickle.loads(pickle.dumps(P._KeyedSource(store)))
    assert repr(keyed) == repr(P._KeyedSource(source))


def test_a_changed_file_rebuilds_the_store(tmp_path):
    root = _paired_folder(tmp_path / "pairs")
    old = S.disk_store(PairedFolderSource(root), tmp_path / "stores", progress=False)
    new_hr = _png(root / "hr" / "002.png", 2 * 14, 2 * 18, seed=99)
    st = os.stat(root / "hr" / "002.png")
    os.utime(root / "hr" / "002.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    source = PairedFolderSource(root)
    new = S.disk_store(source, tmp_path / "stores", progress=False)
    assert new.path != old.path
    np.testing.assert_array_equal(new[2]["hr"], new_hr)
    _assert_same_records(new, source)


def test_subset_store_is_keyed_by_its_indices(tmp_path):
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs"))
    train, val = data_lib.split_train_val(source, 2)
    a = S.disk_store(train, tmp_path / "stores", progress=False)
    b = S.disk_store(val, tmp_path / "stores", progress=False)
    assert a.path != b.path and len(a) == 3 and len(b) == 2
    _assert_same_records(b, val)
    assert a.identity_name == "jaxsr.train.data.Subset"  # as InMemorySource(train) names it
    assert repr(P._KeyedSource(a)) == repr(P._KeyedSource(InMemorySource(train)))


class _Boom(RuntimeError):
    pass


class _FailingSource:
    """Records of `source`; record `fail_at` raises (a crash mid-write)."""

    def __init__(self, source, fail_at):
        self.source, self.fail_at = source, fail_at

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        if self.fail_at is not None and i == self.fail_at:
            raise _Boom("simulated crash")
        return self.source[i]

    def fingerprint(self):
        return self.source.fingerprint()

    identity_name = "tests.FailingSource"


def test_an_interrupted_write_leaves_nothing_that_is_used_later(tmp_path):
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs"))
    root = tmp_path / "stores"
    with pytest.raises(DataError, match="record 3"):
        S.disk_store(_FailingSource(source, 3), root, progress=False, threads=2)
    assert list(root.iterdir()) == []  # neither a store nor a temporary folder
    # A build killed outright leaves its temporary folder: never taken for the store.
    (root / ".tmp-killed").mkdir()
    (root / ".tmp-killed" / "index.json").write_text("{}")
    store = S.disk_store(_FailingSource(source, None), root, progress=False)
    _assert_same_records(store, source)
    # A store folder damaged from outside (a truncated file) is rebuilt, not read.
    hr_file = store.path / "hr.u8"
    hr_file.write_bytes(hr_file.read_bytes()[:100])
    again = S.disk_store(_FailingSource(source, None), root, progress=False)
    _assert_same_records(again, source)
    assert _tmp_entries(root) == [".tmp-killed"]


def test_undecodable_image_names_the_file(tmp_path):
    root = _paired_folder(tmp_path / "pairs")
    source = PairedFolderSource(root)
    bad = root / "hr" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # header intact, pixels cut
    with pytest.raises(DataError) as err:
        S.disk_store(source, tmp_path / "stores", progress=False)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "stores").iterdir()) == []


def test_concurrent_writers_both_get_the_one_store(tmp_path):
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs"))
    both_writing = threading.Barrier(2, timeout=20)

    class Slow(_FailingSource):
        def __getitem__(self, i):
            if i == 1:
                both_writing.wait()  # both writers are mid-build at once
            return super().__getitem__(i)

    results, errors = [], []

    def build():
        try:
            results.append(S.disk_store(Slow(source, None), tmp_path / "stores",
                                        progress=False, threads=1))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0].path == results[1].path
    assert [p.name for p in (tmp_path / "stores").iterdir()] == [results[0].path.name]
    for r in results:
        _assert_same_records(r, source)


def test_store_dir_argument_then_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv(S.STORE_ENV, str(tmp_path / "env"))
    assert S.store_root(tmp_path / "arg") == tmp_path / "arg"
    assert S.store_root() == tmp_path / "env"
    monkeypatch.delenv(S.STORE_ENV)
    assert S.store_root() == pathlib.Path("~/.cache/jaxsr/stores").expanduser()


def test_a_source_without_fingerprint_cannot_be_stored(tmp_path):
    records = [{"hr": np.zeros((8, 8, 3), np.uint8), "name": "a"}]
    with pytest.raises(TypeError, match="fingerprint"):
        S.disk_store(records, tmp_path)


def _data_config(**kw) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict(dict(cache_images=3, batch_size=2, hr_patch=8, augment=True,
                                       worker_count=0))
    d.update(kw)
    return d


def test_config_store_modes(tmp_path, monkeypatch):
    monkeypatch.setenv(S.STORE_ENV, str(tmp_path / "env_stores"))
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs", n=4))
    small = data_lib.Subset(source, range(3))
    assert isinstance(data_lib.stored_source(_data_config(), small), InMemorySource)
    auto = data_lib.stored_source(_data_config(), source)  # 4 > cache_images: disk
    assert isinstance(auto, S.DiskStore) and auto.path.parent == tmp_path / "env_stores"
    disk = data_lib.stored_source(_data_config(store="disk", store_dir=str(tmp_path / "s")),
                                  small)
    assert isinstance(disk, S.DiskStore) and disk.path.parent == tmp_path / "s"
    assert isinstance(data_lib.stored_source(_data_config(store="memory"), source),
                      InMemorySource)
    assert data_lib.stored_source(_data_config(store="none"), source) is source
    records = [{"hr": np.zeros((8, 8, 3), np.uint8), "name": str(i)} for i in range(5)]
    assert data_lib.stored_source(_data_config(), records) is records  # no fingerprint
    with pytest.raises(ConfigError, match="config.data.store='disk'.*'memory' or 'none'"):
        data_lib.stored_source(_data_config(store="disk"), records)
    with pytest.raises(ConfigError, match=r"config.data.store='mmap'.*auto, memory, disk, none"):
        data_lib.stored_source(_data_config(store="mmap"), source)


def test_train_iterator_batches_and_resume_do_not_depend_on_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv(S.STORE_ENV, str(tmp_path / "stores"))
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs", n=6))
    runs = {mode: data_lib.train_iterator(_data_config(store=mode), source, 2, seed=1)
            for mode in ("none", "memory", "disk")}
    for _ in range(4):
        got = {mode: next(b) for mode, b in runs.items()}
        for mode in ("memory", "disk"):
            np.testing.assert_array_equal(got[mode]["hr"], got["none"]["hr"])
            np.testing.assert_array_equal(got[mode]["lr"], got["none"]["lr"])
    state = runs["none"].get_state()
    disk = data_lib.train_iterator(_data_config(store="disk"), source, 2, seed=1)
    disk.set_state(state)
    np.testing.assert_array_equal(next(disk)["hr"], next(runs["none"])["hr"])


@pytest.mark.slow
def test_worker_processes_read_the_store_and_give_the_same_batches(tmp_path):
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain worker processes read absl flags
        flags.FLAGS.mark_as_parsed()
    source = PairedFolderSource(_paired_folder(tmp_path / "pairs", n=6))
    store = S.disk_store(source, tmp_path / "stores", progress=False)
    kw = dict(batch_size=2, hr_patch=8, scale=2, seed=0, worker_count=2)
    a, b = iter(P.paired_loader(store, **kw)), iter(P.paired_loader(source, **kw))
    for _ in range(4):
        np.testing.assert_array_equal(next(a)["hr"], next(b)["hr"])
