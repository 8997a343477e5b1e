"""Reading and writing images on the host as numpy arrays.

`read_image` returns (H, W, 3) RGB, uint8 in [0, 255] (or float32 in [0, 1] with
`dtype=np.float32`) for any PNG / JPEG / BMP / TIFF:

- grayscale (and 1-bit) images are replicated to 3 channels;
- gray + alpha and RGBA lose their alpha channel unless `keep_alpha=True` (then (H, W, 4));
- palette images are expanded through their palette (transparency becomes alpha);
- 16-bit images are scaled to 8 bit with rounding, v8 = round(v16 / 257), so 65535 -> 255 and
  257 -> 1 (the full range is kept, nothing is clipped); with `dtype=np.float32` they are
  returned as v16 / 65535 without going through 8 bit. 16-bit RGB(A) PNGs are decoded at full
  precision (plain PIL would keep only the high byte);
- float TIFFs are taken to be in [0, 1] and clipped to it;
- the EXIF orientation tag is applied, so the array is upright as a viewer shows it.

`write_image` writes uint8, float in [0, 1] (clipped and rounded) or uint16 (PNG / TIFF only)
atomically (temporary file + rename) and creates parent folders.
"""
from __future__ import annotations

import os
import pathlib
import struct
import tempfile
import warnings
import zlib
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS", "ImageReadError", "PairMismatchError", "read_image", "write_image",
    "list_images", "read_pair", "image_size",
]

PathLike = str | os.PathLike

#: File extensions (lower case) that `list_images` picks up and `write_image` accepts.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF"}

_EXIF_ORIENTATION = 0x0112

#: Largest image (H * W pixels) `read_image` decodes. PIL's own limit (~89 megapixels, a guard
#: against decompression bombs) is lifted for jaxsr's reads and this one applies instead: a
#: 400-megapixel RGB image takes ~1.2 GB as uint8 and ~4.8 GB as float32 (what predict holds;
#: tiles bound everything else). Override with the environment variable JAXSR_MAX_IMAGE_PIXELS.
MAX_IMAGE_PIXELS = int(os.environ.get("JAXSR_MAX_IMAGE_PIXELS", 400_000_000))


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file, the reason and a fix."""


class PairMismatchError(ValueError):
    """An LR/HR pair whose sizes do not agree with the scale; names both files and sizes."""


def _fail(path: pathlib.Path, reason: str, fix: str) -> ImageReadError:
    return ImageReadError(f"cannot read image '{path}': {reason}. Fix: {fix}")


def _open(path: pathlib.Path) -> Image.Image:
    """`Image.open` with PIL's pixel limit lifted (jaxsr's `MAX_IMAGE_PIXELS` applies instead,
    checked from the header by `_check_pixels` before any pixel is decoded)."""
    Image.MAX_IMAGE_PIXELS = None
    return Image.open(path)


def _check_pixels(path: pathlib.Path, width: int, height: int) -> None:
    limit = MAX_IMAGE_PIXELS
    if int(width) * int(height) > limit:
        raise _fail(path, f"it is {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                    f"above jaxsr's limit of {limit / 1e6:.0f} megapixels (decoding needs about "
                    "16 bytes of memory per pixel)",
                    "split or downscale the image, or raise the limit with the environment "
                    "variable JAXSR_MAX_IMAGE_PIXELS=<pixels> if the machine has the memory")


# --------------------------------------------------------------------------------------------
# orientation


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1-8) to a (H, W, ...) array (same result as PIL's
    `ImageOps.exif_transpose`)."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = np.swapaxes(arr, 0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, k=-1)
    elif orientation == 7:
        arr = np.swapaxes(arr, 0, 1)[::-1, ::-1]
    elif orientation == 8:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


def _pil_orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF must not make a readable image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


# --------------------------------------------------------------------------------------------
# decoding


def _check_file(path: pathlib.Path) -> None:
    if not path.exists():
        parent = path.parent
        hint = ("the folder exists; check the file name and extension" if parent.is_dir()
                else f"the folder '{parent}' does not exist either; check the path")
        raise _fail(path, "no such file", hint)
    if path.is_dir():
        raise _fail(path, "it is a directory, not an image file",
                    "pass the path of one image file (use list_images(dir) to list a folder)")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty (0 bytes)",
                    "re-download or re-export the image; the copy on disk is incomplete")


def _png16_color(path: pathlib.Path, rawmode: str) -> np.ndarray:
    """Full-precision decode of a 16-bit RGB / RGBA / gray+alpha PNG with PIL's own decoder.

    PIL unpacks these to 8 bit by keeping the high byte of every sample. Decoding the same
    stream a second time with the little-endian unpacker of equal pixel size (so the PNG row
    filters are undone identically) yields the low bytes; gray+alpha has a 32-bit 8-bit mode
    ('RGBA') that returns all four bytes at once.
    """
    def decode(raw: str) -> np.ndarray:
        with _open(path) as im:
            # tile entries: (codec, extents, offset, rawmode[, ...]); a namedtuple in new PIL
            im.tile = [type(t)._make((*t[:3], raw, *t[4:])) if hasattr(t, "_make")
                       else (*t[:3], raw, *t[4:]) for t in im.tile]
            im.load()
            return np.asarray(im)

    if rawmode == "LA;16B":
        b = decode("RGBA").astype(np.uint16)
        return np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], -1)
    hi = decode(rawmode).astype(np.uint16)
    lo = decode(rawmode.replace(";16B", ";16L")).astype(np.uint16)
    return (hi << 8) | lo


def _decode_pil(path: pathlib.Path, im: Image.Image) -> np.ndarray:
    """Loaded PIL image -> (H, W, C) array, C in {1, 2, 3, 4}, dtype uint8 / uint16 / float32."""
    mode = im.mode
    if mode == "P":
        has_alpha = "transparency" in im.info or (im.palette is not None
                                                  and im.palette.mode == "RGBA")
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    elif im.mode == "I":  # 32-bit int; PIL uses it for some 16-bit files
        if arr.min() < 0 or arr.max() > 65535:
            raise _fail(path, f"32-bit integer pixels (range {arr.min()}..{arr.max()}) are not "
                        "supported", "convert the image to 8 or 16 bit")
        arr = arr.astype(np.uint16)
    elif im.mode == "F":
        arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def _read_tiff(path: pathlib.Path) -> np.ndarray:
    """TIFFs PIL cannot decode exactly (16-bit / float color): decoded with tifffile."""
    import tifffile  # imported lazily: only needed for unusual TIFFs

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        _check_pixels(path, page.imagewidth, page.imagelength)
        arr = page.asarray()
        tag = page.tags.get("Orientation")
        orientation = int(tag.value) if tag is not None else 1
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    else:
        raise _fail(path, f"unsupported TIFF sample type {arr.dtype}",
                    "convert it to 8-bit, 16-bit or float TIFF")
    return _orient(arr, orientation if 1 <= orientation <= 8 else 1)


def _needs_tifffile(im: Image.Image) -> bool:
    if im.format != "TIFF":
        return False
    bits = im.tag_v2.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    sample_format = im.tag_v2.get(339, (1,))
    sample_format = sample_format if isinstance(sample_format, tuple) else (sample_format,)
    return (max(bits) > 8 and len(bits) > 1) or (3 in sample_format and len(bits) > 1)


def _decode(path: pathlib.Path) -> np.ndarray:
    try:
        with _open(path) as im:
            _check_pixels(path, *im.size)
            if _needs_tifffile(im):
                return _read_tiff(path)
            # before anything that may load the pixels (PNG getexif() does) and clear the tile
            raw = im.tile[0][3] if im.format == "PNG" and len(im.tile) == 1 else None
            orientation = _pil_orientation(im)
            arr = None
            if raw in ("RGB;16B", "RGBA;16B", "LA;16B"):
                try:
                    arr = _png16_color(path, raw)
                except (OSError, SyntaxError, EOFError, zlib.error):
                    raise  # a damaged file: reported below
                except Exception as err:  # pragma: no cover - depends on PIL internals
                    warnings.warn(f"{path}: full-precision 16-bit PNG decode failed ({err}); "
                                  "falling back to PIL's 8-bit reduction (high byte)")
            if arr is None:
                im.load()
                arr = _decode_pil(path, im)
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                return _read_tiff(path)
            except Exception:
                pass
        raise _fail(path, "not a recognised image format, or the file is truncated or corrupt",
                    "check that it is a complete PNG/JPEG/BMP/TIFF file; re-download or "
                    "re-export it") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as err:
        raise _fail(path, f"the file is truncated or corrupt ({err})",
                    "re-download or re-export the image") from err
    except MemoryError as err:
        raise _fail(path, "not enough memory to decode it",
                    "free memory, or split or downscale the image") from err
    return _orient(arr, orientation)


def _to_output(path: pathlib.Path, arr: np.ndarray, dtype, keep_alpha: bool) -> np.ndarray:
    channels = arr.shape[-1]
    color = arr[..., :1].repeat(3, -1) if channels in (1, 2) else arr[..., :3]
    if keep_alpha:
        if channels in (2, 4):
            alpha = arr[..., -1:]
        else:
            full = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(arr.dtype, 1.0)
            alpha = np.full(arr.shape[:2] + (1,), full, arr.dtype)
        color = np.concatenate([color, alpha], -1)
    dtype = np.dtype(dtype)
    if color.dtype == np.float32:
        if not np.all(np.isfinite(color)):
            raise _fail(path, "the float image contains NaN or inf", "re-export the image")
        color = np.clip(color, 0.0, 1.0)
        if dtype == np.float32:
            return np.ascontiguousarray(color, np.float32)
        return np.floor(color * 255.0 + 0.5).astype(np.uint8)
    if color.dtype == np.uint16:
        if dtype == np.float32:
            return (color / np.float32(65535.0)).astype(np.float32)
        # round(v / 257): v = 257 k + r, r in [0, 256], never exactly half way.
        return ((color.astype(np.uint32) + 128) // 257).astype(np.uint8)
    color = color.astype(np.uint8, copy=False)
    if dtype == np.float32:
        return color.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(color)


def read_image(path: PathLike, dtype=np.uint8, *, keep_alpha: bool = False) -> np.ndarray:
    """Reads an image file as RGB.

    Args:
      path: PNG / JPEG / BMP / TIFF file.
      dtype: np.uint8 (values in [0, 255]) or np.float32 (values in [0, 1]).
      keep_alpha: return (H, W, 4) with the alpha channel (opaque when the file has none).

    Returns:
      (H, W, 3) (or (H, W, 4) with keep_alpha) array of `dtype`, EXIF orientation applied.

    Raises:
      ImageReadError: missing file, directory, empty, truncated or corrupt file.
    """
    if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise ValueError(f"read_image: dtype must be np.uint8 or np.float32, got {dtype}")
    path = pathlib.Path(path)
    _check_file(path)
    arr = _decode(path)
    return _to_output(path, arr, dtype, keep_alpha)


def image_size(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image from its header (cheap: no pixel decode), EXIF orientation applied."""
    path = pathlib.Path(path)
    _check_file(path)
    try:
        with _open(path) as im:
            w, h = im.size
            _check_pixels(path, w, h)
            orientation = _pil_orientation(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tuple(read_image(path).shape[:2])
        raise _fail(path, "not a recognised image format, or the file is truncated or corrupt "
                    f"({err})", "check that it is a complete PNG/JPEG/BMP/TIFF file") from err
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


# --------------------------------------------------------------------------------------------
# writing


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _encode_png16(arr: np.ndarray) -> bytes:
    """(H, W, C) uint16, C in {1, 2, 3, 4} -> 16-bit PNG bytes (no row filters)."""
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], 1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))


def _prepare_for_write(path: pathlib.Path, img: np.ndarray, fmt: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (2, 3, 4)):
        raise ValueError(f"write_image('{path}'): expected (H, W), (H, W, 1|2|3|4) image, got "
                         f"shape {img.shape}; for a batch write each image separately")
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        if fmt not in ("PNG", "TIFF"):
            raise ValueError(f"write_image('{path}'): uint16 images can only be written as PNG "
                             "or TIFF; use a .png/.tif name or convert to uint8 first")
        return img
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)):
            raise ValueError(f"write_image('{path}'): the float image contains NaN or inf; "
                             "fix the values (np.nan_to_num) before writing")
        return np.floor(np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"write_image('{path}'): unsupported dtype {img.dtype}; pass uint8 in "
                     "[0, 255], float in [0, 1] or uint16 (PNG/TIFF)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_image(path: PathLike, img: np.ndarray, *, quality: int = 95) -> pathlib.Path:
    """Writes an image atomically; the format comes from the extension.

    Args:
      path: destination, one of .png .jpg .jpeg .bmp .tif .tiff; parent folders are created.
      img: (H, W, 3) RGB / (H, W, 4) RGBA / (H, W) or (H, W, 1) gray / (H, W, 2) gray+alpha;
        uint8 in [0, 255], float in [0, 1] (clipped, then rounded to uint8) or uint16
        (PNG / TIFF only, written at 16 bit).
      quality: JPEG quality (1-95).

    Returns:
      The written path. The file appears complete or not at all (temporary file + rename).
    """
    path = pathlib.Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"write_image('{path}'): unknown image extension '{path.suffix}'; use "
                         f"one of {', '.join(IMAGE_EXTENSIONS)}")
    arr = _prepare_for_write(path, img, fmt)
    if fmt == "JPEG" and arr.ndim == 3 and arr.shape[-1] in (2, 4):
        raise ValueError(f"write_image('{path}'): JPEG has no alpha channel; drop it "
                         "(img[..., :3]) or write a .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            if arr.dtype == np.uint16 and fmt == "TIFF":
                import tifffile

                gray = arr.ndim == 2 or arr.shape[-1] == 2
                tifffile.imwrite(f, arr, photometric="minisblack" if gray else "rgb",
                                 extrasamples=("unassalpha",) if arr.ndim == 3
                                 and arr.shape[-1] in (2, 4) else None)
            elif arr.dtype == np.uint16:
                f.write(_encode_png16(arr if arr.ndim == 3 else arr[..., None]))
            else:
                mode = "L" if arr.ndim == 2 else {2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
                kwargs = {"quality": quality} if fmt == "JPEG" else {}
                Image.fromarray(np.ascontiguousarray(arr), mode).save(f, fmt, **kwargs)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the umask like open()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# --------------------------------------------------------------------------------------------
# folders and pairs


def list_images(directory: PathLike, *, recursive: bool = False,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[pathlib.Path]:
    """Image files in a folder (by extension, case-insensitive; hidden files skipped).

    Returns:
      Paths sorted by their path relative to `directory`.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        what = "is a file, not a folder" if directory.exists() else "does not exist"
        raise FileNotFoundError(f"image folder '{directory}' {what}; pass the folder that "
                                "holds the images")
    exts = tuple(e.lower() for e in extensions)
    pattern = "**/*" if recursive else "*"
    files = [p for p in directory.glob(pattern)
             if p.is_file() and p.suffix.lower() in exts
             and not any(part.startswith(".") for part in p.relative_to(directory).parts)]
    return sorted(files, key=lambda p: p.relative_to(directory).as_posix())


def read_pair(lr_path: PathLike, hr_path: PathLike, scale: int | None,
              dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """Reads an LR/HR pair and checks that HR = LR * scale in both dimensions.

    Args:
      scale: integer scale; 1 for same-size pairs (registered real pairs, restoration);
        None skips the size check.

    Returns:
      (lr (h, w, 3), hr (h*scale, w*scale, 3)) as `read_image` returns them.

    Raises:
      PairMismatchError: the sizes do not agree with `scale`.
    """
    lr = read_image(lr_path, dtype)
    hr = read_image(hr_path, dtype)
    if scale is not None:
        (lh, lw), (hh, hw) = lr.shape[:2], hr.shape[:2]
        if (hh, hw) != (lh * scale, lw * scale):
            raise PairMismatchError(
                f"LR '{lr_path}' is {lh}x{lw} (HxW) and HR '{hr_path}' is {hh}x{hw}, but scale "
                f"{scale} needs HR = {lh * scale}x{lw * scale}. Fix: crop the HR image to a "
                "multiple of the scale (mod-crop) and regenerate the LR, check that the two "
                "files belong together, or use the right scale")
    return lr, hr
