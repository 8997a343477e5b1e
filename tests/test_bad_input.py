"""Every bad input of issue 13, through the real command lines (subprocesses).

Each case runs `python -m jaxsr.main | jaxsr.predict | jaxsr.export` and checks the exit code,
that the message names the file/key and the fix, that no traceback is printed, and that nothing
already written (a finished run, earlier outputs, the user's own files) was removed or changed.
One tiny trained run is shared by all cases. `CASES` at the bottom is the table of the closing
note: `python tests/test_bad_input.py` prints it with the measured exit codes and messages.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import jaxsr

ROOT = pathlib.Path(jaxsr.__file__).resolve().parents[1]  # the code under test (and configs/)
TINY = "configs/supervised.py:tiny"


def cli(module: str, *args: str, env: dict | None = None, timeout: int = 300
        ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **(env or {})}
    full_env.pop("JAXSR_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", f"jaxsr.{module}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def png(path: pathlib.Path, h: int = 20, w: int = 20, seed: int = 0) -> pathlib.Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def huge_header_png(path: pathlib.Path, w: int = 100_000, h: int = 100_000) -> pathlib.Path:
    """A valid PNG signature + IHDR claiming w x h RGB, with a tiny (incomplete) IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0,
                                                                        0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def pairs(root: pathlib.Path, n: int = 4, size: int = 24) -> pathlib.Path:
    for i in range(n):
        png(root / "lr" / f"{i:03d}.png", size, size, seed=i)
        png(root / "hr" / f"{i:03d}.png", size, size, seed=100 + i)
    return root


def digest(paths) -> dict[str, str]:
    """sha256 of every file under the given files/folders (what must survive unchanged)."""
    out = {}
    for p in paths:
        p = pathlib.Path(p)
        for f in ([p] if p.is_file() or p.is_symlink() else sorted(p.rglob("*"))):
            if f.is_file() and not f.is_symlink():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            elif f.is_symlink():
                out[str(f)] = "link:" + os.readlink(f)
    return out


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bad_input"))


def make_world(base: pathlib.Path) -> dict:
    """A finished tiny run, its artifact and a folder of good images, under `base`."""
    run = base / "run"
    r = cli("main", f"--config={TINY}", f"--workdir={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    images = base / "images"
    png(images / "a.png", seed=1)
    png(images / "c.png", seed=2)
    art = base / "art"
    r = cli("export", f"--workdir={run}", f"--output={art}", "--platforms=cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    return {"base": base, "run": run, "images": images, "art": art}


# ------------------------------------------------------------------------------------ cases
# Each setup(world, tmp) returns (module, args, protected paths, extra check or None).

def _train(*overrides, data=None, workdir=None):
    def setup(w, tmp):
        args = [f"--config={TINY}", f"--workdir={workdir(tmp) if workdir else tmp / 'new_run'}"]
        if data is not None:
            args.append(f"--config.data.train_dir={data(tmp)}")
        return "main", args + list(overrides), [w["run"]], None
    return setup


def _mismatched(tmp):
    root = pairs(tmp / "data", n=6)
    png(root / "hr" / "004.png", 30, 30, seed=9)  # not 1x its LR (24x24)
    return root


def _undecodable(tmp):
    root = pairs(tmp / "data", n=6)
    (root / "hr" / "005.png").write_bytes(b"this is not a png" * 10)
    return root


def _unpaired(tmp):
    root = pairs(tmp / "data", n=4)
    png(root / "lr" / "extra.png", 24, 24)
    return root


def _no_step_1(tmp):
    # validated before step 1: the new run folder holds no checkpoint
    return not (tmp / "new_run" / "checkpoints").exists()


def _file_workdir(tmp):
    (tmp / "taken").write_text("my notes")
    return tmp / "taken"


def _full_disk(w, tmp):
    wd = tmp / "full"
    wd.mkdir()
    (wd / "notes.txt").write_text("keep me")
    os.symlink("/dev/full", wd / "metrics.jsonl")  # every write to it: ENOSPC
    return "main", [f"--config={TINY}", f"--workdir={wd}"], [w["run"], wd / "notes.txt"], None


def _space_config(w, tmp):
    return "main", ["--config", TINY, "--config.train.num_stepz=5", f"--workdir={tmp / 'r'}"], \
        [w["run"]], lambda tmp: not (tmp / "r").exists()


def _predict(*extra, inputs=None, output=None):
    def setup(w, tmp):
        out = output(w, tmp) if output else tmp / "out"
        src = inputs(w, tmp) if inputs else w["images"]
        return "predict", [f"--workdir={w['run']}", f"--input={src}", f"--output={out}",
                           *extra], [w["run"], w["images"]], None
    return setup


def _with_huge(w, tmp):
    d = tmp / "in"
    shutil.copytree(w["images"], d)
    huge_header_png(d / "b_huge.png")  # sorted between the good a.png and c.png
    return d


def _with_garbage(w, tmp):
    d = tmp / "in"
    shutil.copytree(w["images"], d)
    (d / "b_bad.png").write_bytes(b"\x89PNG garbage")
    return d


def _good_outputs_written(tmp):
    return (tmp / "out" / "a.png").is_file() and (tmp / "out" / "c.png").is_file()


def _existing_file(w, tmp):
    (tmp / "out.png").write_text("not a folder")
    return tmp / "out.png"


def _under_a_file(w, tmp):
    (tmp / "plain").write_text("a file")
    return tmp / "plain" / "out"


def _export(output, workdir=None):
    def setup(w, tmp):
        out = output(w, tmp)
        wd = workdir(w, tmp) if workdir else w["run"]
        return "export", [f"--workdir={wd}", f"--output={out}", "--platforms=cpu"], \
            [w["run"], out], None
    return setup


def _foreign_folder(w, tmp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.txt").write_text("years of work")
    return tmp / "mine"


def _artifact_with_outputs(w, tmp):
    """An artifact folder the user predicted into (issue 13, defect 2)."""
    art = tmp / "art_x"
    shutil.copytree(w["art"], art)
    png(art / "restored" / "a.png", seed=5)
    return art


def _unfinished_run(w, tmp):
    wd = tmp / "untrained"
    wd.mkdir()
    for name in ("config.json", "deployable.json"):
        if (w["run"] / name).exists():  # (runs of older jaxsr have no deployable.json)
            shutil.copy(w["run"] / name, wd)
    return wd


CASES = [
    # (id, setup, exit code, substrings of the message, extra check on tmp or None)
    ("train num_steps=0", _train("--config.train.num_steps=0"), 1,
     ["config.train.num_steps=0 must be at least 1"], None),
    ("train checkpoint_every=0", _train("--config.train.checkpoint_every=0"), 1,
     ["config.train.checkpoint_every=0"], None),
    ("train log_every=0", _train("--config.train.log_every=0"), 1,
     ["config.train.log_every=0"], None),
    ("train batch_size=0", _train("--config.data.batch_size=0"), 1,
     ["config.data.batch_size=0"], None),
    ("train val_count >= pairs", _train("--config.data.val_count=99"), 1,
     ["config.data.val_count=99 leaves no training data"], None),
    ("train --config FILE (space), bad key", _space_config, 1,
     ["unknown config key 'train.num_stepz'", "train.num_steps"], None),
    ("train mismatched pair (> cache_images)",
     _train("--config.data.cache_images=1", data=_mismatched), 1,
     ["disagree with scale 1", "hr/004.png", "Fix:"], _no_step_1),
    ("train undecodable image (> cache_images)",
     _train("--config.data.cache_images=1", data=_undecodable), 1,
     ["hr/005.png", "cannot be read", "Fix:"], _no_step_1),
    ("train unpaired image", _train(data=_unpaired), 1,
     ["extra.png", "has no HR partner", "Fix:"], _no_step_1),
    ("train missing data folder", _train(data=lambda tmp: tmp / "nowhere"), 1,
     ["nowhere/lr", "not found"], None),
    ("train workdir is a file", _train(workdir=_file_workdir), 1,
     ["taken", "is an existing file"], None),
    ("train disk full", _full_disk, 1, ["the disk is full", "/full'"], None),
    ("predict --batch_tiles=-2", _predict("--batch_tiles=-2"), 1, ["--batch_tiles=-2", "1 or more"],
     None),
    ("predict --overlap=-5", _predict("--overlap=-5"), 1, ["--overlap=-5", "negative"], None),
    ("predict --tile=-8", _predict("--tile=-8"), 1, ["--tile=-8"], None),
    ("predict --output is a file", _predict(output=_existing_file), 1,
     ["out.png' is an existing file"], None),
    ("predict --output not writable", _predict(output=_under_a_file), 1,
     ["cannot write into --output", "plain/out"], None),
    ("predict 100000x100000 PNG header among good images", _predict(inputs=_with_huge), 1,
     ["b_huge.png", "10000 megapixels", "JAXSR_MAX_IMAGE_PIXELS", "1 image(s) skipped"],
     _good_outputs_written),
    ("predict undecodable image among good images", _predict(inputs=_with_garbage), 1,
     ["b_bad.png", "1 image(s) skipped"], _good_outputs_written),
    ("predict missing input", _predict(inputs=lambda w, tmp: tmp / "nope"), 1,
     ["nope' does not exist"], None),
    ("predict run without checkpoints",
     lambda w, tmp: ("predict", [f"--workdir={_unfinished_run(w, tmp)}",
                                 f"--input={w['images']}", f"--output={tmp / 'out'}"],
                     [w["run"]], None), 1,
     ["no checkpoints under", "train first"],
     lambda tmp: not [p for p in (tmp / "untrained").iterdir()
                      if p.name not in ("config.json", "deployable.json")]),
    ("export into a non-artifact folder", _export(_foreign_folder), 1,
     ["not a jaxsr artifact"], None),
    ("export onto an existing file", _export(lambda w, tmp: _existing_file(w, tmp)), 1,
     ["is an existing file"], None),
    ("export run without checkpoints",
     _export(lambda w, tmp: tmp / "a2", workdir=_unfinished_run), 1,
     ["no checkpoints under"], lambda tmp: not (tmp / "a2").exists()),
    ("re-export into an artifact folder holding outputs", _export(_artifact_with_outputs), 0,
     [], lambda tmp: (tmp / "art_x" / "restored" / "a.png").is_file()
     and (tmp / "art_x" / "metadata.json").is_file()),
]


@pytest.mark.parametrize("name,setup,code,needles,check", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, tmp_path, name, setup, code, needles, check):
    module, args, protected, _ = setup(world, tmp_path)
    before = digest(protected)
    r = cli(module, *args)
    out = r.stdout + r.stderr
    assert r.returncode == code, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    after = digest(protected)
    if name.startswith("re-export"):  # the artifact's own files are replaced, nothing else
        before = {k: v for k, v in before.items() if "restored" in k}
        after = {k: v for k, v in after.items() if "restored" in k}
    assert after == before  # nothing already written was removed or changed
    if check is not None:
        assert check(tmp_path), out[-3000:]


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.py")))
def test_shipped_configs_pass_the_value_checks(config):
    """The new value checks reject no shipped config (default and tiny variants), and do
    reject each kind of bad value."""
    from jaxsr.config_util import ConfigError, check_values, load_config_file
    import importlib.util
    spec = importlib.util.spec_from_file_location("c", ROOT / "configs" / config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variants = [None] + (["tiny"] if "tiny" in getattr(module, "VARIANTS", ()) else [])
    for variant in variants:
        c = load_config_file(str(ROOT / "configs" / config), variant or "")
        check_values(c)
        for key, bad in (("train.log_every", 0), ("train.checkpoint_every", -1)):
            c2 = c.copy_and_resolve_references()
            c2.unlock()
            c2.train[key.split(".")[1]] = bad
            with pytest.raises(ConfigError, match=rf"config\.{key}={bad}"):
                check_values(c2)


def test_verbose_shows_the_traceback(tmp_path):
    r = cli("main", f"--config={TINY}", "--config.train.num_steps=0",
            f"--workdir={tmp_path / 'r'}", "--verbose")
    assert r.returncode == 1 and "Traceback" in r.stderr and "num_steps=0" in r.stderr


if __name__ == "__main__":  # the closing note's table: case | exit code | message
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        base = pathlib.Path(d)
        w = make_world(base)
        print("| case | exit | message |\n|---|---|---|")
        for i, (name, setup, code, needles, check) in enumerate(CASES):
            tmp = base / f"case{i}"
            tmp.mkdir()
            module, args, _, _ = setup(w, tmp)
            r = cli(module, *args)
            text = (r.stdout + r.stderr).replace(str(tmp), "TMP").replace(str(base), "BASE")
            lines, inside = [], False
            for ln in text.splitlines():
                inside = inside or ln.startswith("error:")
                if ln.startswith("(pass --verbose"):
                    inside = False
                elif inside or " skipped" in ln or ln.startswith("Traceback") or (
                        ln and ln.split(":")[0].endswith("Error")):
                    lines.append(ln.split("] ", 1)[-1].strip())
            msg = " / ".join(lines)[:600].replace("|", "\\|")
            print(f"| {name} | {r.returncode} | {msg} |")
