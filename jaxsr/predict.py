"""Restore images with a trained run or an exported artifact.

    python -m jaxsr.predict --workdir=runs/supervised --input=photos/ --output=restored/
    python -m jaxsr.predict --artifact=model.zip --input='shots/*.jpg' --output=out --ext=png

`--input` is one image, a folder (its images, not recursive) or a glob. Each output keeps the
input's file name (stem) in `--output`, with the input's extension or `--ext`.

Any size: images are restored by overlapping tiles (`--tile`, `--overlap`, `--batch_tiles` per
forward call) that are blended seamlessly. By default (`--mode=auto`) one compiled program on the
device cuts, restores, blends and quantises the whole image and returns it in one transfer
(`jaxsr.inference`, device path); when its float accumulators (16 bytes per output pixel) do not
fit the device, the host path blends band by band instead: host memory then holds one band of
tiles in float plus the output in its final dtype (uint8, or uint16 for 16-bit), so a 4000x3000
photo at x4 fits a small machine. Formats:
- RGB in, RGB out.
- Gray (L, I;16, gray+alpha) in: restored as RGB (gray replicated), written back as gray, the
  BT.601 luma 0.299 R + 0.587 G + 0.114 B of the restored RGB (PIL's RGB -> L conversion).
- Alpha (RGBA, LA, palette with transparency): the colour goes through the model; the alpha is
  resized to the output size with MATLAB bicubic (`jaxsr.imresize` weights), clipped, and
  reattached. JPEG output cannot hold alpha: it is dropped with a warning.
- 16-bit PNG/TIFF in: restored in float at full precision and written at 16 bit when the
  output format allows it (PNG, TIFF); 8 bit otherwise.
"""
from __future__ import annotations

import dataclasses
import functools
import glob as glob_lib
import logging
import os
import pathlib
import tempfile
import time
from typing import Callable, Sequence

import jax
import numpy as np

from jaxsr.imageio import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_image
from jaxsr.inference import default_tiling, quantize, restore_image

log = logging.getLogger(__name__)

DEFAULT_TILE = "512 on GPU/TPU, 256 on CPU"  # `jaxsr.inference.default_tiling('device')`
MODES = ("auto", "device", "host")
EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff", "bmp")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class PredictError(ValueError):
    """A user error (input, output or model source); the message names it and the fix."""


# ---------------------------------------------------------------------------------- restorers
@dataclasses.dataclass
class Restorer:
    """What predict runs: `apply_fn` (b, T, T, 3) float32 [0, 1] -> (b, T*s, T*s, 3)."""
    apply_fn: Callable
    scale: int
    description: str
    input_hw: tuple[int, int] | None = None  # an artifact exported for fixed tiles only
    default_tile: int | None = None  # None: `jaxsr.inference.default_tiling`


def _is_artifact(path: pathlib.Path) -> bool:
    return (path.is_file() and path.suffix.lower() == ".zip") or (
        path.is_dir() and (path / "metadata.json").is_file()
        and (path / "forward.jaxexport").is_file())


def from_run(workdir: str | os.PathLike, checkpoint: str = "latest",
             use_ema: bool | None = None) -> Restorer:
    """A restorer for a training run's checkpoint ('latest', 'best' or a step)."""
    from jaxsr.run_config import load_run, make_forward
    run = load_run(workdir, checkpoint, use_ema=use_ema)
    params = jax.device_put(run.params)
    fn = functools.partial(jax.jit(make_forward(run.model)), params)
    return Restorer(fn, run.scale, f"{run.config.model.name} x{run.scale} from "
                    f"{run.checkpoint_dir} step {run.step}")


def from_artifact(path: str | os.PathLike) -> Restorer:
    """A restorer for an artifact written by `python -m jaxsr.export`."""
    from jaxsr.export import load
    model = load(path)
    m = model.metadata
    return Restorer(model.apply_fn, model.scale,
                    f"{m.get('model')} x{model.scale} from artifact {model.path} "
                    f"(step {m.get('checkpoint', {}).get('step')})", input_hw=model.input_hw)


def load_restorer(workdir: str | None = None, artifact: str | None = None,
                  checkpoint: str = "latest", use_ema: bool | None = None) -> Restorer:
    """Exactly one of `workdir` (a training run) or `artifact` (an export); a workdir that holds
    an artifact is treated as one."""
    if bool(workdir) == bool(artifact):
        raise PredictError("pass exactly one of --workdir (a training run) or --artifact (an "
                           "exported model folder or .zip)")
    if workdir and _is_artifact(pathlib.Path(workdir).expanduser()):
        log.info("%s is an exported artifact; loading it as --artifact", workdir)
        artifact, workdir = workdir, None
    if artifact:
        return from_artifact(artifact)
    return from_run(workdir, checkpoint, use_ema)


# ------------------------------------------------------------------------------------ inputs
def resolve_inputs(spec: str | os.PathLike) -> list[pathlib.Path]:
    """One image file, the images of a folder, or the images a glob matches (sorted)."""
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise PredictError(f"input folder '{path}' holds no images "
                               f"({', '.join(IMAGE_EXTENSIONS)}); pass the folder with the "
                               "images, or a file or glob")
        return files
    if path.is_file():
        return [path]
    if glob_lib.has_magic(str(spec)):
        files = sorted(pathlib.Path(p) for p in glob_lib.glob(os.path.expanduser(str(spec)),
                                                             recursive=True)
                       if pathlib.Path(p).is_file()
                       and pathlib.Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise PredictError(f"the glob '{spec}' matches no image files; check the pattern "
                               "(quote it so the shell does not expand it)")
        return files
    raise PredictError(f"input '{path}' does not exist; pass an image file, a folder of images "
                       "or a quoted glob such as 'photos/*.jpg'")


def output_paths(inputs: Sequence[pathlib.Path], output_dir: str | os.PathLike,
                 ext: str | None = None) -> list[pathlib.Path]:
    """`output_dir/<stem>.<ext or the input's extension>` for each input; collisions and
    overwriting an input are errors."""
    if ext:
        ext = ext.lower().lstrip(".")
        if ext not in EXTENSIONS:
            raise PredictError(f"--ext={ext!r} is not an image format; use one of "
                               f"{', '.join(EXTENSIONS)} (or leave it empty to keep the input's)")
    out_dir = pathlib.Path(output_dir).expanduser()
    outs, seen = [], {}
    for p in inputs:
        out = out_dir / (p.stem + ("." + ext if ext else p.suffix))
        if out.resolve() in seen:
            raise PredictError(f"'{seen[out.resolve()]}' and '{p}' would both be written to "
                               f"'{out}'; keep the extensions (no --ext) or split the inputs")
        if out.resolve() == p.resolve():
            raise PredictError(f"writing '{out}' would overwrite the input; pick another --output")
        seen[out.resolve()] = p
        outs.append(out)
    return outs


@dataclasses.dataclass
class ImageInfo:
    """What the file holds, from its header."""
    gray: bool
    alpha: bool
    high_bit: bool  # 16-bit (or float) samples


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Gray / alpha / 16-bit of an image file from its header (no pixel decode)."""
    from jaxsr.imageio import _open  # PIL's pixel limit lifted (jaxsr's own applies)
    path = pathlib.Path(path)
    try:
        with _open(path) as im:
            mode, fmt = im.mode, im.format
            bands = im.getbands()
            alpha = "A" in bands or "a" in bands or (
                mode == "P" and ("transparency" in im.info
                                 or (im.palette is not None and im.palette.mode == "RGBA")))
            gray = mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16")
            high = mode.startswith("I;16") or mode in ("I", "F")
            if fmt == "PNG" and im.tile and ";16" in str(im.tile[0][3]):
                high = True
            if fmt == "TIFF":
                bits = im.tag_v2.get(258, (8,))
                bits = bits if isinstance(bits, tuple) else (bits,)
                high = high or max(bits) > 8
                spp = int(im.tag_v2.get(277, len(bands)))
                gray = gray or spp in (1, 2)
                alpha = alpha or spp in (2, 4)
            return ImageInfo(gray=gray, alpha=alpha, high_bit=high)
    except Exception:
        if path.suffix.lower() not in (".tif", ".tiff"):
            return ImageInfo(False, False, False)  # read_image reports what is wrong
    try:
        import tifffile
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            spp = int(page.samplesperpixel)
            return ImageInfo(gray=spp in (1, 2), alpha=spp in (2, 4) or bool(page.extrasamples),
                             high_bit=page.dtype is not None and page.dtype.itemsize > 1)
    except Exception:
        return ImageInfo(False, False, False)


# ------------------------------------------------------------------------------------- alpha
def resize_alpha(alpha: np.ndarray, scale: int, block: int = 256,
                 out: np.ndarray | None = None) -> np.ndarray:
    """MATLAB-bicubic upsampling of an alpha plane by an integer scale, block by block.

    Each block of `block` x `block` input pixels is resized with a 4-pixel context margin (the
    bicubic taps reach 3 pixels), so the result equals resizing the whole plane
    (`jaxsr.imresize.imresize`, replicate boundary) to float rounding, with memory bounded by
    the block.

    Args:
      alpha: (h, w) float in [0, 1].
      out: optional (h*s, w*s) array to fill; float32 clipped to [0, 1] by default, integer
        dtypes receive `quantize`d values.
    Returns:
      `out`.
    """
    from jaxsr.imresize import resize_weights
    alpha = np.asarray(alpha, np.float32)
    h, w = alpha.shape
    if out is None:
        out = np.empty((h * scale, w * scale), np.float32)
    integer = np.issubdtype(out.dtype, np.integer)
    margin = 4
    for a in range(0, h, block):
        b = min(h, a + block)
        a0, b0 = max(0, a - margin), min(h, b + margin)
        mh = resize_weights(b0 - a0, (b0 - a0) * scale, float(scale))
        mh = mh[(a - a0) * scale:(b - a0) * scale]
        for c in range(0, w, block):
            d = min(w, c + block)
            c0, d0 = max(0, c - margin), min(w, d + margin)
            mw = resize_weights(d0 - c0, (d0 - c0) * scale, float(scale))
            mw = mw[(c - c0) * scale:(d - c0) * scale]
            res = np.clip(mh @ alpha[a0:b0, c0:d0].astype(np.float64) @ mw.T, 0.0, 1.0)
            out[a * scale:b * scale, c * scale:d * scale] = (
                quantize(res, out.dtype) if integer else res)
    return out


# ----------------------------------------------------------------------------------- restore
def _tile_for(restorer: Restorer, tile: int | None) -> int:
    if restorer.input_hw is not None:
        fixed = restorer.input_hw[0]
        if tile and tile != fixed:
            log.warning("this artifact runs on %dx%d tiles only; using --tile=%d", fixed, fixed,
                        fixed)
        return fixed
    return int(tile or restorer.default_tile or default_tiling("device")[0])


def restore_array(restorer: Restorer, image: np.ndarray, tile: int | None = None,
                  overlap: int = 16, batch_tiles: int | None = None,
                  progress: bool | str = False, out: np.ndarray | None = None,
                  finish: Callable | None = None, mode: str = "auto", dtype=None,
                  mix: np.ndarray | None = None) -> np.ndarray:
    """Restores (h, w, 3) float32 [0, 1] -> (h*s, w*s, 3) float32 [0, 1] (or into `out`, see
    `jaxsr.inference.restore_image`; batch_tiles None/0: the default of the path taken)."""
    tile = _tile_for(restorer, tile)
    overlap = min(overlap, tile - 1)
    return restore_image(restorer.apply_fn, image, restorer.scale, tile=tile, overlap=overlap,
                         batch_tiles=batch_tiles or None, progress=progress, out=out,
                         finish=finish, mode=mode, dtype=dtype, mix=mix)


def restore_file(restorer: Restorer, in_path: str | os.PathLike, out_path: str | os.PathLike,
                 tile: int | None = None, overlap: int = 16, batch_tiles: int | None = None,
                 progress: bool | str = False, mode: str = "auto") -> dict:
    """Restores one image file into `out_path` (format from its extension, see module doc).

    Returns:
      {'input', 'output', 'in_shape', 'out_shape', 'dtype', 'gray', 'alpha', 'seconds'}.
    """
    start = time.perf_counter()
    in_path, out_path = pathlib.Path(in_path), pathlib.Path(out_path)
    info = probe_image(in_path)
    image = read_image(in_path, np.float32, keep_alpha=info.alpha)
    h, w = image.shape[:2]
    s = restorer.scale
    fmt = out_path.suffix.lower()
    dtype = np.uint16 if info.high_bit and fmt in (".png", ".tif", ".tiff") else np.uint8
    keep_alpha = info.alpha
    if keep_alpha and fmt in (".jpg", ".jpeg"):
        log.warning("%s: JPEG cannot store the alpha channel of %s; it is dropped (write .png to "
                    "keep it)", out_path, in_path)
        keep_alpha = False
    color = 1 if info.gray else 3
    try:
        out = np.empty((h * s, w * s, color + int(keep_alpha)), dtype)
    except MemoryError as e:
        raise ImageReadError(f"cannot restore '{in_path}' ({h}x{w}): not enough memory for its "
                             f"{h * s}x{w * s} output. Fix: split or downscale the image") from e

    # Gray: the luma of the restored RGB, clipped, then quantised (on the device or per band).
    restore_array(restorer, image[..., :3], tile, overlap, batch_tiles, progress, out,
                  mode=mode, dtype=dtype, mix=_LUMA[:, None] if info.gray else None)
    if keep_alpha:
        alpha = image[..., 3]
        if np.all(alpha == 1.0):
            out[..., -1] = np.iinfo(dtype).max
        else:
            resize_alpha(alpha, s, out=out[..., -1])
    write_image(out_path, out[..., 0] if out.shape[-1] == 1 else out)
    return {"input": str(in_path), "output": str(out_path), "in_shape": (h, w),
            "out_shape": out.shape, "dtype": np.dtype(dtype).name, "gray": info.gray,
            "alpha": keep_alpha, "seconds": time.perf_counter() - start}


def check_tiling(tile: int | None, overlap: int, batch_tiles: int | None) -> None:
    """Tile size >= 0 (0/None = the default), overlap >= 0, batch_tiles >= 0 (0/None = the
    default)."""
    if tile is not None and int(tile) < 0:
        raise PredictError(f"--tile={tile}: use a positive tile size in input pixels (or 0 for "
                           f"the default {DEFAULT_TILE})")
    if int(overlap) < 0:
        raise PredictError(f"--overlap={overlap}: the tile overlap cannot be negative; use 0 or "
                           "more input pixels (default 16)")
    if batch_tiles is not None and int(batch_tiles) < 0:
        raise PredictError(f"--batch_tiles={batch_tiles}: use 1 or more tiles per forward call "
                           "(or 0 for the default: 1 on the device path, 4 on the host path)")


def check_output_dir(output_dir: str | os.PathLike) -> pathlib.Path:
    """Creates `output_dir` (and parents) and checks that a file can be written in it, so a bad
    --output is reported before the model loads."""
    out = pathlib.Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise PredictError(f"--output '{out}' is an existing file, not a folder; pass a folder "
                           "(it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".jaxsr-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PredictError(f"cannot write into --output '{out}' ({e.strerror or e}); pass a "
                           "folder you can write to") from None
    return out


def predict(inputs: str | os.PathLike | Sequence, output_dir: str | os.PathLike,
            restorer: Restorer, ext: str | None = None, tile: int | None = None,
            overlap: int = 16, batch_tiles: int | None = None, progress: bool = True,
            skip_errors: bool = False, mode: str = "auto") -> list[dict]:
    """Restores every input image into `output_dir`.

    Args:
      inputs: a file, folder or glob (see `resolve_inputs`), or a list of files.
      ext: output extension (png, jpg, tif, ...); None keeps each input's.
      mode: 'auto' (device path when it fits, else host bands), 'device' or 'host'
        (`jaxsr.inference.restore_image`).
      skip_errors: log unreadable images and go on (the result lists them with 'error');
        otherwise the first error is raised.
    Returns:
      One dict per input (see `restore_file`), or {'input', 'error'} for skipped ones.
    """
    check_tiling(tile, overlap, batch_tiles)
    if mode not in MODES:
        raise PredictError(f"--mode={mode!r}: use one of {', '.join(MODES)}")
    files = ([pathlib.Path(p) for p in inputs] if isinstance(inputs, (list, tuple))
             else resolve_inputs(inputs))
    outs = output_paths(files, output_dir, ext)
    check_output_dir(output_dir)
    results = []
    for i, (src, dst) in enumerate(zip(files, outs)):
        label = f"{i + 1}/{len(files)} {src.name}" if progress else False
        try:
            r = restore_file(restorer, src, dst, tile, overlap, batch_tiles, label, mode)
        except ImageReadError as e:  # unreadable, too large, no memory: skip it, go on
            if not skip_errors:
                raise
            log.error("skipped: %s", e)
            results.append({"input": str(src), "error": str(e)})
            continue
        log.info("%s -> %s (%dx%d -> %dx%d, %s, %.1f s)", src, dst, *r["in_shape"],
                 *r["out_shape"][:2], r["dtype"], r["seconds"])
        results.append(r)
    return results


# -------------------------------------------------------------------------------------- CLI
def _define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "Training run directory (checkpoints/ inside).")
    flags.DEFINE_string("artifact", None, "Exported model folder or .zip (python -m jaxsr.export).")
    flags.DEFINE_string("checkpoint", "latest", "With --workdir: 'latest', 'best' or a step.")
    flags.DEFINE_string("input", None, "An image file, a folder of images, or a quoted glob.")
    flags.DEFINE_string("output", None, "Output folder (created).")
    flags.DEFINE_string("ext", "", "Output format: png, jpg, tif, bmp (default: keep the input's).")
    flags.DEFINE_integer("tile", 0, f"Tile size in input pixels (0: {DEFAULT_TILE}).")
    flags.DEFINE_integer("overlap", 16, "Tile overlap in input pixels (>= the model's receptive "
                         "radius x 4/3 for seam-free output).")
    flags.DEFINE_integer("batch_tiles", 0, "Tiles per forward call (0: 1 on the device path, 4 "
                         "on the host path).")
    flags.DEFINE_enum("mode", "auto", list(MODES),
                      "Where tiles are blended: 'device' (one compiled program per size bucket, "
                      "one transfer), 'host' (band by band in numpy, bounded memory), 'auto' "
                      "(device when the output's float accumulators fit the device).")
    flags.DEFINE_enum("ema", "auto", ["auto", "yes", "no"],
                      "With --workdir: use the EMA weights (auto = as the run's evaluation did).")
    return flags.FLAGS


def main(argv: Sequence[str]) -> None:
    from absl import app
    from absl import logging as absl_logging
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    F = _define_flags.flags  # type: ignore[attr-defined]
    if not F.input or not F.output:
        raise app.UsageError("pass --input (file, folder or glob) and --output (a folder)")
    from jaxsr import compile_cache
    compile_cache.enable()
    from jaxsr.checkpoint import CheckpointError
    from jaxsr.export import ArtifactError
    try:
        # input, output and flag errors first, before loading the model
        check_tiling(F.tile or None, F.overlap, F.batch_tiles)
        files = resolve_inputs(F.input)
        output_paths(files, F.output, F.ext or None)
        check_output_dir(F.output)
        restorer = load_restorer(F.workdir, F.artifact, F.checkpoint,
                                 {"auto": None, "yes": True, "no": False}[F.ema])
        absl_logging.info("restoring %d image(s) with %s", len(files), restorer.description)
        results = predict(files, F.output, restorer, F.ext or None, F.tile or None, F.overlap,
                          F.batch_tiles or None, progress=True, skip_errors=True, mode=F.mode)
    except (PredictError, CheckpointError, ArtifactError, ImageReadError,
            FileNotFoundError) as e:
        _fail(e)
    except OSError as e:  # disk full, permissions while writing outputs
        _fail(f"{e.filename or F.output}: {e.strerror or e}; free space or pick another --output")
    failed = [r for r in results if "error" in r]
    absl_logging.info("restored %d image(s) into %s", len(results) - len(failed), F.output)
    if failed:
        absl_logging.error("%d image(s) skipped (not restored): %s", len(failed),
                           ", ".join(r["input"] for r in failed))
        raise SystemExit(1)


def _fail(error) -> None:
    """Prints one error line (the traceback too with JAXSR_VERBOSE=1) and exits with 1."""
    from jaxsr.logs import user_error
    user_error(error)


def run() -> None:
    from absl import app
    import sys
    from jaxsr.logs import quiet_library_logs, use_verbose_flag
    sys.argv = use_verbose_flag(sys.argv)
    _define_flags.flags = _define_flags()  # type: ignore[attr-defined]
    quiet_library_logs()
    app.run(main)


if __name__ == "__main__":
    run()
