"""jaxsr.predict: tiled restoration of files equals one untiled forward pass of the same network
(the independent reference), for RGB, gray, RGBA and 16-bit inputs; errors name the file."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxsr import predict
from jaxsr.checkpoint import CheckpointError, Checkpointer
from jaxsr.imageio import ImageReadError, read_image, write_image
from jaxsr.imresize import imresize
from jaxsr.inference import tile_starts
from jaxsr.model_factory import build_model
from jaxsr.run_config import make_forward
from model_helpers import random_params  # noqa: E402  (tests/ is on sys.path)

REPO = pathlib.Path(__file__).resolve().parents[1]
SCALE = 2


def make_workdir(path: pathlib.Path, scale: int = SCALE, name: str = "edsr",
                 kwargs: dict | None = None) -> tuple[pathlib.Path, dict, object]:
    """A run directory with one checkpoint of a small random network (gain 0.5, so the network
    and not only the bicubic/identity path shapes the output)."""
    config = ml_collections.ConfigDict({
        "method": "supervised",
        "model": {"name": name, "scale": scale, "dtype": "float32", "global_residual": True,
                  "kwargs": kwargs or {"num_blocks": 1, "features": 8}},
        "data": {"sample": "clean_hr", "train_dir": ""},
        "train": {"ema_decay": 0.99, "best_metric": "psnr_y"},
        "eval": {"tile": 32, "overlap": 16},
    })
    model = build_model(config.model)
    params = dict(random_params(model, 0))
    params["residual_gain"] = np.full((3,), 0.5, np.float32)
    ckpt = Checkpointer(path, async_save=False)
    ckpt.save(7, {"params": params, "ema_params": params, "step": np.int32(7)},
              metrics={"psnr_y": 30.5}, config=config)
    ckpt.close()
    return path, params, model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path, params, model = make_workdir(tmp_path_factory.mktemp("run"))
    forward = jax.jit(make_forward(model))
    return path, (lambda x: np.asarray(forward(params, x[None]))[0])


@pytest.fixture(scope="module")
def restorer(run):
    return predict.from_run(run[0])


def _image(h, w, seed=0):
    """A smooth image with texture, float32 (h, w, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    base = np.stack([0.5 + 0.3 * np.sin(6 * xx + c) * np.cos(4 * yy) for c in range(3)], -1)
    return np.clip(base + 0.08 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


def _seam_mask(h, w, tile, overlap, scale, margin):
    """Output pixels inside exactly one tile and >= margin input pixels from its inner edges."""
    def axis(n):
        starts = tile_starts(n, tile, overlap)
        count = np.zeros(n, int)
        near = np.zeros(n, bool)
        for s in starts:
            count[s:s + tile] += 1
            if s > 0:
                near[s:s + margin] = True
            if s + tile < n:
                near[s + tile - margin:s + tile] = True
        ok = (count == 1) & ~near
        return np.repeat(ok, scale)
    return axis(h)[:, None] & axis(w)[None, :]


def test_tiled_equals_untiled_away_from_seams(run, restorer):
    _, reference = run
    image = _image(70, 90)
    full = np.clip(reference(image), 0, 1)
    tiled = predict.restore_array(restorer, image, tile=24, overlap=8, batch_tiles=3)
    assert tiled.shape == (140, 180, 3)
    away = _seam_mask(70, 90, 24, 8, SCALE, margin=8)
    assert away.mean() > 0.1
    np.testing.assert_allclose(tiled[away], full[away], atol=1e-4)
    err = np.abs(tiled - full)
    assert err.max() > 1e-4  # (the seam check is not vacuous with this narrow overlap)
    assert err.max() < 0.05 and err.mean() < 0.003  # at the seams: small, blended
    # The default overlap (16) keeps the seams under one 8-bit level.
    default = predict.restore_array(restorer, image, tile=24, batch_tiles=3)
    assert np.abs(default - full).max() < 1 / 255
    # With an overlap whose ~0-weight quarter covers the receptive field, exact everywhere.
    wide = predict.restore_array(restorer, image, tile=48, overlap=36, batch_tiles=2)
    np.testing.assert_allclose(wide, full, atol=1e-4)


def test_rgb_folder_to_png_and_jpg(tmp_path, run, restorer):
    _, reference = run
    src = tmp_path / "in"
    images = {"a": _image(33, 41, 1), "b": _image(57, 35, 2)}
    for name, img in images.items():
        write_image(src / f"{name}.png", img)
    results = predict.predict(src, tmp_path / "out", restorer, tile=32, overlap=24,
                              progress=False)
    assert [pathlib.Path(r["output"]).name for r in results] == ["a.png", "b.png"]
    for name in images:
        lr = read_image(src / f"{name}.png", np.float32)
        want = np.floor(np.clip(reference(lr), 0, 1) * 255 + 0.5)
        got = read_image(tmp_path / "out" / f"{name}.png").astype(np.float64)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1
    # --ext=jpg: JPEG files of the right size.
    predict.predict(str(src / "*.png"), tmp_path / "jpg", restorer, ext="jpg", progress=False)
    with Image.open(tmp_path / "jpg" / "b.jpg") as im:
        assert im.format == "JPEG" and im.size == (70, 114)


def test_gray_16bit_png_gives_gray_16bit_output(tmp_path, run, restorer):
    _, reference = run
    gray16 = (_image(33, 37, 3)[..., 0] * 65535).astype(np.uint16)
    gray16[0, 0] = 1  # a value 8-bit output cannot keep
    write_image(tmp_path / "g.png", gray16)
    r = predict.restore_file(restorer, tmp_path / "g.png", tmp_path / "out" / "g.png",
                             tile=32, overlap=24)
    assert r["gray"] and r["dtype"] == "uint16"
    with Image.open(tmp_path / "out" / "g.png") as im:
        assert im.mode.startswith("I") and im.size == (74, 66)
        got = np.asarray(im).astype(np.float64) / 65535
    rgb = np.repeat(gray16[..., None].astype(np.float32) / 65535, 3, -1)
    out = np.clip(reference(rgb), 0, 1)
    luma = out @ np.array([0.299, 0.587, 0.114])
    # 16-bit precision: |error| ~ 1/65535 plus float rounding (8 bit would be ~2e-3).
    assert np.abs(got - luma).max() < 1e-4


def test_rgb_16bit_tiff_keeps_16_bits_and_jpeg_falls_back_to_8(tmp_path, run, restorer):
    import tifffile
    _, reference = run
    rgb16 = (_image(36, 35, 4) * 65535).astype(np.uint16)
    write_image(tmp_path / "c.tif", rgb16)
    predict.restore_file(restorer, tmp_path / "c.tif", tmp_path / "o" / "c.tif", tile=32,
                           overlap=24)
    got = tifffile.imread(tmp_path / "o" / "c.tif")
    assert got.dtype == np.uint16 and got.shape == (72, 70, 3)
    want = np.clip(reference(rgb16.astype(np.float32) / 65535), 0, 1)
    assert np.abs(got / 65535 - want).max() < 1e-4
    r = predict.restore_file(restorer, tmp_path / "c.tif", tmp_path / "o" / "c.jpg", tile=32)
    assert r["dtype"] == "uint8"


def test_rgba_alpha_is_resized_and_reattached(tmp_path, run, restorer):
    _, reference = run
    h, w = 34, 38
    rgb = (_image(h, w, 5) * 255).round().astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    alpha = ((xx * 7 + yy * 3) % 256).astype(np.uint8)
    alpha[10:15, 10:20] = 0
    write_image(tmp_path / "t.png", np.dstack([rgb, alpha]))
    predict.restore_file(restorer, tmp_path / "t.png", tmp_path / "o" / "t.png", tile=32,
                           overlap=24)
    got = read_image(tmp_path / "o" / "t.png", keep_alpha=True).astype(np.int64)
    assert got.shape == (2 * h, 2 * w, 4)
    want_rgb = np.floor(np.clip(reference(rgb.astype(np.float32) / 255), 0, 1) * 255 + 0.5)
    assert np.abs(got[..., :3] - want_rgb).max() <= 1
    want_alpha = np.clip(np.asarray(imresize(alpha[..., None].astype(np.float32) / 255,
                                             scale=2))[..., 0], 0, 1)
    assert np.abs(got[..., 3] - np.floor(want_alpha * 255 + 0.5)).max() <= 1
    # JPEG has no alpha: dropped, colour kept.
    predict.restore_file(restorer, tmp_path / "t.png", tmp_path / "o" / "t.jpg", tile=32)
    with Image.open(tmp_path / "o" / "t.jpg") as im:
        assert im.mode == "RGB"


@pytest.mark.parametrize("scale", [1, 3])
def test_resize_alpha_blocks_equal_whole_plane_imresize(scale):
    alpha = np.random.default_rng(6).uniform(0, 1, (41, 53)).astype(np.float32)
    want = np.clip(np.asarray(imresize(alpha[..., None], scale=scale))[..., 0], 0, 1)
    got = predict.resize_alpha(alpha, scale, block=16)
    np.testing.assert_allclose(got, want, atol=1e-5)
    as_uint8 = predict.resize_alpha(alpha, scale, block=16,
                                    out=np.zeros((41 * scale, 53 * scale), np.uint8))
    assert np.abs(as_uint8 - np.floor(want * 255 + 0.5)).max() <= 1


def test_probe_image_modes(tmp_path):
    cases = {
        "rgb.png": (np.zeros((4, 4, 3), np.uint8), (False, False, False)),
        "l.png": (np.zeros((4, 4), np.uint8), (True, False, False)),
        "la.png": (np.zeros((4, 4, 2), np.uint8), (True, True, False)),
        "rgba.png": (np.zeros((4, 4, 4), np.uint8), (False, True, False)),
        "l16.png": (np.zeros((4, 4), np.uint16), (True, False, True)),
        "rgb16.png": (np.zeros((4, 4, 3), np.uint16), (False, False, True)),
        "rgba16.tif": (np.zeros((4, 4, 4), np.uint16), (False, True, True)),
        "l16.tif": (np.zeros((4, 4), np.uint16), (True, False, True)),
        "rgb.jpg": (np.zeros((4, 4, 3), np.uint8), (False, False, False)),
    }
    for name, (img, want) in cases.items():
        write_image(tmp_path / name, img)
        info = predict.probe_image(tmp_path / name)
        assert (info.gray, info.alpha, info.high_bit) == want, name


def test_input_and_output_errors_name_the_path(tmp_path, restorer):
    with pytest.raises(predict.PredictError, match="nothere.png' does not exist"):
        predict.resolve_inputs(tmp_path / "nothere.png")
    with pytest.raises(predict.PredictError, match="matches no image files"):
        predict.resolve_inputs(str(tmp_path / "*.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(predict.PredictError, match="holds no images"):
        predict.resolve_inputs(tmp_path / "empty")
    write_image(tmp_path / "x" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "x" / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    files = predict.resolve_inputs(tmp_path / "x")
    with pytest.raises(predict.PredictError, match="would both be written"):
        predict.output_paths(files, tmp_path / "o", "png")
    with pytest.raises(predict.PredictError, match="overwrite the input"):
        predict.output_paths(files, tmp_path / "x")
    with pytest.raises(predict.PredictError, match="--ext='gif'"):
        predict.output_paths(files, tmp_path / "o", "gif")
    # An unreadable image: raised with its name, or skipped (the others are still written).
    (tmp_path / "x" / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(ImageReadError, match="bad.png"):
        predict.predict([tmp_path / "x" / "bad.png"], tmp_path / "o", restorer, progress=False)
    results = predict.predict([tmp_path / "x" / "bad.png", tmp_path / "x" / "a.png"],
                              tmp_path / "o", restorer, progress=False, skip_errors=True)
    assert "bad.png" in results[0]["error"] and (tmp_path / "o" / "a.png").is_file()


def test_model_source_errors(tmp_path):
    with pytest.raises(predict.PredictError, match="exactly one of --workdir"):
        predict.load_restorer()
    with pytest.raises(predict.PredictError, match="exactly one of --workdir"):
        predict.load_restorer(workdir="a", artifact="b")
    with pytest.raises(CheckpointError, match="does not exist"):
        predict.load_restorer(workdir=str(tmp_path / "missing"))
    (tmp_path / "untrained").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints under .*untrained.*train first"):
        predict.load_restorer(workdir=str(tmp_path / "untrained"))


def test_cli(tmp_path, run, restorer):
    write_image(tmp_path / "in" / "p.png", _image(40, 30, 7))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "jaxsr.predict", f"--workdir={run[0]}",
           f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--tile=32",
           "--overlap=24"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predict.predict(tmp_path / "in", tmp_path / "api", restorer, tile=32, overlap=24,
                    progress=False)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "p.png"),
                                  read_image(tmp_path / "api" / "p.png"))
    proc = subprocess.run(cmd[:4] + [f"--input={tmp_path / 'nope.png'}", "--output=o"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "nope.png' does not exist" in proc.stderr


def test_multi_phase_run_uses_its_finetune_checkpoints(tmp_path, run):
    """A DRTL run made before deployable.json existed keeps its final model in
    `finetune/checkpoints` and config.json at the top; `--workdir=RUN` restores that model (the
    method, not predict, knows the folder)."""
    path, params, model = make_workdir(tmp_path / "drtl" / "finetune")
    config = json.loads(json.dumps(Checkpointer(path, async_save=False).read_meta(7)["config"]))
    config.update(method="drtl", finetune={"ema_decay": 0.0})
    (tmp_path / "drtl" / "config.json").write_text(json.dumps(config))
    r = predict.load_restorer(workdir=str(tmp_path / "drtl"))
    assert "finetune" in r.description and r.scale == SCALE
    # The same run described by deployable.json, with the model kept in another folder.
    from jaxsr.deployable import Deployable
    (tmp_path / "drtl" / "finetune").rename(tmp_path / "drtl" / "elsewhere")
    Deployable.of(config["model"], folder="elsewhere", method="test").write(tmp_path / "drtl")
    r = predict.load_restorer(workdir=str(tmp_path / "drtl"))
    assert "elsewhere" in r.description
    image = _image(60, 56, 8)
    want = np.clip(np.asarray(jax.jit(make_forward(model))(params, image[None]))[0], 0, 1)
    np.testing.assert_allclose(predict.restore_array(r, image, tile=48, overlap=36), want,
                               atol=1e-4)
