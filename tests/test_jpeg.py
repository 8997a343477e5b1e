"""jaxsr.degradations.jpeg against PIL's libjpeg(-turbo) encoder + decoder.

Reference: ``Image.save(format='JPEG', quality=q, subsampling=2, optimize=False)`` then
``Image.open``. The default (dct='islow') path must be bit-exact; the float-matrix DCT path must be
close. Run with -s to see the measured agreement numbers.
"""
from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxsr.degradations.jpeg import jpeg, quality_table, random_jpeg

CROP = (90, 118)            # not a multiple of 16 or 8 in either direction, odd chroma padding
JPEG_ISLOW = jax.jit(lambda x, q: jpeg(x, q))
JPEG_FLOAT = jax.jit(lambda x, q: jpeg(x, q, dct="float"))


def pil_roundtrip(img: np.ndarray, quality: int) -> tuple[np.ndarray, Image.Image]:
    """(H, W, 3) uint8 -> PIL/libjpeg 4:2:0 JPEG decoded to uint8, and the opened JPEG image."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False)
    buf.seek(0)
    opened = Image.open(buf)
    return np.asarray(opened.convert("RGB")), opened


def ours(img: np.ndarray, quality: int, fn=JPEG_ISLOW) -> np.ndarray:
    """Run our JPEG on a uint8 image; returns uint8 (outputs are exact multiples of 1/255)."""
    out = np.asarray(fn(jnp.asarray(img, jnp.float32) / 255.0, quality)) * 255.0
    assert np.abs(out - np.round(out)).max() < 1e-3
    return np.round(out).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth colour image with an edge and mild noise, (h, w, 3) uint8."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    r = 0.5 + 0.35 * np.sin(6.0 * xx + 2.0 * yy)
    g = 0.5 + 0.3 * np.cos(5.0 * yy) * (xx < 0.6)
    b = 0.3 + 0.5 * xx * yy + 0.1 * np.sin(20.0 * xx)
    img = np.stack([r, g, b], -1) + rs.normal(0.0, 0.02, (h, w, 3))
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def real_crops(root, n_bsd: int = 3) -> list[tuple[str, np.ndarray]]:
    """Off-grid crops of size CROP from Set5 x2 HR and the first BSD100 images."""
    files = sorted((root / "set5" / "x2" / "hr").glob("*.png"))
    files += sorted((root / "bsd100" / "hr").glob("*.png"))[:n_bsd]
    assert files, f"no PNGs under {root}/set5/x2/hr or {root}/bsd100/hr"
    crops = []
    for f in files:
        x = np.asarray(Image.open(f).convert("RGB"))
        top, left = (x.shape[0] - CROP[0]) // 2 + 3, (x.shape[1] - CROP[1]) // 2 + 5
        crops.append((str(f.relative_to(root)),
                      x[top:top + CROP[0], left:left + CROP[1]]))
    return crops


@pytest.mark.parametrize("quality", [1, 10, 30, 50, 75, 95, 100])
def test_quality_table_equals_tables_pil_writes(quality):
    _, opened = pil_roundtrip(smooth_image(16, 16), quality)
    written = opened.quantization     # {0: luma, 1: chroma}, natural (row-major) order
    expected = np.stack([np.reshape(written[0], (8, 8)), np.reshape(written[1], (8, 8))])
    np.testing.assert_array_equal(np.asarray(quality_table(quality)), expected)
    # Traced quality gives the same table.
    np.testing.assert_array_equal(np.asarray(jax.jit(quality_table)(jnp.int32(quality))),
                                  expected)


def test_bit_exact_with_pil_on_synthetic_image():
    img = smooth_image(*CROP)
    for q in (5, 30, 50, 75, 95, 100):
        ref, _ = pil_roundtrip(img, q)
        got = ours(img, q)
        diff = np.abs(got.astype(int) - ref)
        print(f"\nsynthetic {CROP} q={q}: max|ours-PIL|={diff.max()}  "
              f"PSNR(ours,orig)={psnr(got, img):.3f}  PSNR(PIL,orig)={psnr(ref, img):.3f}")
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (9, 5), (17, 33)])
def test_bit_exact_with_pil_on_odd_small_sizes(shape):
    # Covers edge replication, odd chroma rows/cols and libjpeg's plain (non-fancy)
    # upsampling for chroma widths <= 2. Noise makes every DCT coefficient matter.
    rs = np.random.RandomState(1)
    img = rs.randint(0, 256, shape + (3,)).astype(np.uint8)
    for q in (10, 50, 90):
        np.testing.assert_array_equal(ours(img, q), pil_roundtrip(img, q)[0])


@pytest.mark.parametrize("quality", [10, 30, 50, 75, 95])
def test_agrees_with_pil_on_real_images(shared_data, quality):
    rows = []
    for name, img in real_crops(shared_data):
        ref, _ = pil_roundtrip(img, quality)
        exact = ours(img, quality)
        flt = ours(img, quality, JPEG_FLOAT)
        rows.append((name, np.abs(exact.astype(int) - ref).max(), psnr(flt, ref),
                     np.abs(flt.astype(int) - ref).max(), psnr(flt, img) - psnr(ref, img),
                     psnr(ref, img)))
    print(f"\nq={quality} crops {CROP}: name | islow max|diff| | float: PSNR(ours,PIL) "
          "max|diff| PSNR(ours,orig)-PSNR(PIL,orig) | PSNR(PIL,orig)")
    for r in rows:
        print(f"  {r[0]:20s} {r[1]:3d} | {r[2]:6.2f} dB {r[3]:3d} {r[4]:+.3f} dB | {r[5]:.2f} dB")
    # Default integer path: bit-exact with libjpeg.
    assert max(r[1] for r in rows) == 0
    # Float-matrix DCT: measured min PSNR(ours,PIL) 42.9 dB and |delta PSNR| <= 0.03 dB here.
    assert min(r[2] for r in rows) > 40.0
    assert max(abs(r[4]) for r in rows) < 0.15


def test_jit_vmap_per_sample_quality_equals_single_calls():
    imgs = np.stack([smooth_image(48, 40, seed=s) for s in range(4)])
    qualities = np.array([10, 30, 75, 95])
    batch = jax.jit(jax.vmap(jpeg))(jnp.asarray(imgs, jnp.float32) / 255.0,
                                    jnp.asarray(qualities))
    for i, q in enumerate(qualities):
        single = JPEG_ISLOW(jnp.asarray(imgs[i], jnp.float32) / 255.0, int(q))
        np.testing.assert_array_equal(np.asarray(batch[i]), np.asarray(single))
        np.testing.assert_array_equal(np.round(np.asarray(batch[i]) * 255).astype(np.uint8),
                                      pil_roundtrip(imgs[i], int(q))[0])


def test_random_jpeg_uses_a_quality_in_range():
    img = smooth_image(32, 32)
    q_min, q_max = 40, 44
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    fn = jax.jit(jax.vmap(lambda k, x: random_jpeg(k, x, q_min, q_max), in_axes=(0, None)))
    outs = np.round(np.asarray(fn(keys, jnp.asarray(img, jnp.float32) / 255.0)) * 255)
    refs = {q: pil_roundtrip(img, q)[0] for q in range(q_min - 1, q_max + 2)}
    assert len({refs[q].tobytes() for q in refs}) == len(refs)   # qualities distinguishable
    used = []
    for out in outs.astype(np.uint8):
        used.append([q for q, r in refs.items() if np.array_equal(out, r)])
    assert all(len(u) == 1 and q_min <= u[0] <= q_max for u in used), used
    assert len({u[0] for u in used}) > 1     # different keys draw different qualities
    with pytest.raises(ValueError, match="q_min"):
        random_jpeg(keys[0], jnp.asarray(img, jnp.float32), 50, 20)


def test_higher_quality_is_closer_to_original(shared_data):
    _, img = real_crops(shared_data, n_bsd=0)[1]
    qualities = [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
    values = [psnr(ours(img, q), img) for q in qualities]
    print("\nPSNR(ours, orig) by quality: "
          + ", ".join(f"q{q}={v:.2f}" for q, v in zip(qualities, values)))
    assert all(b > a for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("dct", ["islow", "float"])
def test_straight_through_keeps_values_and_passes_gradients(dct):
    img = smooth_image(16, 24)

    @jax.jit
    def run(x):
        def plain(v):
            return jpeg(v, 50, dct=dct)

        def ste(v):
            return jpeg(v, 50, straight_through=True, dct=dct)

        out_ste, vjp = jax.vjp(ste, x)
        return (plain(x), out_ste, vjp(jnp.ones_like(out_ste))[0],
                jax.grad(lambda v: plain(v).sum())(x))

    plain, out_ste, grad_ste, grad_plain = map(np.asarray, run(jnp.asarray(img, jnp.float32) / 255))
    np.testing.assert_array_equal(out_ste, plain)
    if dct == "islow":
        np.testing.assert_array_equal(np.round(out_ste * 255).astype(np.uint8),
                                      pil_roundtrip(img, 50)[0])
    # Every stage's surrogate is linear; luma coding and RGB<->YCbCr are (near) identities and the
    # chroma box-down / triangle-up pair preserves sums, so d sum(out) / d img is ~1 everywhere.
    np.testing.assert_allclose(grad_ste, 1.0, atol=1e-3)
    # Without straight-through, rounding blocks all gradients.
    assert np.all(grad_plain == 0)


def test_bad_arguments_raise_helpful_errors():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        jpeg(jnp.zeros((2, 8, 8, 3)), 50)
    with pytest.raises(ValueError, match="dct"):
        jpeg(jnp.zeros((8, 8, 3)), 50, dct="fast")
