"""Decoding whatever a shopper uploads into a clean RGB image (chapter 02).

The front door of the system: every image, from the catalog or from a user, goes through
:func:`load_image`. It either returns an RGB ``PIL.Image`` of at most :data:`MAX_SIDE` pixels a
side and at most :data:`MAX_ASPECT` : 1, or raises :class:`~image_search.errors.InvalidImageError`
with a one-line reason; nothing else escapes it.
"""
from __future__ import annotations

import io
import math
import threading
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError

ImageLike = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]

MAX_PIXELS = 40_000_000          # refuse anything larger before decoding (decompression bombs)
MAX_SIDE = 1024                  # legal but huge photos are downscaled to this longest side
MAX_BYTES = 50 * 1024 * 1024     # refuse uploads larger than this
MAX_ASPECT = 4.0                 # longer/shorter side beyond this is padded with white (encoders
                                 # resize the short side: a 1x1024 sliver would become 256x262144)
ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
_DECODERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # only these plugins ever see the bytes
_OPEN_LOCK = threading.Lock()    # warnings.catch_warnings is process-wide: one opener at a time


def load_image(image: ImageLike) -> Image.Image:
    """Decode a path, bytes, PIL image or HxW/HxWx3/HxWx4 array into an RGB PIL image.

    EXIF orientation is applied, transparency is composited on white, grayscale, palette,
    CMYK and 16-bit images are converted, animated images give their first frame, huge
    images are downscaled to :data:`MAX_SIDE`, and extreme aspect ratios are padded with white
    to :data:`MAX_ASPECT`. Anything else raises :class:`InvalidImageError`. Chapter 02.
    """
    if isinstance(image, Image.Image):
        _check_pixels(*image.size)
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

    The header is read first and a decompression bomb (more than :data:`MAX_PIXELS` pixels) is
    refused before a single pixel is decoded; only the JPEG, PNG, WebP, GIF, BMP and TIFF
    decoders are ever tried.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"expected image bytes, not a {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidImageError("empty image (0 bytes)")
    if len(data) > MAX_BYTES:
        raise InvalidImageError(f"image is larger than {MAX_BYTES // 2**20} MB")
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")  # odd tags in untrusted files
            img = Image.open(io.BytesIO(data), formats=_DECODERS)
        if img.format not in ALLOWED_FORMATS:
            raise InvalidImageError(f"unsupported image format: {img.format}")
        w, h = img.size
        _check_pixels(w, h)
        if max(w, h) > 2 * MAX_SIDE and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode huge JPEGs at reduced size
        img.load()
        return _to_rgb(img)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImageError(f"image is too large to decode safely: {e}") from None
    except UnidentifiedImageError:
        raise InvalidImageError(_unidentified(data)) from None
    except Exception as e:  # any decoder failure on untrusted bytes is a bad image, never a crash
        raise InvalidImageError(f"corrupt or truncated image ({type(e).__name__}: {_first_line(e)})") from None


def _read_file(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise InvalidImageError(f"no such image file: {path}")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more than the limit, even if the file grows
    except InvalidImageError:
        raise
    except (OSError, ValueError) as e:
        raise InvalidImageError(f"cannot read image file {path}: {getattr(e, 'strerror', None) or e}") from None
    if len(data) > MAX_BYTES:
        raise InvalidImageError(f"image file is larger than {MAX_BYTES // 2**20} MB: {path}")
    return data


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
        arr = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(arr / 257.0, 0, 255).round().astype(np.uint8))
    elif img.mode in ("I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        hi = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        img = Image.fromarray(np.clip(arr / hi * 255, 0, 255).round().astype(np.uint8))
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    img = img.convert("RGBA" if has_alpha else "RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BICUBIC)
    if has_alpha:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        white.alpha_composite(img)
        img = white.convert("RGB")
    return _pad_aspect(img)


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
    if arr.dtype != np.uint8:
        if not np.isfinite(arr).all():
            raise InvalidImageError("image array holds NaN or inf")
        arr = arr.astype(np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    return _guard(lambda: _to_rgb(Image.fromarray(np.ascontiguousarray(arr))), "cannot convert the image array")
