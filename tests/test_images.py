"""The front door: every kind of bad or awkward upload gives an RGB image or an InvalidImageError (chapter 02)."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from image_search import InvalidImageError, load_image
from image_search.images import MAX_ASPECT, MAX_PIXELS, MAX_SIDE, decode_bytes


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def bomb_png(w: int, h: int) -> bytes:
    """A valid 1-bit PNG of ``w`` x ``h`` black pixels: a few KB on disk, gigapixels decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z, row_bytes = zlib.compressobj(6), 1 + (w + 7) // 8  # each row: filter byte 0, then zeros
    block = 256
    idat = b"".join(z.compress(b"\0" * row_bytes * min(block, h - r)) for r in range(0, h, block)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


BOMBS = {"30000x30000 (Pillow's hard limit)": (30000, 30000),
         "10000x10000 (Pillow's warning range)": (10000, 10000),
         "7000x6000 (over our 40 Mpx limit)": (7000, 6000)}


@pytest.fixture(scope="module")
def bombs():
    return {name: bomb_png(*size) for name, size in BOMBS.items()}


def halves(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    return Image.fromarray(a)


# ------------------------------------------------------------------ refused
@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"just some notes, not an image\n" * 3, "not an image"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', "SVG"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', "SVG"),
    (b"GIF89a", "corrupt|not an image"),
    (b"\x89PNG\r\n\x1a\n", "corrupt|not an image"),
    (b"\xff\xd8\xff", "corrupt|not an image"),
])
def test_non_images_are_refused_with_a_reason(data, message):
    with pytest.raises(InvalidImageError, match=message):
        decode_bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_files_are_refused(fmt, keep):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = encode(img, fmt)
    with pytest.raises(InvalidImageError):
        decode_bytes(data[: int(len(data) * keep)])


def test_files_named_jpg_are_judged_by_content(tmp_path):
    (tmp_path / "page.jpg").write_text("<html>not an image</html>")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "real.jpg").write_bytes(encode(halves(), "PNG"))  # a PNG named .jpg is fine
    with pytest.raises(InvalidImageError, match="HTML"):
        load_image(tmp_path / "page.jpg")
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(str(tmp_path / "empty.jpg"))
    assert load_image(tmp_path / "real.jpg").size == (40, 20)
    for bad in (tmp_path / "missing.jpg", tmp_path, "a\0b.jpg", "x" * 5000):
        with pytest.raises(InvalidImageError):
            load_image(bad)


def test_unsupported_formats_and_types_are_refused():
    with pytest.raises(InvalidImageError):
        decode_bytes(encode(halves(), "ICO"))         # a real image, but not a format we accept
    with pytest.raises(InvalidImageError):
        decode_bytes(encode(halves(), "PPM"))
    for bad in (42, None, ["a.jpg"], 3.5):
        with pytest.raises(InvalidImageError):
            load_image(bad)


@pytest.mark.parametrize("name", list(BOMBS))
def test_decompression_bombs_are_refused_before_decoding(bombs, name):
    data = bombs[name]
    assert len(data) < 200_000
    t = time.perf_counter()
    with pytest.raises(InvalidImageError, match="pixel|too large"):
        decode_bytes(data)
    assert time.perf_counter() - t < 0.5  # header only: decoding 900 Mpx would take seconds


def test_bombs_stay_within_a_memory_bound(bombs, tmp_path):
    for i, data in enumerate(bombs.values()):
        (tmp_path / f"bomb{i}.png").write_bytes(data)
    code = f"""
import resource, sys
from image_search.images import load_image
from image_search.errors import InvalidImageError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for i in range({len(bombs)}):
    try:
        load_image(r"{tmp_path}/bomb%d.png" % i)
        sys.exit("decoded a bomb")
    except InvalidImageError:
        pass
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) < 64  # MB of peak memory growth; the 30000x30000 bomb alone is 900 MB


def test_pixel_limit_applies_to_arrays_and_pil_images():
    with pytest.raises(InvalidImageError, match="pixel"):
        load_image(Image.new("1", (8000, 6000)))
    with pytest.raises(InvalidImageError, match="pixel"):
        load_image(np.zeros((7000, 6000), dtype=bool))


# ------------------------------------------------------------------ accepted and normalised
def test_huge_legal_photo_is_downscaled_not_refused():
    t = time.perf_counter()
    img = decode_bytes(encode(Image.new("RGB", (5000, 2500), (10, 200, 10)), "JPEG", quality=80))
    assert img.size == (MAX_SIDE, MAX_SIDE // 2) and img.mode == "RGB"
    assert np.allclose(img.getpixel((500, 200)), (10, 200, 10), atol=4)
    assert time.perf_counter() - t < 3
    img = decode_bytes(encode(Image.new("RGB", (3000, 1500), (1, 2, 3)), "PNG"))
    assert img.size == (MAX_SIDE, MAX_SIDE // 2)


@pytest.mark.parametrize("size", [(1, 1), (1, 2), (3, 1), (400, 100), (100, 400)])
def test_tiny_and_moderate_aspect_images_keep_their_size(size):
    img = decode_bytes(encode(Image.new("RGB", size, (9, 8, 7)), "PNG"))
    assert img.size == size and img.getpixel((0, 0)) == (9, 8, 7)


@pytest.mark.parametrize("size", [(5000, 1), (1, 5000), (1000, 3), (2, 900), (5, 1)])
def test_extreme_aspect_ratios_are_padded_with_white(size):
    img = decode_bytes(encode(Image.new("RGB", size, (0, 0, 0)), "PNG"))
    w, h = img.size
    assert max(w, h) <= MAX_SIDE and max(w, h) / min(w, h) <= MAX_ASPECT + 1e-9
    a = np.asarray(img)
    assert (a == 255).any() and (a == 0).any()  # the sliver is there, centred on white
    rows, cols = np.nonzero((a == 0).all(axis=2))
    assert abs(rows.mean() - (h - 1) / 2) <= 1 and abs(cols.mean() - (w - 1) / 2) <= 1


def test_extreme_aspect_ratio_does_not_blow_up_the_encoder_preprocessing():
    # The CNN encoders resize the short side to 256 (torchvision Resize(256)) before cropping:
    # unpadded, a 5000x1 sliver would become a 1,280,000x256 image (about 1 GB of floats).
    for size in [(5000, 1), (1, 5000), (1, 1), (30, 7)]:
        w, h = decode_bytes(encode(Image.new("RGB", size), "PNG")).size
        assert 256 * max(w, h) / min(w, h) <= 256 * MAX_ASPECT


def test_sixteen_bit_png_is_scaled_not_clipped():
    a = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    data = encode(Image.fromarray(a), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = decode_bytes(data)
    assert [img.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (4, 4, 4)]


def test_cmyk_jpeg_becomes_rgb():
    img = decode_bytes(encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"))
    assert img.mode == "RGB"
    assert np.allclose(img.getpixel((16, 16)), (255, 0, 0), atol=8)


def test_palette_and_transparency_are_composited_on_white():
    pal = halves().convert("P")
    assert decode_bytes(encode(pal, "PNG")).getpixel((0, 0)) == (255, 0, 0)
    pal_t = pal.copy()
    pal_t.info["transparency"] = pal.getpixel((0, 0))  # the red entry is transparent
    img = decode_bytes(encode(pal_t, "PNG", transparency=pal.getpixel((0, 0))))
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((39, 0)) == (0, 0, 255)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 128))
    rgba.putpixel((2, 2), (0, 0, 0, 255))
    img = decode_bytes(encode(rgba, "PNG"))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert np.allclose(img.getpixel((1, 1)), (255, 127, 127), atol=2)
    assert img.getpixel((2, 2)) == (0, 0, 0)
    la = Image.new("LA", (4, 4), (0, 0))
    assert decode_bytes(encode(la, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = decode_bytes(data)
    assert img.mode == "RGB" and img.getpixel((8, 8)) == (255, 0, 0)
    webp = encode(frames[1], "WEBP", save_all=True, append_images=[frames[2]], lossless=True)
    assert decode_bytes(webp).getpixel((8, 8)) == (0, 255, 0)


@pytest.mark.parametrize("orientation, size, top_left, bottom_right", [
    (1, (40, 20), (255, 0, 0), (0, 0, 255)),   # as stored: red left, blue right
    (3, (40, 20), (0, 0, 255), (255, 0, 0)),   # rotate 180: blue left
    (6, (20, 40), (255, 0, 0), (0, 0, 255)),   # rotate 90 clockwise: red on top
    (8, (20, 40), (0, 0, 255), (255, 0, 0)),   # rotate 90 counter-clockwise: blue on top
])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(orientation, size, top_left, bottom_right, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img = decode_bytes(encode(halves(), fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {})))
    assert img.size == size
    w, h = size
    assert np.allclose(img.getpixel((2, 2)), top_left, atol=24)
    assert np.allclose(img.getpixel((w - 3, h - 3)), bottom_right, atol=24)


def test_broken_exif_keeps_the_pixels():
    exif = Image.Exif()
    exif[0x0112] = 99  # not a valid orientation
    img = decode_bytes(encode(halves(), "PNG", exif=exif))
    assert img.size == (40, 20) and img.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["1", "L", "I", "F", "RGB", "RGBA", "P", "LA", "CMYK", "YCbCr", "HSV", "I;16"])
def test_every_pil_mode_gives_rgb(mode):
    img = load_image(halves().convert("RGBA").convert(mode) if mode not in ("I;16",) else Image.new("I;16", (40, 20), 300))
    assert img.mode == "RGB" and img.size == (40, 20)


def test_arrays_are_checked():
    assert load_image(np.zeros((4, 5, 3), np.uint8)).size == (5, 4)
    assert load_image(np.ones((4, 5), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((4, 5), bool)).getpixel((0, 0)) == (0, 0, 0)
    for bad in (np.zeros((0, 5, 3), np.uint8), np.zeros((4, 5, 2)), np.zeros(7), np.zeros((2, 2, 2, 3)),
                np.full((4, 4), np.nan), np.full((4, 4, 3), np.inf), np.array([["a", "b"]]),
                np.zeros((4, 4), complex), np.empty((3, 3), object)):
        with pytest.raises(InvalidImageError):
            load_image(bad)


def test_a_lazily_opened_truncated_pil_image_is_refused():
    data = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    lazy = Image.open(io.BytesIO(data[:400]))  # header parsed, pixels not yet decoded
    with pytest.raises(InvalidImageError):
        load_image(lazy)


def test_catalog_images_decode_unchanged(catalog):
    path = catalog.icon_path(catalog.ids[0])
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(Image.open(path).convert("RGB")))
    assert MAX_PIXELS >= 12_000_000  # a 12 Mpx phone photo is legal
