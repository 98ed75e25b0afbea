"""Image corruptions that mimic what goes wrong with shoppers' photos. Chapter 10 measures
how recall falls as each gets stronger.

Every corruption takes a ``strength`` in ``[0, 1]`` (0 = the image unchanged) and a ``seed``, so
the same call always gives the same pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .images import ImageLike, load_image

KINDS = ("crop", "rotation", "blur", "occlusion", "lighting", "clutter")


def corrupt(image: ImageLike, kind: str, strength: float, seed: int = 0) -> Image.Image:
    """Return a corrupted RGB copy of ``image`` (same size). Chapter 10.

    * ``crop``: keep a random window of ``1 - 0.8 * strength`` of each side, resized back
      (the product is cut off, as when a shopper frames it too tightly).
    * ``rotation``: rotate by ``± 90° * strength``, corners filled white.
    * ``blur``: Gaussian blur of radius ``6 px * strength`` at 128 px (scaled with the image).
    * ``occlusion``: a random grey box covering ``0.6 * strength`` of the area (a hand, a cushion).
    * ``lighting``: darker, lower contrast and a warm colour cast (indoor light at night).
    * ``clutter``: the product shrunk to ``1 - 0.6 * strength`` of the frame on a random
      textured background (a room instead of a white studio backdrop).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {KINDS}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], not {strength}")
    im = load_image(image).convert("RGB")
    if strength == 0:
        return im.copy()
    rng = np.random.default_rng(seed)
    return _CORRUPTIONS[kind](im, float(strength), rng)


def _crop(im: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    keep = 1.0 - 0.8 * s
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC)


def _rotation(im: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    angle = 90.0 * s * (1 if rng.random() < 0.5 else -1)
    return im.rotate(angle, resample=Image.BICUBIC, fillcolor=(255, 255, 255))


def _blur(im: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius=6.0 * s * max(im.size) / 128))


def _occlusion(im: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    area = 0.6 * s * w * h
    aspect = float(rng.uniform(0.5, 2.0))
    bw = int(min(w, round(np.sqrt(area * aspect))))
    bh = int(min(h, round(area / max(bw, 1))))
    x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    out = np.array(im)
    out[y : y + bh, x : x + bw] = int(rng.integers(90, 170))
    return Image.fromarray(out)


def _lighting(im: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    out = ImageEnhance.Brightness(im).enhance(1.0 - 0.7 * s)
    out = ImageEnhance.Contrast(out).enhance(1.0 - 0.5 * s)
    cast = np.array([1.0, 1.0 - 0.25 * s, 1.0 - 0.5 * s], dtype=np.float32)  # warm: less blue
    return Image.fromarray(
        np.clip(np.asarray(out, dtype=np.float32) * cast, 0, 255).astype(np.uint8)
    )


def _clutter(im: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    # a random "room": smooth colour blobs plus noise
    low = rng.uniform(40, 230, size=(4, 4, 3)).astype(np.uint8)
    bg = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.float32)
    bg = np.clip(bg + rng.normal(0, 25, size=bg.shape), 0, 255).astype(np.uint8)
    scale = 1.0 - 0.6 * s
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    product = np.asarray(im.resize((pw, ph), Image.BICUBIC))
    mask = product.min(axis=2) < 240  # the studio backdrop is near-white
    x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    region = bg[y : y + ph, x : x + pw]
    region[mask] = product[mask]
    return Image.fromarray(bg)


_CORRUPTIONS = {
    "crop": _crop,
    "rotation": _rotation,
    "blur": _blur,
    "occlusion": _occlusion,
    "lighting": _lighting,
    "clutter": _clutter,
}


def encode_corrupted(
    encoder, paths, kind: str, strength: float, seed: int = 0, batch_size: int = 32
) -> np.ndarray:
    """Embed corrupted copies of image files (image ``i`` corrupted with seed ``seed + i``),
    caching the vectors under ``<encoder>+corrupt`` keyed by file checksum, kind, strength and
    seed, so re-running an experiment costs nothing. Chapter 10."""
    from .encoders import EmbeddingCache, file_checksum

    keys = [f"{file_checksum(p)}:{kind}:{strength:.4f}:{seed + i}" for i, p in enumerate(paths)]
    return EmbeddingCache.of(encoder, "corrupt").fetch(
        keys,
        lambda missing: encoder.encode_images(
            [corrupt(paths[i], kind, strength, seed + i) for i in missing], batch_size=batch_size
        ),
    )


__all__ = ["KINDS", "corrupt", "encode_corrupted"]
