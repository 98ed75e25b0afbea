"""The front door: every kind of bad or awkward upload gives an RGB image or an InvalidImageError
(chapter 02)."""

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
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    z, row_bytes = zlib.compressobj(6), 1 + (w + 7) // 8  # each row: filter byte 0, then zeros
    block = 256
    idat = (
        b"".join(z.compress(b"\0" * row_bytes * min(block, h - r)) for r in range(0, h, block))
        + z.flush()
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


BOMBS = {
    "30000x30000 (Pillow's hard limit)": (30000, 30000),
    "10000x10000 (Pillow's warning range)": (10000, 10000),
    "7000x6000 (over our 40 Mpx limit)": (7000, 6000),
}


@pytest.fixture(scope="module")
def bombs():
    return {name: bomb_png(*size) for name, size in BOMBS.items()}


def halves(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


# ------------------------------------------------------------------ refused
@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"just some notes, not an image\n" * 3, "not an image"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
            b'height="10"><rect/></svg>',
            "SVG",
        ),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', "SVG"),
        (b"GIF89a", "corrupt|not an image"),
        (b"\x89PNG\r\n\x1a\n", "corrupt|not an image"),
        (b"\xff\xd8\xff", "corrupt|not an image"),
    ],
)
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
        decode_bytes(encode(halves(), "ICO"))  # a real image, but not a format we accept
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
    assert (
        int(out.stdout.strip()) < 64
    )  # MB of peak memory growth; the 30000x30000 bomb alone is 900 MB


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
    assert [img.getpixel((x, 0)) for x in range(4)] == [
        (0, 0, 0),
        (128, 128, 128),
        (255, 255, 255),
        (4, 4, 4),
    ]


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


@pytest.mark.parametrize(
    "orientation, size, top_left, bottom_right",
    [
        (1, (40, 20), (255, 0, 0), (0, 0, 255)),  # as stored: red left, blue right
        (3, (40, 20), (0, 0, 255), (255, 0, 0)),  # rotate 180: blue left
        (6, (20, 40), (255, 0, 0), (0, 0, 255)),  # rotate 90 clockwise: red on top
        (8, (20, 40), (0, 0, 255), (255, 0, 0)),  # rotate 90 counter-clockwise: blue on top
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(orientation, size, top_left, bottom_right, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img = decode_bytes(
        encode(halves(), fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    )
    assert img.size == size
    w, h = size
    assert np.allclose(img.getpixel((2, 2)), top_left, atol=24)
    assert np.allclose(img.getpixel((w - 3, h - 3)), bottom_right, atol=24)


def test_broken_exif_keeps_the_pixels():
    exif = Image.Exif()
    exif[0x0112] = 99  # not a valid orientation
    img = decode_bytes(encode(halves(), "PNG", exif=exif))
    assert img.size == (40, 20) and img.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "mode", ["1", "L", "I", "F", "RGB", "RGBA", "P", "LA", "CMYK", "YCbCr", "HSV", "I;16"]
)
def test_every_pil_mode_gives_rgb(mode):
    img = load_image(
        halves().convert("RGBA").convert(mode)
        if mode not in ("I;16",)
        else Image.new("I;16", (40, 20), 300)
    )
    assert img.mode == "RGB" and img.size == (40, 20)


def test_arrays_are_checked():
    assert load_image(np.zeros((4, 5, 3), np.uint8)).size == (5, 4)
    assert load_image(np.ones((4, 5), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((4, 5), bool)).getpixel((0, 0)) == (0, 0, 0)
    for bad in (
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((4, 5, 2)),
        np.zeros(7),
        np.zeros((2, 2, 2, 3)),
        np.full((4, 4), np.nan),
        np.full((4, 4, 3), np.inf),
        np.array([["a", "b"]]),
        np.zeros((4, 4), complex),
        np.empty((3, 3), object),
    ):
        with pytest.raises(InvalidImageError):
            load_image(bad)


def test_a_lazily_opened_truncated_pil_image_is_refused():
    data = encode(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        "PNG",
    )
    lazy = Image.open(io.BytesIO(data[:400]))  # header parsed, pixels not yet decoded
    with pytest.raises(InvalidImageError):
        load_image(lazy)


def test_catalog_images_decode_unchanged(catalog):
    path = catalog.icon_path(catalog.ids[0])
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(Image.open(path).convert("RGB")))
    assert MAX_PIXELS >= 12_000_000  # a 12 Mpx phone photo is legal


# ----------------------------------------------------------- decoding-time bombs (issue 19, item 5)
def progressive_jpeg(img: Image.Image, repeats: int = 0, **kw) -> bytes:
    """A progressive JPEG of ``img`` whose last scan is written ``1 + repeats`` times (byte
    surgery)."""
    data = encode(img, "JPEG", progressive=True, **kw)
    sos, eoi = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    return data[:sos] + data[sos:eoi] * (1 + repeats) + data[eoi:]


def scans_of_pillow(img: Image.Image) -> int:
    """How many scans libjpeg's progressive script writes for ``img`` (10 for colour, 6 for
    gray)."""
    return {"L": 6, "RGB": 10}[img.mode]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_progressive_jpeg_scan_bomb_is_refused_at_the_limit(mode):
    from image_search.images import MAX_JPEG_SCANS

    img = halves(96, 64).convert(mode)
    extra = MAX_JPEG_SCANS - scans_of_pillow(img)
    at_limit = decode_bytes(
        progressive_jpeg(img, extra)
    )  # exactly MAX_JPEG_SCANS scans: a legal file
    assert at_limit.size == (96, 64) and np.allclose(
        at_limit.getpixel((5, 5)), (255, 0, 0) if mode == "RGB" else 76, atol=12
    )
    with pytest.raises(InvalidImageError, match="scans"):
        decode_bytes(progressive_jpeg(img, extra + 1))
    with pytest.raises(InvalidImageError, match="scans"):
        decode_bytes(progressive_jpeg(img, 5000))  # ~0.5 MB: a 6000x6600 one decodes for minutes


def test_scan_count_walks_segments_and_is_not_fooled_by_marker_bytes():
    from image_search.images import MAX_JPEG_SCANS

    rng = np.random.default_rng(3)
    noisy = Image.fromarray(
        rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    )  # entropy data full of 0xFF00
    exif = Image.Exif()
    exif[0x927C] = b"\xff\xda" * 300  # MakerNote: 300 SOS-looking byte pairs in the APP1 segment
    fooling = dict(
        comment=b"\xff\xda\x00\x08" * 1000, exif=exif, restart_marker_blocks=1
    )  # RSTn markers too
    data = progressive_jpeg(noisy, MAX_JPEG_SCANS - 10, **fooling)
    assert data.count(b"\xff\xda") >= 1300 + MAX_JPEG_SCANS  # a naive byte search would refuse this
    assert decode_bytes(data).size == (80, 64)
    baseline = encode(noisy, "JPEG", **fooling)
    assert decode_bytes(baseline).size == (80, 64)


def test_garbage_between_segments_does_not_hide_scans():
    # libjpeg skips stray bytes before a marker (with a warning) and decodes on: so must the count.
    data = progressive_jpeg(halves(), 200)
    sos = data.find(b"\xff\xda")
    with pytest.raises(InvalidImageError, match="scans"):
        decode_bytes(data[:sos] + b"\x00\x17garbage" + data[sos:])


def test_a_flood_of_empty_marker_segments_is_refused():
    # Pillow walks the segments before the first scan in Python: 2 million empty comments took
    # 2.8 s.
    data = encode(halves(), "JPEG")
    with pytest.raises(InvalidImageError, match="marker segments"):
        decode_bytes(data[:2] + b"\xff\xfe\x00\x02" * 2_000_000 + data[2:])
    assert decode_bytes(data[:2] + b"\xff\xfe\x00\x02" * 100 + data[2:]).size == (40, 20)


def test_cli_reports_the_real_decode_time(tmp_path, monkeypatch, capsys):
    import json

    import image_search.images as images
    from image_search.__main__ import main

    index = tmp_path / "hist.index"
    assert main(["index", "--encoder", "colour-histogram", "--out", str(index)]) == 0
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(halves(), "PNG"))
    calls, real = [], images.decode_bytes

    def slow_decode(data):  # a decode that takes at least 300 ms
        calls.append(len(data))
        time.sleep(0.3)
        return real(data)

    monkeypatch.setattr(images, "decode_bytes", slow_decode)
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                str(photo),
                "--json",
                "-k",
                "2",
                "--encoder",
                "colour-histogram",
                "--index",
                str(index),
            ]
        )
        == 0
    )
    timings = json.loads(capsys.readouterr().out)["timings_ms"]
    assert len(calls) == 1  # decoded once
    assert timings["decode"] >= 300
    assert timings["total"] == pytest.approx(
        timings["decode"] + timings["embed"] + timings["ann"] + timings["rerank"]
    )


# -------------------------------------------------------------- arrays without temporaries (item 7)
def test_oversized_arrays_are_refused_before_conversion():
    import tracemalloc

    from image_search.images import MAX_ARRAY_BYTES

    huge = np.broadcast_to(
        np.float64(0.5), (6000, 6666, 4)
    )  # 1.28 GB as float64, under the pixel limit
    assert huge.shape[0] * huge.shape[1] <= MAX_PIXELS and huge.nbytes > MAX_ARRAY_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImageError, match="MB"):
            load_image(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # refused from the shape alone
    assert load_image(np.broadcast_to(np.float32(0.5), (3000, 2000, 3))).getpixel((0, 0)) == (
        128,
        128,
        128,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_array_conversion_needs_no_full_size_temporaries(dtype):
    import tracemalloc

    rng = np.random.default_rng(5)
    arr = (
        rng.random((2000, 1500, 3))
        if dtype != np.int64
        else rng.integers(-20, 300, (2000, 1500, 3))
    )
    arr = arr.astype(dtype)
    expected = (
        np.clip(arr.astype(np.float64) * (255.0 if arr.max() <= 1 else 1.0), 0, 255)
        .round()
        .astype(np.uint8)
    )
    tracemalloc.start()
    try:
        img = load_image(arr)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Before: float64 copy, scaled copy, clipped copy, rounded copy (over 3x the float64 size).
    assert peak < arr.size * 8 / 3, (
        f"{peak / 1e6:.0f} MB peak for a {arr.nbytes / 1e6:.0f} MB array"
    )
    assert img.size == (768, 1024)  # downscaled to MAX_SIDE as before
    small = load_image(arr[:500, :400])
    assert np.array_equal(
        np.asarray(small), expected[:500, :400]
    )  # same pixels as the direct formula


def test_float_and_32_bit_pil_images_convert_as_before():
    f = np.array([[0.0, 100.4, 255.0, np.nan], [np.inf, -3.0, 17.5, 254.5]], dtype=np.float32)
    img = load_image(Image.fromarray(f, mode="F"))
    assert [img.getpixel((x, y))[0] for y in range(2) for x in range(4)] == [
        0,
        100,
        255,
        0,
        0,
        0,
        18,
        254,
    ]
    big = Image.fromarray(np.array([[0, 1000, 65535, 70000]], dtype=np.int32), mode="I")
    assert [load_image(big).getpixel((x, 0))[0] for x in range(4)] == [0, 4, 239, 255]


# ------------------------------------------------------------------ decoder warnings (item 11a)
def exif_flood_png(tags: int = 60_000) -> bytes:
    """A valid PNG whose EXIF block declares ``tags`` tags of 4 KB each: Pillow warns once per tag
    ("Tag data larger than file"), which printed 116,398 stderr lines on a search that succeeded."""
    ifd = b"".join(struct.pack(">HHII", 1000 + i, 4, 1000, 8) for i in range(tags))
    exif = b"MM\x00*" + struct.pack(">IH", 8, tags) + ifd + b"\x00\x00\x00\x00"
    return encode(halves(), "PNG", exif=exif)


def test_exif_warning_flood_never_reaches_stderr(tmp_path):
    path = tmp_path / "flood.png"
    path.write_bytes(exif_flood_png())
    code = f"""
from image_search import load_image
img = load_image(r"{path}")
img = load_image(img)  # the encoders call load_image again on the decoded image
print(img.size, img.getpixel((0, 0)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(40, 20) (255, 0, 0)"
    assert len(out.stderr.splitlines()) <= 2, out.stderr[:2000]


def test_no_decoder_warning_escapes_a_decode():
    import warnings

    pal_t = halves().convert("P")
    uploads = [exif_flood_png(2000), encode(pal_t, "PNG", transparency=b"\x00" * 3)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for data in uploads:
            assert decode_bytes(data).size == (40, 20)
        load_image(
            Image.open(io.BytesIO(uploads[0]))
        )  # a lazily opened PIL image: EXIF parsed in load_image
        filters_inside = list(warnings.filters)
    assert [str(w.message)[:80] for w in caught] == []
    assert filters_inside[0][0] == "always"  # the silencing window was closed again


def test_decoders_run_in_parallel_and_stay_silent_under_threads():
    import threading
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from image_search import images

    # A decoder inside the silencing window does not stop another from finishing a decode.
    inside, release = threading.Event(), threading.Event()

    def hold():
        with images._pil_warnings_silenced():
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(decode_bytes, encode(halves(), "PNG")).result(timeout=10).size == (
                40,
                20,
            )
    finally:
        release.set()
        holder.join()

    flood, photo = exif_flood_png(3000), encode(halves(), "JPEG")
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(8) as pool:
            sizes = list(
                pool.map(lambda i: decode_bytes(flood if i % 2 else photo).size, range(48))
            )
    assert sizes == [(40, 20)] * 48
    assert [str(w.message)[:80] for w in caught] == []
    assert warnings.filters == before and images._quiet_users == 0


# ------------------------------------------------------------- what a bad path really is (item 11c)
def test_paths_that_are_not_regular_files_say_what_they_are(tmp_path, monkeypatch):
    import os
    import socket

    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(halves(), "PNG"))
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.jpg"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    links = {
        name: tmp_path / f"{name}.jpg"
        for name in ("loop_a", "loop_b", "dangling", "to_fifo", "to_dir", "to_photo")
    }
    links["loop_a"].symlink_to(links["loop_b"])
    links["loop_b"].symlink_to(links["loop_a"])
    links["dangling"].symlink_to(tmp_path / "gone.jpg")
    links["to_fifo"].symlink_to(fifo)
    links["to_dir"].symlink_to(tmp_path)
    links["to_photo"].symlink_to(photo)
    cases = {
        tmp_path: "is a directory",
        fifo: "is a FIFO",
        links["to_fifo"]: "is a FIFO",
        links["to_dir"]: "is a directory",
        sock_path: "is a socket",
        "/dev/null": "is a character device",
        links["loop_a"]: "symlink loop",
        links["dangling"]: "broken symlink",
        tmp_path / "missing.jpg": "no such file",
        photo / "child.jpg": "not a directory",
        tmp_path / ("x" * 300 + ".jpg"): "name too long",
        "x" * 5000: "name too long",
        "a\0b.jpg": "NUL byte",
    }
    opened = []
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda path, *a, **kw: (opened.append(str(path)), real_open(path, *a, **kw))[1]
    )
    try:
        for path, reason in cases.items():
            with pytest.raises(InvalidImageError, match=reason) as e:
                load_image(path)
            assert len(str(e.value).splitlines()) == 1 and len(str(e.value)) < 400, str(e.value)
        assert opened == []  # stat first: a FIFO, device or socket is never opened
        assert load_image(links["to_photo"]).size == (40, 20)  # a symlink to a photo is fine
    finally:
        sock.close()
    with pytest.raises(InvalidImageError) as e:
        load_image(tmp_path / "new\nline.jpg")
    assert len(str(e.value).splitlines()) == 1


def test_cli_names_what_a_bad_path_is(tmp_path, capsys):
    import os

    from image_search.__main__ import main

    os.mkfifo(tmp_path / "pipe.jpg")
    for path, reason in [
        (tmp_path / "pipe.jpg", "is a FIFO"),
        (tmp_path, "is a directory"),
        (tmp_path / "nope.jpg", "no such file"),
    ]:
        assert (
            main(
                [
                    "search",
                    str(path),
                    "--encoder",
                    "colour-histogram",
                    "--index",
                    str(tmp_path / "x.index"),
                ]
            )
            == 1
        )
        err = capsys.readouterr().err
        assert reason in err and len(err.strip().splitlines()) == 1, err
