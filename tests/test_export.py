"""jaxsr.export: the serialized forward pass reproduces the in-process network (independent
reference: `model.apply` in this process) for any batch/height/width; damaged or incompatible
artifacts fail with errors that name the file."""
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxsr import export as ex
from jaxsr import predict
from jaxsr.checkpoint import Checkpointer
from jaxsr.imresize import imresize
from jaxsr.model_factory import build_model
from jaxsr.run_config import make_forward
from model_helpers import random_params  # noqa: E402  (tests/ is on sys.path)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHAPES = [(2, 13, 21), (1, 1, 5), (1, 24, 9)]


def _model(name, scale, kwargs, global_residual=True):
    cfg = ml_collections.ConfigDict({"name": name, "scale": scale, "dtype": "float32",
                                     "global_residual": global_residual, "kwargs": kwargs})
    model = build_model(cfg)
    return model, random_params(model, 1)


MODELS = {
    "edsr_x3": ("edsr", 3, {"num_blocks": 1, "features": 8}),
    "nafnet_x1": ("nafnet", 1, {"width": 8, "enc_blocks": (1, 1), "middle_blocks": 1,
                                "dec_blocks": (1, 1)}),  # pads to a multiple of 4 inside
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A run directory with one checkpoint of a small EDSR x2."""
    path = tmp_path_factory.mktemp("run")
    config = ml_collections.ConfigDict({
        "method": "supervised",
        "model": {"name": "edsr", "scale": 2, "dtype": "float32", "global_residual": True,
                  "kwargs": {"num_blocks": 1, "features": 8}},
        "data": {"sample": "clean_hr", "train_dir": ""},
        "train": {"ema_decay": 0.99, "best_metric": "psnr_y"},
        "eval": {"tile": 32},
    })
    model, params = _model("edsr", 2, {"num_blocks": 1, "features": 8})
    ckpt = Checkpointer(path, async_save=False)
    ckpt.save(12, {"params": params, "ema_params": params}, metrics={"psnr_y": 31.25},
              config=config)
    ckpt.close()
    return path, model, params


@pytest.fixture(scope="module")
def artifact(workdir, tmp_path_factory):
    return ex.export_run(workdir[0], tmp_path_factory.mktemp("art") / "model", platforms=["cpu"])


def test_upsample_bicubic_equals_imresize():
    rng = np.random.default_rng(0)
    for scale, shape in [(2, (1, 7, 5, 3)), (3, (2, 1, 2, 3)), (4, (9, 12, 1))]:
        x = rng.uniform(0, 1, shape).astype(np.float32)
        want = np.asarray(imresize(x, output_shape=(shape[-3] * scale, shape[-2] * scale)))
        got = jax.jit(ex.upsample_bicubic, static_argnums=1)(x, scale)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)


def test_flatten_unflatten_roundtrip():
    tree = {"a": {"b": np.ones(2), "c": {"d": np.zeros((1, 2))}}, "e": np.arange(3)}
    flat = ex.flatten_params(tree)
    assert sorted(flat) == ["a/b", "a/c/d", "e"]
    back = ex.unflatten_params(flat)
    assert jax.tree.structure(back) == jax.tree.structure(tree)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_exported_forward_matches_in_process(tmp_path, key):
    name, scale, kwargs = MODELS[key]
    model, params = _model(name, scale, kwargs)
    files = ex.build_artifact(make_forward(model), params, {}, {"scale": scale, "model": name},
                              platforms=("cpu",))
    loaded = ex.load(ex.write_artifact(files, tmp_path / "a.zip"))
    assert loaded.input_hw is None  # symbolic height and width
    reference = jax.jit(make_forward(model))
    rng = np.random.default_rng(2)
    for b, h, w in SHAPES:
        x = rng.uniform(0, 1, (b, h, w, 3)).astype(np.float32)
        got = np.asarray(loaded(x))
        want = np.asarray(reference(params, x))
        assert got.shape == (b, h * scale, w * scale, 3)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.abs(want - np.clip(want, 0, 1)).max() == 0 and want.std() > 0.01


def test_export_run_files_metadata_and_checksums(artifact, workdir):
    files = {p.name for p in artifact.iterdir()}
    assert files == set(ex.FILES)
    meta = json.loads((artifact / "metadata.json").read_text())
    for name in ("forward.jaxexport", "params.npz", "config.json"):
        assert meta["sha256"][name] == hashlib.sha256((artifact / name).read_bytes()).hexdigest()
    assert meta["scale"] == 2 and meta["model"] == "edsr"
    assert meta["platforms"] == ["cpu"] and meta["checkpoint"]["step"] == 12
    assert meta["metrics"] == {"psnr_y": 31.25}
    assert meta["training_data"] == "jaxsr sample 'clean_hr'"
    assert meta["jax_version"] == jax.__version__ and meta["format_version"] == ex.FORMAT_VERSION
    config = json.loads((artifact / "config.json").read_text())
    assert config["model"]["kwargs"] == {"features": 8, "num_blocks": 1}
    # The weights are plain arrays under their parameter paths (inspectable).
    with np.load(artifact / "params.npz") as npz:
        params = workdir[2]
        np.testing.assert_array_equal(npz["net/head/kernel"], params["net"]["head"]["kernel"])
        assert len(npz.files) == len(jax.tree.leaves(params))


def test_predict_with_artifact_equals_predict_with_workdir(artifact, workdir):
    image = np.random.default_rng(3).uniform(0, 1, (45, 38, 3)).astype(np.float32)
    a = predict.restore_array(predict.load_restorer(artifact=str(artifact)), image, tile=32)
    b = predict.restore_array(predict.load_restorer(workdir=str(workdir[0])), image, tile=32)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # A workdir argument that is an artifact is loaded as one.
    assert "artifact" in predict.load_restorer(workdir=str(artifact)).description


def test_runs_with_jax_alone(artifact, tmp_path):
    """The artifact needs no jaxsr code: a fresh interpreter with only jax and numpy."""
    x = np.random.default_rng(4).uniform(0, 1, (2, 11, 17, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, jax\n"
        f"d = {str(artifact)!r}\n"
        "exp = jax.export.deserialize(bytearray(open(d + '/forward.jaxexport', 'rb').read()))\n"
        "params = dict(np.load(d + '/params.npz'))\n"
        f"y = exp.call(params, np.load({str(tmp_path / 'x.npy')!r}))\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(y))\n"
        "assert not any(m.startswith('jaxsr') for m in sys.modules), 'jaxsr was imported'\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = ex.load(artifact)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(loaded(x)), atol=1e-6)


def _copy(artifact, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(artifact, dst)
    return dst


def _rewrite_metadata(path, **changes):
    meta = json.loads((path / "metadata.json").read_text())
    meta.update(changes)
    (path / "metadata.json").write_text(json.dumps(meta))
    return meta


def test_damaged_artifacts_give_clear_errors(artifact, tmp_path, workdir):
    with pytest.raises(ex.ArtifactError, match="does not exist"):
        ex.load(tmp_path / "nothing")
    bad = _copy(artifact, tmp_path, "missing")
    (bad / "params.npz").unlink()
    with pytest.raises(ex.ArtifactError, match="lacks params.npz"):
        ex.load(bad)
    with pytest.raises(ex.ArtifactError, match="training run, not an artifact"):
        ex.load(workdir[0])
    bad = _copy(artifact, tmp_path, "flipped")
    data = bytearray((bad / "forward.jaxexport").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "forward.jaxexport").write_bytes(bytes(data))
    with pytest.raises(ex.ArtifactError, match="forward.jaxexport' is damaged: its sha256"):
        ex.load(bad)
    bad = _copy(artifact, tmp_path, "json")
    (bad / "metadata.json").write_text("{not json")
    with pytest.raises(ex.ArtifactError, match="metadata.json' is not valid JSON"):
        ex.load(bad)
    bad = _copy(artifact, tmp_path, "newer")
    _rewrite_metadata(bad, format_version=ex.FORMAT_VERSION + 1, jaxsr_version="9.0")
    with pytest.raises(ex.ArtifactError, match="format version 2.*Upgrade jaxsr.*jaxsr 9.0"):
        ex.load(bad)
    bad = _copy(artifact, tmp_path, "foreign")
    _rewrite_metadata(bad, format="something-else")
    with pytest.raises(ex.ArtifactError, match="not jaxsr export metadata"):
        ex.load(bad)
    # A zip cut short.
    zipped = ex.write_artifact({n: (artifact / n).read_bytes() for n in ex.FILES},
                               tmp_path / "m.zip")
    (tmp_path / "cut.zip").write_bytes(zipped.read_bytes()[:200])
    with pytest.raises(ex.ArtifactError, match="cut.zip' is not a readable zip"):
        ex.load(tmp_path / "cut.zip")


def test_weights_that_do_not_fit_the_function(artifact, tmp_path):
    """params.npz from another export (checksums updated, so only the fit check can catch it)."""
    bad = _copy(artifact, tmp_path, "mixed")
    with np.load(bad / "params.npz") as npz:
        params = {k: npz[k] for k in npz.files}
    params["net/head/kernel"] = params["net/head/kernel"][..., :4]
    del params["residual_gain"]
    buf = io.BytesIO()
    np.savez(buf, **params)
    (bad / "params.npz").write_bytes(buf.getvalue())
    meta = json.loads((bad / "metadata.json").read_text())
    meta["sha256"]["params.npz"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ex.ArtifactError,
                       match=r"does not fit .*missing residual_gain; net/head/kernel"):
        ex.load(bad)


def test_undeserializable_function_names_the_jax_versions(artifact, tmp_path):
    bad = _copy(artifact, tmp_path, "garbage")
    junk = b"\x00" * 64
    (bad / "forward.jaxexport").write_bytes(junk)
    meta = _rewrite_metadata(bad, jax_version="0.0.1")
    meta["sha256"]["forward.jaxexport"] = hashlib.sha256(junk).hexdigest()
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ex.ArtifactError, match="cannot be deserialized by jax .*written by jax "
                                               "0.0.1"):
        ex.load(bad)


def test_platform_not_exported(tmp_path):
    model, params = _model("edsr", 1, {"num_blocks": 1, "features": 4})
    files = ex.build_artifact(make_forward(model), params, {}, {"scale": 1, "model": "edsr"},
                              platforms=("tpu",))
    path = ex.write_artifact(files, tmp_path / "tpu_only")
    with pytest.raises(ex.ArtifactError, match=r"exported for tpu, not for this machine's cpu; "
                                               r"re-export it with --platforms=cpu"):
        ex.load(path)


def test_multi_platform_export_runs_here(tmp_path):
    model, params = _model("edsr", 2, {"num_blocks": 1, "features": 4})
    files = ex.build_artifact(make_forward(model), params, {}, {"scale": 2, "model": "edsr"})
    loaded = ex.load(ex.write_artifact(files, tmp_path / "all"))
    assert loaded.metadata["platforms"] == ["cpu", "cuda", "tpu"]
    x = np.random.default_rng(5).uniform(0, 1, (1, 9, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)),
                               np.asarray(jax.jit(make_forward(model))(params, x)), atol=1e-5)


def test_write_refuses_to_replace_a_foreign_folder(tmp_path, artifact):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a jaxsr artifact"):
        ex.write_artifact({n: (artifact / n).read_bytes() for n in ex.FILES}, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_zip(workdir, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = tmp_path / "m.zip"
    proc = subprocess.run([sys.executable, "-m", "jaxsr.export", f"--workdir={workdir[0]}",
                           f"--output={out}", "--platforms=cpu,tpu", "--checkpoint=best"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted(ex.FILES)
    loaded = ex.load(out)
    assert loaded.metadata["platforms"] == ["cpu", "tpu"] and loaded.scale == 2
    proc = subprocess.run([sys.executable, "-m", "jaxsr.export", f"--workdir={tmp_path / 'no'}",
                           f"--output={out}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_fixed_size_fallback_for_a_forward_without_symbolic_sizes(tmp_path):
    """A forward that needs concrete sizes is exported for (tile, tile) inputs; predict then
    tiles with that size and matches the in-process function."""
    def forward(params, x):  # np.linspace needs a concrete width
        ramp = jnp.asarray(np.linspace(0.0, 0.2, int(x.shape[2]), dtype=np.float32))
        return jnp.clip(x * params["w"] + ramp[None, None, :, None], 0.0, 1.0)

    params = {"w": np.float32(0.8)}
    files = ex.build_artifact(forward, params, {}, {"scale": 1, "model": "ramp"},
                              platforms=("cpu",), fallback_tile=16)
    loaded = ex.load(ex.write_artifact(files, tmp_path / "fixed"))
    assert loaded.input_hw == (16, 16) and loaded.metadata["input_hw"] == [16, 16]
    x = np.random.default_rng(6).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(forward(params, x)), atol=1e-6)
    with pytest.raises(ValueError, match=r"takes \(16, 16\) inputs only"):
        loaded(x[:, :8])
    restorer = predict.from_artifact(tmp_path / "fixed")
    image = x[0, :, :12]
    out = predict.restore_array(restorer, np.concatenate([image, image], 0), tile=64)
    assert out.shape == (32, 12, 3)  # tiled with 16x16 tiles despite tile=64
