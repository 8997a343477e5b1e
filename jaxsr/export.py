"""Self-contained inference artifacts: `python -m jaxsr.export --workdir=RUN --output=DIR[.zip]`.

An artifact is a folder (or a .zip of the same files) that runs with JAX alone, without jaxsr's
model code:

  forward.jaxexport  the network's forward pass serialized with `jax.export`, for the platforms
                     asked for (cpu, cuda, tpu), with symbolic batch, height and width:
                     `f(params, x)`, params = the dict stored in params.npz, x (B, h, w, 3)
                     float32 in [0, 1] -> (B, h*s, w*s, 3) float32 clipped to [0, 1];
  params.npz         the weights, one array per parameter, keyed by its path ('net/head/kernel');
  config.json        the training config of the run;
  metadata.json      format version, jaxsr / jax versions, creation time, scale, model, platforms,
                     compute dtype per platform ('auto' models: float32 on cpu, bfloat16 on
                     cuda/tpu, one exported function choosing by platform), training data,
                     checkpoint step and metrics, and the sha256 of each file.

Use it with `jaxsr.export.load(path)` (below), `python -m jaxsr.predict --artifact=PATH`, or by
hand::

    exp = jax.export.deserialize(open('forward.jaxexport', 'rb').read())
    y = exp.call(dict(np.load('params.npz')), x)

Models that pad inside (NAFNet pads to a multiple of 2^levels) are exported with symbolic
constraints stating that padding identity, so any h, w works. A model that cannot be exported with
symbolic height/width is exported for fixed (tile, tile) inputs with a symbolic batch instead
(`metadata['input_hw']`); `load` and `predict` then tile with that size.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import logging
import math
import os
import pathlib
import shutil
import tempfile
import zipfile
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export
from jax import lax

FORMAT = "jaxsr-export"
FORMAT_VERSION = 1
FILES = ("forward.jaxexport", "params.npz", "config.json", "metadata.json")
PLATFORMS = ("cpu", "cuda", "tpu")
_HASHED = ("forward.jaxexport", "params.npz", "config.json")
_SIZE_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)

log = logging.getLogger(__name__)


class ArtifactError(ValueError):
    """An artifact is missing, damaged or incompatible; the message names the file and the fix."""


# ------------------------------------------------------------------------------------- params
def flatten_params(tree: Any) -> dict[str, np.ndarray]:
    """Nested param dicts -> {'a/b/kernel': array} (host numpy)."""
    flat: dict[str, np.ndarray] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict) or hasattr(node, "items") and not hasattr(node, "shape"):
            for k, v in node.items():
                if "/" in str(k):
                    raise ValueError(f"parameter name {k!r} contains '/'; cannot flatten")
                visit(v, f"{prefix}{k}/")
        else:
            flat[prefix[:-1]] = np.asarray(node)
    visit(tree, "")
    return flat


def unflatten_params(flat: dict[str, Any]) -> dict:
    """{'a/b/kernel': array} -> nested dicts."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


# ------------------------------------------------------- shape-polymorphic bicubic upsampling
def _cubic(t: np.ndarray) -> np.ndarray:
    a = np.abs(t)
    return np.where(a <= 1, 1.5 * a ** 3 - 2.5 * a ** 2 + 1.0,
                    np.where(a <= 2, -0.5 * a ** 3 + 2.5 * a ** 2 - 4.0 * a + 2.0, 0.0))


def _phase_taps(scale: int) -> list[tuple[int, np.ndarray]]:
    """For output sample s*k + r (r = 0..s-1) of MATLAB bicubic upsampling by an integer s:
    (offset of the first of 6 taps relative to input k, normalised tap weights)."""
    taps = []
    for r in range(1, scale + 1):
        u = r / scale + 0.5 * (1.0 - 1.0 / scale)  # MATLAB's input coordinate minus k (1-based)
        left = math.floor(u - 2.0)
        w = _cubic(u - (left + np.arange(6)))
        taps.append((left - 1, w / w.sum()))
    return taps


def _upsample_axis(x: jax.Array, scale: int, axis: int) -> jax.Array:
    taps = _phase_taps(scale)
    lo = -min(off for off, _ in taps)
    hi = max(off + 5 for off, _ in taps)
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (lo, max(hi, 0))
    xp = jnp.pad(x, pad, mode="edge")  # MATLAB 'replicate' boundary
    phases = []
    for off, w in taps:
        acc = None
        for j, wj in enumerate(w):
            if wj == 0:
                continue
            part = lax.slice_in_dim(xp, lo + off + j, lo + off + j + n, axis=axis) * np.float32(wj)
            acc = part if acc is None else acc + part
        phases.append(acc)
    y = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = n * scale
    return y.reshape(shape)


def upsample_bicubic(x: jax.Array, scale: int) -> jax.Array:
    """MATLAB bicubic (a = -0.5, replicate boundary) upsampling of (..., H, W, C) by an integer
    `scale`, as six shifted slices per output phase: works with symbolic H, W (jax.export), equal
    to `jaxsr.imresize.imresize(x, output_shape=(s*H, s*W))` to float rounding."""
    return _upsample_axis(_upsample_axis(x, scale, x.ndim - 3), scale, x.ndim - 2)


def _is_symbolic(d: Any) -> bool:
    return not isinstance(d, (int, np.integer))


@contextlib.contextmanager
def _shape_polymorphic_imresize() -> Iterator[None]:
    """While exporting: `jaxsr.imresize.imresize` calls with symbolic sizes that are integer
    bicubic upsamplings (the model factory's global residual) use `upsample_bicubic`; all other
    calls go to the original."""
    import jaxsr.imresize as imresize_mod
    original = imresize_mod.imresize

    def patched(x, scale=None, output_shape=None, method="bicubic", antialias=True,
                boundary="replicate"):
        h, w = x.shape[-3], x.shape[-2]
        if (_is_symbolic(h) or _is_symbolic(w)) and method == "bicubic" and \
                boundary == "replicate":
            s = None
            if scale is not None and float(scale) == int(scale) and int(scale) >= 1:
                s = int(scale)
            elif output_shape is not None:
                oh, ow = output_shape
                for cand in range(1, 9):
                    if _same_dim(oh, cand * h) and _same_dim(ow, cand * w):
                        s = cand
                        break
            if s is not None:
                return upsample_bicubic(x, s) if s > 1 else x
        return original(x, scale=scale, output_shape=output_shape, method=method,
                        antialias=antialias, boundary=boundary)

    imresize_mod.imresize = patched
    try:
        yield
    finally:
        imresize_mod.imresize = original


def _same_dim(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # symbolic comparison that cannot be decided
        return False


# ----------------------------------------------------------------------------------- export
def _constraints(multiple: int) -> list[str]:
    """Identities telling jax.export that h + mod(-h, m) is a multiple of m (true for all h)."""
    if multiple == 1:
        return []
    m = multiple
    return [f"mod(-{d}, {m}) == {m}*floordiv({d} + {m - 1}, {m}) - {d}" for d in ("h", "w")]


def export_forward(forward: Callable[[Any, jax.Array], jax.Array], params: dict[str, Any],
                   platforms: Sequence[str] = PLATFORMS, fallback_tile: int = 128
                   ) -> tuple[jax_export.Exported, int, tuple[int, int] | None]:
    """Exports `forward(params, x)` with params a flat {'path': array} dict.

    Tries symbolic (b, h, w, 3) with padding constraints for multiples 1, 2, 4, ..., 64; if the
    model cannot be traced with symbolic height/width, exports (b, tile, tile, 3).
    Returns (exported, size multiple used, fixed (h, w) or None).
    """
    platforms = tuple(platforms)
    bad = [p for p in platforms if p not in PLATFORMS]
    if bad or not platforms:
        raise ValueError(f"platforms={list(platforms)}: use a non-empty subset of {PLATFORMS}")
    p_spec = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in params.items()}
    fn = jax.jit(forward)
    first_error = None
    with _shape_polymorphic_imresize():
        for multiple in _SIZE_MULTIPLES:
            try:
                shape = jax_export.symbolic_shape("b, h, w, 3", constraints=_constraints(multiple))
                x_spec = jax.ShapeDtypeStruct(shape, jnp.float32)
                return jax_export.export(fn, platforms=platforms)(p_spec, x_spec), multiple, None
            except Exception as e:  # shape-polymorphism errors come in several types
                first_error = first_error or e
                log.debug("symbolic export with multiple %d failed: %s", multiple, e)
    log.warning("the model cannot be exported with symbolic height/width (%s); exporting for "
                "fixed %dx%d tiles with a symbolic batch instead", str(first_error)[:300],
                fallback_tile, fallback_tile)
    shape = jax_export.symbolic_shape(f"b, {fallback_tile}, {fallback_tile}, 3")
    x_spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    return (jax_export.export(fn, platforms=platforms)(p_spec, x_spec), 1,
            (fallback_tile, fallback_tile))


_FLATBUFFERS_FIX = ("jax.export (de)serialization needs the 'flatbuffers' package: "
                    "pip install flatbuffers")


def _serialize(exported: jax_export.Exported) -> bytes:
    try:
        return bytes(exported.serialize())
    except ImportError as e:
        raise ImportError(f"{_FLATBUFFERS_FIX} ({e})") from e


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npz_bytes(flat: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **flat)
    return buf.getvalue()


def _training_data(config: Any) -> str:
    """For runs whose deployable.json names no training data (made before it did): the folder
    (or shipped sample) the config trains on, data.train_dir / data.target_dir, else data.sample
    / data.target_sample."""
    data = config.get("data", {}) if hasattr(config, "get") else {}
    if not hasattr(data, "get"):
        return "unknown"
    for key in ("train_dir", "target_dir"):
        if data.get(key, ""):
            return str(data.get(key))
    for key in ("sample", "target_sample"):
        if data.get(key, ""):
            return f"jaxsr sample '{data.get(key)}'"
    return "unknown"


def _versions() -> dict[str, str]:
    import jaxlib
    import jaxsr
    return {"jaxsr_version": jaxsr.__version__, "jax_version": jax.__version__,
            "jaxlib_version": jaxlib.__version__}


def build_artifact(forward: Callable, params: Any, config: dict, info: dict,
                   platforms: Sequence[str] = PLATFORMS, fallback_tile: int = 128
                   ) -> dict[str, bytes]:
    """The artifact's files as {name: bytes}.

    Args:
      forward: (params, x) -> y, pure, as `jaxsr.run_config.make_forward(model)`.
      params: the nested parameter dict of the model.
      config: the training config as a JSON-able dict.
      info: extra metadata (scale and model are required).
    """
    flat = flatten_params(params)
    exported, multiple, input_hw = export_forward(
        lambda p, x: forward(unflatten_params(p), x), flat, platforms, fallback_tile)
    files = {
        "forward.jaxexport": _serialize(exported),
        "params.npz": _npz_bytes(flat),
        "config.json": json.dumps(config, indent=2, sort_keys=True).encode(),
    }
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **info,
        "platforms": list(exported.platforms),
        "size_multiple": multiple,
        "input_hw": list(input_hw) if input_hw else None,
        "input": "x (B, h, w, 3) float32 RGB in [0, 1]" + (
            "" if input_hw is None else f", h = w = {input_hw[0]}"),
        "output": "(B, h*scale, w*scale, 3) float32 clipped to [0, 1]",
        "num_params": int(sum(v.size for v in flat.values())),
        "sha256": {name: _sha256(files[name]) for name in _HASHED},
    }
    files["metadata.json"] = json.dumps(metadata, indent=2).encode()
    return files


def check_output(output: str | os.PathLike) -> pathlib.Path:
    """Checks an export target before anything is loaded: a path ending in .zip (a file), or a
    folder that is new, empty or a jaxsr artifact; its parent must be writable. Raises
    ArtifactError (FileExistsError for a non-empty folder that is not an artifact)."""
    output = pathlib.Path(output).expanduser()
    if output.suffix.lower() == ".zip":
        if output.is_dir():
            raise ArtifactError(f"--output '{output}' is a folder; give the .zip a file name "
                                "that is not taken, or drop the .zip to write a folder")
    elif output.exists() and not output.is_dir():
        raise ArtifactError(f"--output '{output}' is an existing file; pass a folder (new, or "
                            "an earlier artifact to update) or a path ending in .zip")
    elif output.is_dir() and not (output / "metadata.json").is_file() and any(output.iterdir()):
        raise FileExistsError(f"'{output}' exists and is not a jaxsr artifact; pick another "
                            "--output (export never deletes files it did not write)")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=output.parent, prefix=".jaxsr-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ArtifactError(f"cannot write '{output}' ({e.strerror or e}); pass an --output in "
                            "a folder you can write to") from None
    return output


def write_artifact(files: dict[str, bytes], output: str | os.PathLike) -> pathlib.Path:
    """Writes the files into folder `output`, or into a zip when it ends with '.zip'.

    Everything is written into a fresh temporary folder beside `output` first, then swapped in:
    a new folder or zip appears complete or not at all; an earlier artifact folder holding only
    the artifact's files is replaced whole; one that also holds other files (e.g. images
    restored into it) keeps them: only the artifact's own files are replaced (metadata.json
    last). Nothing export did not write is ever deleted; a non-empty folder that is not an
    artifact is refused (ArtifactError).
    """
    output = check_output(output)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        if output.suffix.lower() == ".zip":
            target = tmp / output.name
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
                for name in FILES:
                    z.writestr(name, files[name])
            os.replace(target, output)
            return output
        target = tmp / "artifact"
        target.mkdir()
        for name in FILES:
            (target / name).write_bytes(files[name])
        os.chmod(target, 0o777 & ~_umask())  # mkdtemp makes 0700
        others = sorted(p.name for p in output.iterdir() if p.name not in FILES) \
            if output.is_dir() else []
        if not output.exists():
            os.replace(target, output)
        elif not others:  # only our files: swap the folders, then drop the old one
            os.replace(output, tmp / "previous")
            os.replace(target, output)
        else:
            log.info("%s also holds %s; replacing only the artifact's files", output,
                     ", ".join(others[:5]) + (" ..." if len(others) > 5 else ""))
            for name in FILES:  # metadata.json (with the checksums) last
                os.replace(target / name, output / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def export_run(workdir: str | os.PathLike, output: str | os.PathLike, checkpoint: str = "latest",
               platforms: Sequence[str] = PLATFORMS, use_ema: bool | None = None,
               dtype: str | None = None) -> pathlib.Path:
    """Exports a training run's checkpoint (see module doc) to `output` (folder or .zip).

    `dtype` overrides the run's `config.model.dtype` ('auto', 'float32', 'bfloat16'); the
    compute dtype used on each platform is recorded in metadata['compute_dtype']."""
    from jaxsr.run_config import config_from_dict, load_run
    if dtype is not None:
        from jaxsr.model_factory import resolve_dtype
        resolve_dtype(dtype, what="--dtype")  # a bad name fails before the model loads
    check_output(output)  # before the model loads
    run = load_run(workdir, checkpoint, use_ema=use_ema)
    config = json.loads(run.config.to_json_best_effort())
    summary_path = run.workdir / "summary.json"
    baseline = None
    if summary_path.is_file():
        try:
            baseline = json.loads(summary_path.read_text()).get("baseline")
        except ValueError:
            pass
    info = {
        "scale": run.scale,
        "model": str(run.config.model.name),
        "model_kwargs": json.loads(json.dumps(config["model"].get("kwargs", {}))),
        "global_residual": bool(run.config.model.get("global_residual", False)),
        "method": str(run.config.get("method", "")),
        "training_data": (run.deployed.training_data if run.deployed and
                          run.deployed.training_data else _training_data(run.config)),
        "checkpoint": {"workdir": str(run.workdir.absolute()),
                       "directory": str(run.checkpoint_dir.absolute()),
                       "which": str(checkpoint), "step": run.step},
        "metrics": run.meta.get("metrics", {}),
        "baseline_metrics": baseline,
    }
    model_cfg = config_from_dict(run.deployed.model) if run.deployed else run.config.model
    if dtype:
        model_cfg = _with_dtype(model_cfg, dtype)
    forward, info["compute_dtype"] = platform_forward(model_cfg, platforms)
    tile = int(run.config.get("eval", {}).get("tile", 128))
    files = build_artifact(forward, run.params, config, info, platforms, tile)
    return write_artifact(files, output)


def platform_forward(model_cfg: Any, platforms: Sequence[str] = PLATFORMS
                     ) -> tuple[Callable[[Any, jax.Array], jax.Array], dict[str, str]]:
    """(forward(params, x), {platform: compute dtype name}) for an artifact.

    `model_cfg.dtype` is resolved per platform ('auto': float32 on cpu, bfloat16 on cuda/tpu).
    When the platforms disagree, one exported function holds both programs and picks by the
    platform it runs on (`jax.lax.platform_dependent`); the weights are float32 either way.
    """
    from jaxsr.model_factory import build_model, dtype_name, resolve_dtype
    from jaxsr.run_config import make_forward
    name = model_cfg.get("dtype", "float32")
    dtypes = {p: dtype_name(resolve_dtype(name, _JAX_PLATFORM.get(p, p))) for p in platforms}
    forwards = {d: make_forward(build_model(_with_dtype(model_cfg, d)))
                for d in sorted(set(dtypes.values()))}
    if len(forwards) == 1:
        return next(iter(forwards.values())), dtypes

    def forward(params: Any, x: jax.Array) -> jax.Array:
        branches = {p: forwards[d] for p, d in dtypes.items()}
        return jax.lax.platform_dependent(params, x, **branches)
    return forward, dtypes


# Export platform name -> the platform name `resolve_dtype` knows.
_JAX_PLATFORM = {"cuda": "gpu", "rocm": "gpu"}


def _with_dtype(model_cfg: Any, dtype: str) -> Any:
    cfg = model_cfg.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.dtype = dtype
    return cfg


# ------------------------------------------------------------------------------------- load
def _read_files(path: pathlib.Path) -> dict[str, bytes]:
    if not path.exists():
        raise ArtifactError(f"artifact '{path}' does not exist; export one with `python -m "
                            "jaxsr.export --workdir=RUN --output=PATH`")
    files: dict[str, bytes] = {}
    if path.is_dir():
        for name in FILES:
            if (path / name).is_file():
                files[name] = (path / name).read_bytes()
    else:
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                for name in FILES:
                    if name in names:
                        files[name] = z.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ArtifactError(f"artifact '{path}' is not a readable zip ({e}); the file is "
                                "damaged or incomplete: copy or export it again") from e
    missing = [n for n in FILES if n not in files]
    if missing:
        what = "folder" if path.is_dir() else "zip"
        hint = ("this is a training run, not an artifact: pass it as --workdir, or export it "
                "first" if (path / "checkpoints").is_dir() else
                "copy the complete artifact again or re-export it with python -m jaxsr.export")
        raise ArtifactError(f"artifact {what} '{path}' lacks {', '.join(missing)}; {hint}")
    return files


def _check_metadata(path: pathlib.Path, files: dict[str, bytes]) -> dict:
    try:
        meta = json.loads(files["metadata.json"])
    except ValueError as e:
        raise ArtifactError(f"'{path}/metadata.json' is not valid JSON ({e}); the artifact is "
                            "damaged: re-export it") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"'{path}/metadata.json' is not jaxsr export metadata (format "
                            f"{meta.get('format') if isinstance(meta, dict) else None!r}); "
                            "pass a folder written by python -m jaxsr.export")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ArtifactError(
            f"'{path}' has artifact format version {version!r}; this jaxsr "
            f"({_versions()['jaxsr_version']}) reads version 1..{FORMAT_VERSION}. Upgrade jaxsr "
            f"(the artifact was written by jaxsr {meta.get('jaxsr_version')}), or re-export it")
    for key in ("scale", "sha256"):
        if key not in meta:
            raise ArtifactError(f"'{path}/metadata.json' lacks '{key}'; re-export the artifact")
    for name in _HASHED:
        expected = meta["sha256"].get(name)
        if expected != _sha256(files[name]):
            raise ArtifactError(
                f"'{path}/{name}' is damaged: its sha256 does not match metadata.json (expected "
                f"{str(expected)[:12]}..., got {_sha256(files[name])[:12]}...). Copy the "
                "artifact again or re-export it")
    return meta


def _backend_platform() -> str:
    backend = jax.default_backend()
    if backend == "gpu":
        version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
        return "rocm" if "rocm" in version else "cuda"
    return backend


class ExportedModel:
    """A loaded artifact. `model(x)` restores (B, h, w, 3) float32 [0, 1] ->
    (B, h*s, w*s, 3); `apply_fn` is the same as a jitted function for `restore_image`.

    Attributes: scale, metadata (dict), config (dict), params (flat dict of arrays),
    exported (jax.export.Exported), input_hw (fixed (h, w) or None), path.
    """

    def __init__(self, path: pathlib.Path, exported: jax_export.Exported,
                 params: dict[str, np.ndarray], config: dict, metadata: dict):
        self.path, self.exported, self.config, self.metadata = path, exported, config, metadata
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        self.scale = int(metadata["scale"])
        hw = metadata.get("input_hw")
        self.input_hw = tuple(hw) if hw else None
        self._call = jax.jit(exported.call)

    def apply_fn(self, x: jax.Array) -> jax.Array:
        """(B, h, w, 3) float32 in [0, 1] -> (B, h*s, w*s, 3) float32 in [0, 1]."""
        if self.input_hw is not None and tuple(x.shape[1:3]) != self.input_hw:
            raise ValueError(f"artifact {self.path} takes {self.input_hw} inputs only (its model "
                             "could not be exported for any size); restore images with "
                             f"jaxsr.inference.restore_image(..., tile={self.input_hw[0]})")
        return self._call(self.params, jnp.asarray(x, jnp.float32))

    __call__ = apply_fn

    def __repr__(self) -> str:
        m = self.metadata
        return (f"ExportedModel({str(self.path)!r}, model={m.get('model')!r}, scale={self.scale}, "
                f"platforms={m.get('platforms')}, step={m.get('checkpoint', {}).get('step')})")


def load(path: str | os.PathLike) -> ExportedModel:
    """Loads and checks an artifact folder or .zip written by `export_run`.

    Raises:
      ArtifactError: missing or damaged files (sha256), a format version this jaxsr cannot read,
        a serialization this jax cannot read, weights that do not fit the exported function, or
        an artifact not exported for this machine's platform.
    """
    path = pathlib.Path(path).expanduser()
    files = _read_files(path)
    meta = _check_metadata(path, files)
    try:
        exported = jax_export.deserialize(bytearray(files["forward.jaxexport"]))
    except ImportError as e:
        raise ImportError(f"{_FLATBUFFERS_FIX} ({e})") from e
    except Exception as e:
        raise ArtifactError(
            f"'{path}/forward.jaxexport' cannot be deserialized by jax {jax.__version__} ({e}); "
            f"it was written by jax {meta.get('jax_version')}. Install that jax version or "
            "re-export the artifact with this one") from e
    platform = _backend_platform()
    if platform not in exported.platforms:
        raise ArtifactError(
            f"artifact '{path}' was exported for {', '.join(exported.platforms)}, not for this "
            f"machine's {platform}; re-export it with --platforms={platform} (or run on "
            f"{exported.platforms[0]})")
    try:
        with np.load(io.BytesIO(files["params.npz"]), allow_pickle=False) as npz:
            params = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise ArtifactError(f"'{path}/params.npz' cannot be read ({e}); re-export the "
                            "artifact") from e
    try:
        config = json.loads(files["config.json"])
    except ValueError as e:
        raise ArtifactError(f"'{path}/config.json' is not valid JSON ({e})") from e
    _check_params(path, exported, params)
    return ExportedModel(path, exported, params, config, meta)


def _check_params(path: pathlib.Path, exported: jax_export.Exported,
                  params: dict[str, np.ndarray]) -> None:
    """The weights must have exactly the names, shapes and dtypes the function was exported
    with."""
    try:
        (want, _), _ = jax.tree_util.tree_unflatten(exported.in_tree,
                                                    list(exported.in_avals))
        assert isinstance(want, dict)
    except Exception as e:
        raise ArtifactError(f"'{path}/forward.jaxexport' does not take (params dict, x); it was "
                            "not written by jaxsr.export: re-export the artifact") from e
    problems = [f"missing {k}" for k in sorted(set(want) - set(params))]
    problems += [f"unexpected {k}" for k in sorted(set(params) - set(want))]
    for k in sorted(set(want) & set(params)):
        a, v = want[k], params[k]
        if tuple(a.shape) != tuple(v.shape) or np.dtype(a.dtype) != v.dtype:
            problems.append(f"{k}: {v.dtype}{list(v.shape)} but the function takes "
                            f"{np.dtype(a.dtype)}{list(a.shape)}")
    if problems:
        raise ArtifactError(
            f"'{path}/params.npz' does not fit '{path}/forward.jaxexport' ("
            + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
            + "). The two files come from different exports: re-export the artifact")


# -------------------------------------------------------------------------------------- CLI
def _define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "Training run directory (holds checkpoints/).")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
    flags.DEFINE_string("output", None, "Artifact folder, or a path ending in .zip.")
    flags.DEFINE_list("platforms", list(PLATFORMS), "Platforms to export for: cpu,cuda,tpu.")
    flags.DEFINE_enum("ema", "auto", ["auto", "yes", "no"],
                      "Export the EMA weights: auto = as the run's evaluation did.")
    flags.DEFINE_enum("dtype", None, ["auto", "float32", "bfloat16", "float16"],
                      "Compute dtype of the exported forward pass (default: the run's "
                      "config.model.dtype; 'auto' = float32 on cpu, bfloat16 on cuda/tpu).")
    return flags.FLAGS


def main(argv: Sequence[str]) -> None:
    from absl import app
    from absl import logging as absl_logging
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    FLAGS = _define_flags.flags  # type: ignore[attr-defined]
    if not FLAGS.workdir or not FLAGS.output:
        raise app.UsageError("pass --workdir=RUN (a training run) and --output=DIR or FILE.zip")
    from jaxsr import compile_cache
    compile_cache.enable()
    use_ema = {"auto": None, "yes": True, "no": False}[FLAGS.ema]
    from jaxsr.checkpoint import CheckpointError
    try:
        path = export_run(FLAGS.workdir, FLAGS.output, FLAGS.checkpoint, FLAGS.platforms, use_ema,
                          FLAGS.dtype)
    except (CheckpointError, ArtifactError, FileExistsError, FileNotFoundError, ValueError) as e:
        from jaxsr.logs import user_error
        user_error(e)
    except OSError as e:  # disk full, permissions
        from jaxsr.logs import user_error
        user_error(f"cannot write '{FLAGS.output}' ({e.strerror or e}); free space or pick "
                   "another --output")
    meta = _check_metadata(path, _read_files(path))
    absl_logging.info("wrote %s: %s x%d, step %s, platforms %s, compute dtype %s, input %s", path,
                      meta["model"], meta["scale"], meta["checkpoint"]["step"],
                      ",".join(meta["platforms"]), meta.get("compute_dtype"), meta["input"])
    print(path)


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
