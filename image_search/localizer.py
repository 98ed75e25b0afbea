"""Find the product in a shopper's photo before embedding it: object localisers, boxes and the
encoder that crops each image to its best box. Chapter 05.

A localiser turns an image into a heat map of "where the object is" and the map into scored
candidate boxes. Two are here, both on EfficientNet-Lite0's own feature maps:

* ``trained``: a small convolutional head on Lite0's stride-16 block, trained on the **train**
  products' customer photos against their rendered masks (free labels; ``make models`` retrains
  it, ``data/models/`` ships it). It runs at 160 px on Lite0's first blocks only: a query costs
  about 1.25x a plain embedding (``benchmarks/eval_retrieval.py`` measures it).
* ``scda``: the unsupervised baseline of Wei et al., "Selective Convolutional Descriptor Aggregation
  for Fine-Grained Image Retrieval" (IEEE TIP 2017, arXiv:1604.04994): sum the last convolutional
  map over its channels, keep the cells above the map's mean, take the connected components.

:class:`LocalizedEncoder` crops every image to its localiser's best box (a square with a margin)
and embeds the crop with a base encoder; it implements the :class:`~image_search.encoders.Encoder`
protocol, so its embeddings are cached and searched like any other encoder's.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from .encoders import (
    DEFAULT_ENCODER,
    Encoder,
    _onnx_session,
    load_encoder,
    make_fingerprint,
    register_encoder,
    torch_threads,
    weights_digest,
)
from .errors import InvalidRequestError, ModelUnavailableError
from .images import ImageLike, load_image

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models" / "product-search"
MANIFEST = "training.json"
PIPELINE = "product-search"
QUERY_ENCODER = f"{DEFAULT_ENCODER}-query"  # Lite0 with the fine-tuned query top
LOCALIZER_BLOCKS = 5  # Lite0's stem and blocks 0-4: 112 channels at stride 16
SCDA_SIZE = 224


# --------------------------------------------------------------------------- boxes
@dataclass(frozen=True)
class Box:
    """A box in pixels of the decoded image, ``right`` and ``bottom`` exclusive, with the
    localiser's ``score`` (the share of the heat map's mass inside it). Chapter 05."""

    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.left < self.right and 0 <= self.top < self.bottom):
            raise InvalidRequestError(
                f"not a box: ({self.left}, {self.top}, {self.right}, {self.bottom})"
            )

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)``: what ``Image.crop`` and ``Searcher.search(crop=...)``
        take."""
        return self.left, self.top, self.right, self.bottom

    def iou(self, other: "Box | Sequence[int]") -> float:
        """Intersection over union with another box (or a ``(left, top, right, bottom)`` tuple)."""
        return box_iou(
            self.as_tuple(), other.as_tuple() if isinstance(other, Box) else tuple(other)
        )

    def square(self, width: int, height: int, margin: float) -> "Box":
        """The square crop around this box: side ``max(w, h) * (1 + 2 * margin)`` (at most the
        image's shorter side), centred on the box and shifted to lie inside the ``width`` x
        ``height`` image. Square, because encoders resize the shorter side and centre-crop."""
        side = min(max(self.width, self.height) * (1 + 2 * margin), width, height)
        cx, cy = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        left = int(round(min(max(cx - side / 2, 0), width - side)))
        top = int(round(min(max(cy - side / 2, 0), height - side)))
        s = max(1, int(round(side)))
        return Box(left, top, min(left + s, width), min(top + s, height), self.score)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes (0 when disjoint)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_box(mask: np.ndarray) -> Box | None:
    """The bounding box of a boolean mask's true pixels (``None`` when it has none)."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(xs) == 0:
        return None
    return Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def heatmap_boxes(
    heat: np.ndarray, threshold: float, max_boxes: int = 5, min_area: float = 0.01
) -> list[Box]:
    """Candidate boxes of a heat map over an image (``(height, width)``, one value per pixel): the
    bounding boxes of the connected regions above ``threshold`` that cover at least ``min_area``
    of the image, largest heat mass first, each scored by its share of the candidates' mass.
    Chapter 05."""
    from scipy import ndimage

    heat = np.asarray(heat, dtype=np.float32)
    labels, n = ndimage.label(heat > threshold)
    if n == 0:
        return []
    flat = labels.ravel()
    mass = np.bincount(flat, weights=heat.ravel(), minlength=n + 1)[1:]
    area = np.bincount(flat, minlength=n + 1)[1:]
    keep = [i for i in np.argsort(-mass, kind="stable") if area[i] >= min_area * heat.size][
        :max_boxes
    ]
    total = float(mass[keep].sum()) or 1.0
    slices = ndimage.find_objects(labels)
    return [
        Box(
            slices[i][1].start,
            slices[i][0].start,
            slices[i][1].stop,
            slices[i][0].stop,
            round(float(mass[i]) / total, 4),
        )
        for i in keep
    ]


# --------------------------------------------------------------------------- localisers
@runtime_checkable
class Localizer(Protocol):
    """Anything that finds objects in images: candidate boxes, best first. Chapter 05."""

    name: str
    fingerprint: str

    def locate(self, image: ImageLike) -> list[Box]: ...

    def locate_batch(
        self, images: Sequence[ImageLike], batch_size: int = 32
    ) -> list[list[Box]]: ...


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image scaled to fit a ``size`` x ``size`` square (aspect kept, placed top-left, the rest
    mid-grey) and normalised like Lite0's inputs: ``(3, size, size)`` float32, and the scaled
    image's ``(width, height)``."""
    scale = size / max(image.size)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas = np.zeros((3, size, size), dtype=np.float32)
    pixels = np.asarray(image.resize((w, h), Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    canvas[:, :h, :w] = pixels.transpose(2, 0, 1)
    return canvas, (w, h)


@dataclass
class MapNet:
    """A network from a letterboxed ``size`` x ``size`` image to a feature or heat map
    ``(n, channels, size / stride, size / stride)``, run by ONNX Runtime when available (like the
    encoders), else by PyTorch."""

    name: str
    net: object = field(repr=False)  # a torch module
    size: int
    threads: int | None = None
    onnx: object | None = field(default=None, repr=False)
    digest: str = ""

    def __call__(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The maps of decoded images, and each image's ``(width, height)`` in the letterbox."""
        boxed = [letterbox(im, self.size) for im in images]
        return self.run(np.stack([b for b, _ in boxed])), [s for _, s in boxed]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The maps of a normalised ``(n, 3, size, size)`` float32 batch."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.onnx is not None:
            return self.onnx.run(None, {"x": batch})[0]
        import torch

        with torch_threads(self.threads), torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return self.net(x).float().numpy()


def map_net(name: str, net, size: int, threads: int | None = None) -> MapNet:
    """Wrap a torch module as a :class:`MapNet` (exported to ONNX once, cached by its weights)."""
    import torch

    net = net.eval().to(memory_format=torch.channels_last)
    digest = weights_digest(net)
    return MapNet(name, net, size, threads, _onnx_session(net, name, size, threads, digest), digest)


@dataclass
class HeatmapLocalizer:
    """A localiser made of a :class:`MapNet` that outputs a one-channel heat map and a threshold on
    it (``None``: the map's own mean, as SCDA does). Two products side by side can merge into one
    region at the threshold: the regions found at each higher ``split_thresholds`` value that do
    not overlap (IoU < 0.5) a box already found are added as further candidates, after the
    threshold's own. Chapter 05."""

    name: str
    net: MapNet
    threshold: float | None
    max_boxes: int = 5
    split_thresholds: tuple[float, ...] = ()

    @property
    def fingerprint(self) -> str:
        return make_fingerprint(
            {
                "localizer": self.name,
                "weights": self.net.digest,
                "size": self.net.size,
                "threshold": self.threshold,
                "max_boxes": self.max_boxes,
                "split_thresholds": list(self.split_thresholds),
            }
        )

    def boxes(self, heat: np.ndarray) -> list[Box]:
        """Candidate boxes of one heat map (at the image's size), best first."""
        threshold = float(heat.mean()) if self.threshold is None else self.threshold
        found = heatmap_boxes(heat, threshold, self.max_boxes)
        for t in self.split_thresholds:
            found += [
                b
                for b in heatmap_boxes(heat, t, self.max_boxes)
                if all(b.iou(f) < 0.5 for f in found)
            ]
        return found[: self.max_boxes]

    def heatmaps(self, images: Sequence[ImageLike], batch_size: int = 32) -> list[np.ndarray]:
        """Each image's heat map at the image's own size, ``(height, width)`` float32."""
        out, size = [], self.net.size
        for s in range(0, len(images), batch_size):
            decoded = [load_image(im) for im in images[s : s + batch_size]]
            maps, sizes = self.net(decoded)
            for im, (w, h), m in zip(decoded, sizes, maps[:, 0]):
                full = Image.fromarray(m.astype(np.float32), mode="F").resize(
                    (size, size), Image.BILINEAR
                )
                out.append(np.asarray(full.crop((0, 0, w, h)).resize(im.size, Image.BILINEAR)))
        return out

    def locate_batch(self, images: Sequence[ImageLike], batch_size: int = 32) -> list[list[Box]]:
        """Candidate boxes of each image, best first (empty when nothing stands out)."""
        return [self.boxes(heat) for heat in self.heatmaps(images, batch_size)]

    def locate(self, image: ImageLike) -> list[Box]:
        """Candidate boxes of one image, best first."""
        return self.locate_batch([image])[0]


@functools.lru_cache(maxsize=1)
def _lite0_model():
    """EfficientNet-Lite0's (ImageNet) PyTorch model, loaded once; callers copy what they use."""
    return load_encoder(DEFAULT_ENCODER).model


def _trunk(blocks: int | None):
    """Lite0's (ImageNet) stem and first ``blocks`` blocks, or with ``None`` the whole trunk up to
    its last 1280-channel convolution; a copy, so the encoder's own model is left alone."""
    import torch

    model = _lite0_model()
    layers = [model.conv_stem, model.bn1, *model.blocks[:blocks]]
    if blocks is None:
        layers += [model.conv_head, model.bn2]
    return copy.deepcopy(torch.nn.Sequential(*layers)).eval()


def scda_localizer(size: int = SCDA_SIZE, threads: int | None = None) -> HeatmapLocalizer:
    """SCDA (Wei et al. 2017): the channel sum of Lite0's last convolutional map (a 1x1 convolution
    with all-one weights), thresholded at its mean. Needs no training. Chapter 05."""
    import torch

    trunk = _trunk(None)
    total = torch.nn.Conv2d(trunk[-1].num_features, 1, 1, bias=False)
    torch.nn.init.ones_(total.weight)
    return HeatmapLocalizer(
        "scda", map_net("localizer-scda", torch.nn.Sequential(*trunk, total), size, threads), None
    )


def localizer_head(hidden: int = 32, channels: int = 112):
    """The trained localiser's head: a 1x1 convolution to ``hidden`` channels, ReLU, a 3x3
    convolution to one objectness logit per cell. Chapter 06 trains it."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, hidden, 1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(hidden, 1, 3, padding=1),
    )


def localizer_trunk(size: int, threads: int | None = None) -> MapNet:
    """The frozen trunk under the trained localiser, Lite0 up to its stride-16 block: 112-channel
    feature maps of letterboxed ``size`` x ``size`` images (what its head is trained on)."""
    return map_net("localizer-trunk", _trunk(LOCALIZER_BLOCKS), size, threads)


SPLIT_THRESHOLDS = (0.5, 0.7)


def trained_localizer(
    head, size: int, threshold: float, threads: int | None = None
) -> HeatmapLocalizer:
    """A localiser from a trained head (as made by :func:`localizer_head`) on Lite0's frozen trunk:
    the heat map is the objectness probability; regions that merge at ``threshold`` are also split
    at the probabilities in ``SPLIT_THRESHOLDS``. Chapter 06."""
    import torch

    net = torch.nn.Sequential(*_trunk(LOCALIZER_BLOCKS), *copy.deepcopy(head), torch.nn.Sigmoid())
    return HeatmapLocalizer(
        "trained",
        map_net("localizer-trained", net, size, threads),
        threshold,
        split_thresholds=tuple(t for t in SPLIT_THRESHOLDS if t > threshold),
    )


# --------------------------------------------------------------------------- shipped models
def models_manifest(folder: Path = MODELS_DIR) -> dict:
    """``training.json`` of the shipped models (``data/models/product-search``): for each model its
    file, SHA-256, configuration, the products it was trained on and how long training took
    (written by ``make models``)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelUnavailableError(f"no shipped models: {path} is missing (run `make models`)")
    return json.loads(path.read_text())


def shipped_tensors(name: str, folder: Path = MODELS_DIR) -> tuple[dict, dict]:
    """The tensors of shipped model ``name`` (``"localizer"``), checked against
    the SHA-256 in the manifest, and its manifest entry."""
    from safetensors.torch import load

    entry = models_manifest(folder).get("models", {}).get(name)
    if entry is None:
        raise ModelUnavailableError(
            f"no shipped model {name!r} in {folder / MANIFEST} (run `make models`)"
        )
    path = folder / entry["file"]
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ModelUnavailableError(
            f"{path} is missing or does not match its SHA-256 in {MANIFEST} (run `make models`)"
        )
    return load(data), entry


def load_localizer(
    name: str = "trained", threads: int | None = None, folder: Path = MODELS_DIR
) -> HeatmapLocalizer:
    """``"trained"``: the shipped trained localiser; ``"scda"``: the unsupervised SCDA baseline.
    Chapter 05."""
    if name == "scda":
        return scda_localizer(threads=threads)
    if name != "trained":
        raise InvalidRequestError(f"unknown localiser {name!r}; choose 'trained' or 'scda'")
    tensors, entry = shipped_tensors("localizer", folder)
    head = localizer_head(entry["config"]["hidden"])
    head.load_state_dict(tensors)
    return trained_localizer(head, entry["config"]["size"], entry["threshold"], threads)


# --------------------------------------------------------------------------- crop, then embed
@dataclass
class LocalizedEncoder:
    """An encoder that crops each image to its localiser's best box, squared and widened by
    ``margin`` on each side (the whole image when nothing is found), then embeds the crop with
    ``base``. Its fingerprint names the base encoder, the localiser's weights and the margin, so
    its embeddings are cached apart. ``catalog_encoder`` embeds the index's shop photos when that
    is not ``base``: a query tower fine-tuned into a frozen catalog's space (chapter 06).
    Chapter 05."""

    base: Encoder
    localizer: Localizer
    margin: float = 0.1
    name: str = ""
    catalog_encoder: Encoder | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 1:
            raise InvalidRequestError(f"margin must be between 0 and 1, not {self.margin!r}")
        self.name = self.name or f"{self.base.name}+{self.localizer.name}-crop"

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def fingerprint(self) -> str:
        return make_fingerprint(
            {
                "base": self.base.fingerprint,
                "localizer": self.localizer.fingerprint,
                "margin": self.margin,
            }
        )

    def candidate_boxes(self, images: Sequence[ImageLike], batch_size: int = 32) -> list[list[Box]]:
        """Every square crop the localiser proposes for each image, best first (two products
        side by side give two): the first is the one embedded, the others are offered to the
        shopper. The full frame, score 0, when the localiser finds nothing. Chapter 05."""
        decoded = [load_image(im) for im in images]
        return [
            [b.square(im.width, im.height, self.margin) for b in boxes]
            or [Box(0, 0, im.width, im.height, 0.0)]
            for im, boxes in zip(decoded, self.localizer.locate_batch(decoded, batch_size))
        ]

    def crop_boxes(self, images: Sequence[ImageLike], batch_size: int = 32) -> list[Box]:
        """The square crop each image is embedded from (the full frame, score 0, when the
        localiser finds nothing)."""
        return [boxes[0] for boxes in self.candidate_boxes(images, batch_size)]

    def encode_located(
        self,
        images: Sequence[ImageLike],
        locate: Sequence[bool] | None = None,
        batch_size: int = 32,
    ) -> tuple[np.ndarray, list[list[Box]]]:
        """Embeddings ``(n, dim)`` of each image's best box, and every box proposed for it, best
        first (what the searcher reports: where it looked, and the other products it found).
        An image whose ``locate`` is false is embedded whole and gets no boxes: its caller
        cropped it already. One base-encoder call per batch either way. Chapter 05."""
        locate = [True] * len(images) if locate is None else list(locate)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        found: list[list[Box]] = []
        for s in range(0, len(images), batch_size):
            decoded = [load_image(im) for im in images[s : s + batch_size]]
            wanted = locate[s : s + batch_size]
            todo = [im for im, loc in zip(decoded, wanted) if loc]
            proposed = iter(self.candidate_boxes(todo, batch_size) if todo else [])
            chunk = [next(proposed) if loc else [] for loc in wanted]
            out[s : s + len(decoded)] = self.base.encode_images(
                [im.crop(c[0].as_tuple()) if c else im for im, c in zip(decoded, chunk)],
                batch_size=batch_size,
            )
            found += chunk
        return out, found

    def encode_with_boxes(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> tuple[np.ndarray, list[Box]]:
        """Embeddings ``(n, dim)`` of the crops, and the box each came from."""
        vectors, found = self.encode_located(images, batch_size=batch_size)
        return vectors, [boxes[0] for boxes in found]

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        return self.encode_with_boxes(images, batch_size, progress)[0]


def load_product_search(
    threads: int | None = None, folder: Path = MODELS_DIR
) -> "LocalizedEncoder":
    """The book's best pipeline, built from the shipped weights (offline, in seconds): the trained
    localiser finds the product and its square crop (with the shipped margin) is embedded by
    EfficientNet-Lite0 with its fine-tuned query top (chapter 06), into the space of the
    catalog's frozen EfficientNet-Lite0 vectors. ``load_encoder("product-search")`` returns it.
    Chapter 09."""
    from .encoders import with_weights

    manifest = models_manifest(folder)
    catalog = load_encoder(DEFAULT_ENCODER, threads)
    query = catalog
    if "query_top" in manifest.get("models", {}):
        query = with_weights(catalog, shipped_tensors("query_top", folder)[0], QUERY_ENCODER)
    return LocalizedEncoder(
        query,
        load_localizer("trained", threads, folder),
        manifest["margin"],
        name=PIPELINE,
        catalog_encoder=catalog,
    )


register_encoder(PIPELINE, lambda name, threads: load_product_search(threads))


__all__ = [
    "Box",
    "box_iou",
    "mask_box",
    "heatmap_boxes",
    "Localizer",
    "MapNet",
    "map_net",
    "HeatmapLocalizer",
    "letterbox",
    "scda_localizer",
    "localizer_head",
    "localizer_trunk",
    "trained_localizer",
    "models_manifest",
    "shipped_tensors",
    "load_localizer",
    "LocalizedEncoder",
    "load_product_search",
    "MODELS_DIR",
    "PIPELINE",
    "QUERY_ENCODER",
]
