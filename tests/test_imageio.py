"""jaxsr.imageio against files written independently (PIL / tifffile / a hand PNG encoder)."""
import os
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from jaxsr.imageio import (ImageReadError, PairMismatchError, image_size, list_images,
                           read_image, read_pair, write_image)

RNG = np.random.default_rng(1234)


def rand_u8(*shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------- reference 16-bit PNG encoder


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png16_bytes(arr):
    """Independent 16-bit PNG writer cycling through all five row filters (0-4)."""
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    rows = [bytearray(arr[i].astype(">u2").tobytes()) for i in range(h)]
    out = bytearray()
    for i, row in enumerate(rows):
        ftype = i % 5
        prev = rows[i - 1] if i else bytearray(len(row))
        filt = bytearray(len(row))
        for x in range(len(row)):
            a = row[x - bpp] if x >= bpp else 0
            b = prev[x]
            cc = prev[x - bpp] if x >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, cc)][ftype]
            filt[x] = (row[x] - pred) % 256
        out += bytes([ftype]) + filt

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type,
                                                             0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


def to8(v16):
    """Hand rounding of 16-bit values to 8 bit: round(v / 257)."""
    return np.floor(np.asarray(v16, np.float64) / 257.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- modes


def test_rgb_png_uint8_and_float(tmp_path):
    img = rand_u8(9, 13, 3)
    Image.fromarray(img, "RGB").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (9, 13, 3)
    np.testing.assert_array_equal(out, img)
    f = read_image(tmp_path / "a.png", dtype=np.float32)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, img / 255.0, atol=1e-7)


def test_gray_is_replicated(tmp_path):
    g = rand_u8(8, 11)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (8, 11, 3)
    for ch in range(3):
        np.testing.assert_array_equal(out[..., ch], g)


def test_gray_alpha(tmp_path):
    la = rand_u8(6, 7, 2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out, np.repeat(la[..., :1], 3, -1))
    out4 = read_image(tmp_path / "la.png", keep_alpha=True)
    assert out4.shape == (6, 7, 4)
    np.testing.assert_array_equal(out4[..., 3], la[..., 1])
    np.testing.assert_array_equal(out4[..., 0], la[..., 0])


def test_rgba_alpha_dropped_or_kept(tmp_path):
    rgba = rand_u8(10, 6, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), rgba[..., :3])
    np.testing.assert_array_equal(read_image(tmp_path / "x.png", keep_alpha=True), rgba)


def test_rgb_keep_alpha_is_opaque(tmp_path):
    img = rand_u8(4, 5, 3)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png", keep_alpha=True)
    assert out.shape == (4, 5, 4) and np.all(out[..., 3] == 255)


def test_palette_by_hand(tmp_path):
    palette = rand_u8(16, 3)
    idx = RNG.integers(0, 16, (7, 9), dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), palette[idx])


def test_palette_transparency(tmp_path):
    palette = rand_u8(4, 3)
    idx = np.array([[0, 1], [2, 3]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "p.png", transparency=2)
    out = read_image(tmp_path / "p.png", keep_alpha=True)
    np.testing.assert_array_equal(out[..., :3], palette[idx])
    np.testing.assert_array_equal(out[..., 3], [[255, 255], [0, 255]])


def test_16bit_gray_pil_scaling(tmp_path):
    v = np.array([[0, 65535, 257, 128], [129, 384, 385, 65279]], np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    # hand: 65535/257 = 255, 257/257 = 1, 128/257 = .498 -> 0, 129/257 = .502 -> 1,
    # 384/257 = 1.494 -> 1, 385/257 = 1.498 -> 1, 65279/257 = 254.0 -> 254
    expected = np.array([[0, 255, 1, 0], [1, 1, 1, 254]], np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 2], expected)
    f = read_image(tmp_path / "g16.png", dtype=np.float32)
    np.testing.assert_allclose(f[..., 1], v / 65535.0, rtol=1e-6)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_all_filters_full_precision(tmp_path, channels):
    v = RNG.integers(0, 65536, (6, 5, channels), dtype=np.uint16)
    v[0, 0] = 65535
    v[0, 1] = 257
    v[1, 0] = 65280  # PIL alone (high byte) gives 255 here; round(65280/257) = 254
    (tmp_path / "v.png").write_bytes(png16_bytes(v))
    out = read_image(tmp_path / "v.png", keep_alpha=True)
    color = v[..., :1].repeat(3, -1) if channels < 3 else v[..., :3]
    np.testing.assert_array_equal(out[..., :3], to8(color))
    if channels in (2, 4):
        np.testing.assert_array_equal(out[..., 3], to8(v[..., -1]))
    assert out[0, 0, 0] == 255 and out[0, 1, 0] == 1 and out[1, 0, 0] == 254
    f = read_image(tmp_path / "v.png", dtype=np.float32)
    np.testing.assert_allclose(f, color / 65535.0, rtol=1e-6)


def test_jpeg_rgb_and_gray(tmp_path):
    img = rand_u8(16, 16, 3)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    np.testing.assert_array_equal(out, np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB")))
    smooth = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (16, 1))
    Image.fromarray(smooth, "L").save(tmp_path / "g.jpeg", quality=95)
    g = read_image(tmp_path / "g.jpeg")
    assert g.shape == (16, 24, 3)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
    assert np.abs(g[..., 0].astype(int) - smooth).max() <= 3


@pytest.mark.parametrize("ext", ["bmp", "tif", "tiff"])
def test_bmp_tiff_8bit(tmp_path, ext):
    img = rand_u8(7, 12, 3)
    Image.fromarray(img).save(tmp_path / f"a.{ext}")
    np.testing.assert_array_equal(read_image(tmp_path / f"a.{ext}"), img)


def test_tiff_16bit_rgb_and_float(tmp_path):
    v = RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    v[0, 0] = [65535, 257, 0]
    tifffile.imwrite(tmp_path / "v.tif", v, photometric="rgb")
    out = read_image(tmp_path / "v.tif")
    np.testing.assert_array_equal(out, to8(v))
    np.testing.assert_array_equal(out[0, 0], [255, 1, 0])
    fl = RNG.random((4, 5, 3)).astype(np.float32)
    fl[0, 0] = [-0.5, 1.5, 0.25]
    tifffile.imwrite(tmp_path / "f.tif", fl, photometric="rgb")
    f = read_image(tmp_path / "f.tif", dtype=np.float32)
    np.testing.assert_allclose(f, np.clip(fl, 0, 1))
    u = read_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(u[0, 0], [0, 255, 64])  # 0.25*255 = 63.75 -> 64


EXPECT_ORIENT = {  # out[i, j] for an (H=2, W=3) input a, by hand
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.stack([a[::-1, j] for j in range(a.shape[1])]),  # 90 deg clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.stack([a[:, j] for j in range(a.shape[1] - 1, -1, -1)]),  # counter-cw
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, orientation):
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)
    out = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(out, EXPECT_ORIENT[orientation](a))
    np.testing.assert_array_equal(out, np.asarray(ImageOps.exif_transpose(Image.open(
        tmp_path / "o.png"))))
    assert image_size(tmp_path / "o.png") == out.shape[:2]


# ---------------------------------------------------------------- errors


def test_missing_dir_and_empty(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png.*no such file.*Fix"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"e\.png.*empty.*Fix"):
        read_image(tmp_path / "e.png")
    assert issubclass(ImageReadError, ValueError)


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "tif"])
@pytest.mark.parametrize("frac", [0.3, 0.8])
def test_truncated_files(tmp_path, ext, frac):
    Image.fromarray(rand_u8(32, 40, 3)).save(tmp_path / f"full.{ext}")
    data = (tmp_path / f"full.{ext}").read_bytes()
    bad = tmp_path / f"cut_{ext}.{ext}"
    bad.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    msg = str(info.value)
    assert bad.name in msg and "truncated or corrupt" in msg and "Fix" in msg


def test_truncated_16bit_color_png(tmp_path):
    data = png16_bytes(RNG.integers(0, 65536, (20, 20, 3), dtype=np.uint16))
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut16.png"):
        read_image(tmp_path / "cut16.png")


def test_garbage_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all" * 4)
    with pytest.raises(ImageReadError, match=r"junk\.png.*not a recognised image"):
        read_image(tmp_path / "junk.png")


# ---------------------------------------------------------------- writing


def test_write_float_clip_round(tmp_path):
    x = np.array([[[-0.5, 0.0, 0.5 / 255], [0.4999 / 255, 1.0, 1.7]]], np.float32)
    p = write_image(tmp_path / "deep" / "er" / "f.png", x)
    assert p.exists()
    np.testing.assert_array_equal(np.asarray(Image.open(p)), [[[0, 0, 1], [0, 255, 255]]])


def test_write_formats_roundtrip(tmp_path):
    img = rand_u8(6, 8, 3)
    for ext in ("png", "bmp", "tif", "tiff"):
        write_image(tmp_path / f"a.{ext}", img)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"a.{ext}")), img)
    write_image(tmp_path / "a.JPG", img)
    assert Image.open(tmp_path / "a.JPG").format == "JPEG"
    gray = rand_u8(5, 4)
    write_image(tmp_path / "g.png", gray[..., None])
    assert Image.open(tmp_path / "g.png").mode == "L"
    rgba = rand_u8(3, 3, 4)
    write_image(tmp_path / "r.png", rgba)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")), rgba)


def test_write_uint16(tmp_path):
    g = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
    write_image(tmp_path / "g.png", g)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")).astype(np.uint16), g)
    c = RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    write_image(tmp_path / "c.tif", c)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), c)
    write_image(tmp_path / "c.png", c)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), to8(c))
    with pytest.raises(ValueError, match="uint16.*PNG or TIFF"):
        write_image(tmp_path / "c.jpg", c)


def test_write_errors(tmp_path):
    img = rand_u8(4, 4, 3)
    with pytest.raises(ValueError, match=r"'\.webp'.*\.png"):
        write_image(tmp_path / "a.webp", img)
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "a.png", np.full((2, 2, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.int32))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "a.png", np.zeros((1, 2, 2, 3), np.uint8))
    assert os.listdir(tmp_path) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    old = rand_u8(4, 4, 3)
    write_image(target, old)

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, rand_u8(4, 4, 3))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(target), old)  # untouched
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]  # no temporary file left


# ---------------------------------------------------------------- folders and pairs


def test_list_images(tmp_path):
    for name in ["b.png", "a.JPG", "c.tiff", "d.txt", ".hidden.png", "sub/e.png"]:
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.tiff"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)
            ] == ["a.JPG", "b.png", "c.tiff", "sub/e.png"]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")


def test_read_pair(tmp_path):
    lr, hr = rand_u8(4, 5, 3), rand_u8(8, 10, 3)
    write_image(tmp_path / "lr.png", lr)
    write_image(tmp_path / "hr.png", hr)
    a, b = read_pair(tmp_path / "lr.png", tmp_path / "hr.png", 2)
    np.testing.assert_array_equal(a, lr)
    np.testing.assert_array_equal(b, hr)
    with pytest.raises(PairMismatchError) as info:
        read_pair(tmp_path / "lr.png", tmp_path / "hr.png", 3)
    msg = str(info.value)
    assert "lr.png" in msg and "hr.png" in msg and "4x5" in msg and "8x10" in msg
    with pytest.raises(PairMismatchError):
        read_pair(tmp_path / "lr.png", tmp_path / "hr.png", 1)
    write_image(tmp_path / "same.png", lr)
    a, b = read_pair(tmp_path / "lr.png", tmp_path / "same.png", 1)
    np.testing.assert_array_equal(a, b)
