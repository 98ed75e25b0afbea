"""Decoding whatever a shopper uploads into a clean RGB image (chapter 02)."""
from __future__ import annotations

import io
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
ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}


def load_image(image: ImageLike) -> Image.Image:
    """Decode a path, bytes, PIL image or HxWx3/HxW uint8 array into an RGB PIL image.

    EXIF orientation is applied, transparency is composited on white, grayscale, palette,
    CMYK and 16-bit images are converted, animated images give their first frame, and huge
    images are downscaled. Anything else raises :class:`InvalidImageError`. Chapter 02.
    """
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InvalidImageError(f"no such image file: {path}")
        if path.stat().st_size > MAX_BYTES:
            raise InvalidImageError(f"image file is larger than {MAX_BYTES // 2**20} MB: {path}")
        data = path.read_bytes()
    else:
        raise InvalidImageError(f"cannot read an image from a {type(image).__name__}")
    return decode_bytes(data)


def decode_bytes(data: bytes) -> Image.Image:
    """Decode encoded image bytes with the checks of :func:`load_image`."""
    if not data:
        raise InvalidImageError("empty image (0 bytes)")
    if len(data) > MAX_BYTES:
        raise InvalidImageError(f"image is larger than {MAX_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ALLOWED_FORMATS:
                raise InvalidImageError(f"unsupported image format: {img.format}")
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise InvalidImageError(f"image of {w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit")
            if max(w, h) > 2 * MAX_SIDE and img.format == "JPEG":
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode huge JPEGs at reduced size
            img.load()
    except InvalidImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImageError(f"not a readable image: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidImageError(f"corrupt or truncated image: {e}") from None
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.width < 1 or img.height < 1:
        raise InvalidImageError(f"image has no pixels ({img.width}x{img.height})")
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((arr / hi * 255).round().astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        white.alpha_composite(img)
        img = white
    img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BICUBIC)
    return img


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] in (3, 4) or arr.ndim == 2:
        if arr.size == 0:
            raise InvalidImageError(f"image array is empty: shape {arr.shape}")
        if arr.dtype != np.uint8:
            if not np.isfinite(arr).all():
                raise InvalidImageError("image array holds NaN or inf")
            scale = 255.0 if arr.max() <= 1.0 else 1.0
            arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
        return _to_rgb(Image.fromarray(np.ascontiguousarray(arr)))
    raise InvalidImageError(f"image array must be HxW, HxWx3 or HxWx4, not shape {arr.shape}")
