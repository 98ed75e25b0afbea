"""Decoding whatever a shopper uploads into a clean RGB image (chapter 02).

The front door of the system: every image, from the catalog or from a user, goes through
:func:`load_image`. It either returns an RGB ``PIL.Image`` of at most :data:`MAX_SIDE` pixels a
side and at most :data:`MAX_ASPECT` : 1, or raises :class:`~image_search.errors.InvalidImageError`
with a one-line reason; nothing else escapes it.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError

ImageLike = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]

MAX_PIXELS = 40_000_000  # refuse anything larger before decoding (decompression bombs)
MAX_SIDE = 1024  # legal but huge photos are downscaled to this longest side
MAX_BYTES = 50 * 1024 * 1024  # refuse uploads larger than this
MAX_ASPECT = 4.0  # longer/shorter side beyond this is padded with white (encoders
# resize the short side: a 1x1024 sliver would become 256x262144)
MAX_ARRAY_BYTES = (
    16 * MAX_PIXELS
)  # float32 RGBA at the pixel limit (640 MB); bigger arrays are refused
MAX_JPEG_SCANS = 100  # real encoders write 1 (baseline) to about 20 (progressive) scans; each
# scan is another pass over every coefficient (libtiff's limit is 100 too)
MAX_JPEG_SEGMENTS = (
    1000  # marker segments (tables, metadata, scans) of one JPEG; real files have tens
)
ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
_DECODERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # only these plugins ever see the bytes


def load_image(image: ImageLike) -> Image.Image:
    """Decode a path, bytes, PIL image or HxW/HxWx3/HxWx4 array into an RGB PIL image.

    EXIF orientation is applied, transparency is composited on white, grayscale, palette,
    CMYK and 16-bit images are converted, animated images give their first frame, huge
    images are downscaled to :data:`MAX_SIDE`, and extreme aspect ratios are padded with white
    to :data:`MAX_ASPECT`. Anything else raises :class:`InvalidImageError`. Chapter 02.
    """
    if isinstance(image, Image.Image):
        _check_pixels(*image.size)
        with _pil_warnings_silenced():
            return _guard(lambda: _to_rgb(image), "cannot convert the image")
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, Path)):
        data = _read_file(Path(image))
    else:
        raise InvalidImageError(f"cannot read an image from a {type(image).__name__}")
    return decode_bytes(data)


def decode_bytes(data: bytes) -> Image.Image:
    """Decode encoded image bytes with the checks of :func:`load_image`.

    The header is read first and a decompression bomb (more than :data:`MAX_PIXELS` pixels, or a
    JPEG of more than :data:`MAX_JPEG_SCANS` scans) is refused before a single pixel is decoded;
    only the JPEG, PNG, WebP, GIF, BMP and TIFF decoders are ever tried. Chapter 02.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"expected image bytes, not a {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidImageError("empty image (0 bytes)")
    if len(data) > MAX_BYTES:
        raise InvalidImageError(f"image is larger than {MAX_BYTES // 2**20} MB")
    if data[:3] == b"\xff\xd8\xff":
        _check_jpeg_segments(data)
    try:
        with _pil_warnings_silenced():
            return _decode(data)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImageError(f"image is too large to decode safely: {e}") from None
    except UnidentifiedImageError:
        raise InvalidImageError(_unidentified(data)) from None
    except Exception as e:  # any decoder failure on untrusted bytes is a bad image, never a crash
        raise InvalidImageError(
            f"corrupt or truncated image ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data), formats=_DECODERS)
    if img.format not in ALLOWED_FORMATS:
        raise InvalidImageError(f"unsupported image format: {img.format}")
    w, h = img.size
    _check_pixels(w, h)
    if max(w, h) > 2 * MAX_SIDE and img.format in ("JPEG", "MPO"):
        img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode huge JPEGs at reduced size
    img.load()
    return _to_rgb(img)


# The next marker: a run of 0xFF bytes, then a byte that is neither 0x00 (an escaped 0xFF data byte
# inside a scan) nor 0xD0-0xD7 (a restart marker inside a scan). Bytes before it are skipped, as the
# decoder (libjpeg's next_marker) skips them.
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")


def _check_jpeg_segments(data: bytes) -> None:
    """Refuse a JPEG with more than :data:`MAX_JPEG_SCANS` scans or :data:`MAX_JPEG_SEGMENTS`
    marker segments, by walking its segments without decoding anything.

    Each scan (an SOS segment) of a progressive JPEG is another pass over every coefficient of the
    image, so a small file that repeats one scan a thousand times decodes for minutes. The walk is
    exact, not a byte search: segment lengths are followed, and a scan's entropy-coded data cannot
    hold a marker because its 0xFF bytes are escaped as 0xFF00. It stops at the first EOI (the end
    of the image the decoder reads); damage is left for the decoder to report.
    """
    pos, scans, segments = 2, 0, 0
    while (m := _JPEG_MARKER.search(data, pos)) is not None:
        marker, pos = m[1][0], m.end()
        if marker == 0xD9:  # EOI
            return
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise InvalidImageError(
                f"JPEG with more than {MAX_JPEG_SEGMENTS} marker segments refused "
                f"(real photos have tens)"
            )
        if marker in (0x01, 0xD8):  # TEM, SOI: no length field
            continue
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise InvalidImageError(
                    f"JPEG with more than {MAX_JPEG_SCANS} scans refused: each scan is "
                    f"another pass over the whole image (a decoding-time bomb)"
                )
        pos += int.from_bytes(data[pos : pos + 2], "big")


# Pillow warns about odd tags, bad EXIF blocks or palette quirks in untrusted files; a decode that
# succeeds must not print them (a crafted EXIF block gives one warning per tag, tens of thousands).
# ``warnings.catch_warnings`` swaps process-wide state, so it cannot be entered per thread: one
# shared window is opened by the first decoder to start and closed by the last to finish. Decoders
# run in parallel; the lock is held only to count them.
_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_window: warnings.catch_warnings | None = None


@contextmanager
def _pil_warnings_silenced() -> Iterator[None]:
    """Ignore every warning raised inside Pillow while at least one decode runs (in any thread)."""
    global _quiet_users, _quiet_window
    with _quiet_lock:
        if _quiet_users == 0:
            _quiet_window = warnings.catch_warnings()
            _quiet_window.__enter__()
            warnings.filterwarnings("ignore", module=r"PIL\.")
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0:
                _quiet_window.__exit__(None, None, None)
                _quiet_window = None


_NOT_A_FILE = {
    stat.S_IFDIR: "is a directory",
    stat.S_IFIFO: "is a FIFO (named pipe)",
    stat.S_IFCHR: "is a character device",
    stat.S_IFBLK: "is a block device",
    stat.S_IFSOCK: "is a socket",
}
_OS_ERRORS = {
    errno.ENOENT: "no such file",
    errno.ELOOP: "symlink loop (too many levels of symbolic links)",
    errno.ENAMETOOLONG: "name too long",
    errno.ENOTDIR: "part of the path is not a directory",
    errno.EACCES: "permission denied",
}


def _read_file(path: Path) -> bytes:
    """The bytes of a regular file (symlinks followed), never more than :data:`MAX_BYTES` + 1.

    Anything else is named in the error (directory, FIFO, device, socket, symlink loop, name too
    long, no such file) and never opened: opening a FIFO or a device can block forever.
    """
    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)
        if kind == stat.S_IFREG:
            fd = os.open(
                path,
                os.O_RDONLY
                | os.O_NONBLOCK
                | getattr(os, "O_NOCTTY", 0)
                | getattr(os, "O_BINARY", 0),
            )
            with open(fd, "rb") as f:
                kind = stat.S_IFMT(
                    os.fstat(f.fileno()).st_mode
                )  # the path may have been swapped since
                if kind == stat.S_IFREG:
                    data = f.read(
                        MAX_BYTES + 1
                    )  # never more than the limit, even if the file grows
    except ValueError:
        raise InvalidImageError(
            f"cannot read image {_show(path)}: the path holds a NUL byte"
        ) from None
    except OSError as e:
        reason = _OS_ERRORS.get(e.errno) or e.strerror or type(e).__name__
        if e.errno == errno.ENOENT and os.path.islink(path):
            reason = "broken symlink (its target does not exist)"
        raise InvalidImageError(f"cannot read image {_show(path)}: {reason}") from None
    if kind != stat.S_IFREG:
        raise InvalidImageError(
            f"cannot read image {_show(path)}: {_NOT_A_FILE.get(kind, 'not a regular file')}"
        )
    if len(data) > MAX_BYTES:
        raise InvalidImageError(f"image file is larger than {MAX_BYTES // 2**20} MB: {_show(path)}")
    return data


def _show(path: Path) -> str:
    """A path short enough for a one-line error, control characters escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))
    return text if len(text) <= 160 else f"{text[:100]}…{text[-40:]} ({len(text)} characters)"


def _check_pixels(w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise InvalidImageError(f"image of {w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit")


def _unidentified(data: bytes) -> str:
    head = data[:2048].lstrip().lower()
    if b"<svg" in head:
        return "SVG (vector) images are not supported: upload a JPEG, PNG, WebP, GIF, BMP or TIFF"
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return "this is an HTML/XML text file, not an image"
    return "not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def _guard(fn, what: str) -> Image.Image:
    try:
        return fn()
    except InvalidImageError:
        raise
    except Exception as e:
        raise InvalidImageError(f"{what} ({type(e).__name__}: {_first_line(e)})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.width < 1 or img.height < 1:
        raise InvalidImageError(f"image has no pixels ({img.width}x{img.height})")
    if getattr(img, "is_animated", False):
        img.seek(0)  # animated GIF/WebP/PNG: the first frame
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: keep the pixels as stored rather than refuse the photo
        pass
    if img.mode.startswith("I;16"):
        img = Image.fromarray(_to_uint8(np.asarray(img), divide=257.0))
    elif img.mode in ("I", "F"):
        arr = np.asarray(img)
        top = _finite_max(arr, refuse=False)
        hi = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        img = Image.fromarray(_to_uint8(arr, divide=hi, multiply=255.0))
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    img = img.convert("RGBA" if has_alpha else "RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BICUBIC)
    if has_alpha:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        white.alpha_composite(img)
        img = white.convert("RGB")
    img = _pad_aspect(img)
    img.info.pop(
        "exif", None
    )  # applied above; a copy would be parsed again by every later load_image
    return img


def _pad_aspect(img: Image.Image) -> Image.Image:
    """Pad a very wide or tall image with white, centred, to at most ``MAX_ASPECT`` : 1."""
    w, h = img.size
    if w <= MAX_ASPECT * h and h <= MAX_ASPECT * w:
        return img
    size = (w, math.ceil(w / MAX_ASPECT)) if w > h else (math.ceil(h / MAX_ASPECT), h)
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(img, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


def _from_array(arr: np.ndarray) -> Image.Image:
    if not (arr.ndim == 2 or arr.ndim == 3 and arr.shape[2] in (3, 4)):
        raise InvalidImageError(f"image array must be HxW, HxWx3 or HxWx4, not shape {arr.shape}")
    if arr.size == 0:
        raise InvalidImageError(f"image array is empty: shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise InvalidImageError(f"image array must hold real numbers, not {arr.dtype}")
    _check_pixels(arr.shape[1], arr.shape[0])
    if arr.nbytes > MAX_ARRAY_BYTES:
        raise InvalidImageError(
            f"image array of {arr.nbytes / 1e6:,.0f} MB ({arr.dtype}) is over the "
            f"{MAX_ARRAY_BYTES / 1e6:,.0f} MB limit: pass uint8 or float32 pixels"
        )
    if arr.dtype != np.uint8:
        scale = 255.0 if _finite_max(arr, refuse=True) <= 1.0 else 1.0
        arr = _to_uint8(arr, multiply=scale)
    with _pil_warnings_silenced():
        return _guard(
            lambda: _to_rgb(Image.fromarray(np.ascontiguousarray(arr))),
            "cannot convert the image array",
        )


_CHUNK = 1 << 18  # array elements converted at a time: float64 temporaries stay near 2 MB


def _row_chunks(arr: np.ndarray) -> Iterator[slice]:
    step = max(1, _CHUNK // max(1, arr[0].size))
    return (slice(r, r + step) for r in range(0, len(arr), step))


def _finite_max(arr: np.ndarray, refuse: bool) -> float:
    """The largest value of ``arr``, read in chunks of rows; NaN and inf count as 0, or are
    refused."""
    top = -math.inf
    for rows in _row_chunks(arr):
        block = arr[rows]
        if block.dtype.kind == "f":
            finite = np.isfinite(block)
            if not finite.all():
                if refuse:
                    raise InvalidImageError("image array holds NaN or inf")
                block = np.where(finite, block, 0)
        top = max(top, float(block.max()))
    return top


def _to_uint8(arr: np.ndarray, divide: float = 1.0, multiply: float = 1.0) -> np.ndarray:
    """``clip(round(arr / divide * multiply), 0, 255)`` as uint8, NaN and inf as 0, converted in
    chunks of rows: no full-size float temporaries (a float64 copy of a 40 Mpx RGBA array is 1.3
    GB)."""
    out = np.empty(arr.shape, np.uint8)
    for rows in _row_chunks(arr):
        block = np.nan_to_num(
            arr[rows].astype(np.float64), copy=False, nan=0.0, posinf=0.0, neginf=0.0
        )
        block /= divide
        block *= multiply
        np.clip(block, 0, 255, out=block)
        out[rows] = np.rint(block, out=block)
    return out
