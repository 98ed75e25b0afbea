"""Model development on the catalog: metric-learning projection heads (triplet, InfoNCE) on frozen
image features, and a CLIP-style text tower trained against the locked image tower (LiT).
Chapter 06.

Everything trains on cached EfficientNet-Lite0 features of the **train** products, single-threaded
and seeded, so results reproduce exactly on a CPU. ``load_encoder("lit")`` calls
:func:`load_lit_encoder`, which trains the text tower on first use (about a minute) and caches it as
an open_clip ``local-dir:`` model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .catalog import Catalog, Product, load_catalog
from .encoders import (
    Encoder,
    TorchEncoder,
    encode_paths,
    l2_normalize,
    load_encoder,
    register_encoder,
    weights_digest,
)
from .paths import cache_dir

LIT_BASE_ENCODER = "efficientnet-lite0"
LIT_DIR_NAME = "lit-efficientnet-lite0"
LIT_FORMAT = 1


# --------------------------------------------------------------------------- shared helpers
def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch. Chapter 06."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_torch(threads: int = 1) -> Iterator[None]:
    """Run PyTorch with a fixed thread count and deterministic algorithms, restoring both after.
    One thread makes CPU float sums reproducible whatever the machine's core count."""
    import torch

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def catalog_features(
    catalog: Catalog, encoder: Encoder, ids: Sequence[str] | None = None, progress: bool = False
) -> np.ndarray:
    """Embeddings of each product's shop photo and customer photos: ``(n, 1 + views, dim)``, the
    icon first. Uses the on-disk embedding cache. Chapter 06."""
    ids = list(catalog.ids if ids is None else ids)
    views = [catalog.view_paths(i) for i in ids]
    n_views = {len(v) for v in views}
    if len(n_views) != 1:
        raise ValueError(f"products have different numbers of views: {sorted(n_views)}")
    paths = [p for i, v in zip(ids, views) for p in (catalog.icon_path(i), *v)]
    x = encode_paths(encoder, paths, progress=progress)
    return x.reshape(len(ids), 1 + n_views.pop(), encoder.dim)


# --------------------------------------------------------------------------- metric learning
@dataclass(frozen=True)
class HeadConfig:
    """A projection head trained on frozen features. ``loss`` is ``"infonce"`` (symmetric, in-batch
    negatives, ``temperature``) or ``"triplet"`` (batch-hard mining, ``margin`` on cosine
    distance; ``mining="random"`` takes a random in-batch negative instead of the hardest). Each
    step samples ``batch_products`` products and two of their photos (icon or views). ``hidden`` > 0
    makes a two-layer MLP instead of a linear map. Chapter 06."""

    loss: str = "infonce"
    mining: str = "hard"
    dim: int = 256
    hidden: int = 0
    epochs: int = 80
    batch_products: int = 144
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    margin: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("infonce", "triplet"):
            raise ValueError(f"loss must be 'infonce' or 'triplet', not {self.loss!r}")
        if self.mining not in ("hard", "random"):
            raise ValueError(f"mining must be 'hard' or 'random', not {self.mining!r}")
        if self.dim < 1 or self.epochs < 1 or self.batch_products < 2:
            raise ValueError("dim and epochs must be positive and batch_products at least 2")


@dataclass(frozen=True)
class TrainedHead:
    """A trained projection head: ``project`` maps base embeddings to unit vectors of
    ``config.dim``.
    ``losses`` holds the mean training loss per epoch; ``history`` the ``(epoch, value)`` pairs the
    ``on_epoch`` callback returned."""

    config: HeadConfig
    module: object = field(repr=False)
    losses: tuple[float, ...]
    history: tuple[tuple[int, float], ...] = ()

    def project(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return l2_normalize(
                self.module(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()
            )


def info_nce_loss(anchors, positives, temperature: float):
    """Symmetric InfoNCE over a batch of unit vectors: row i of ``anchors`` should match row i of
    ``positives`` against every other row (in-batch negatives). Chapter 06."""
    import torch
    import torch.nn.functional as F

    logits = anchors @ positives.T / temperature
    target = torch.arange(len(anchors))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def batch_hard_triplet_loss(embeddings, labels, margin: float):
    """Triplet loss with batch-hard mining: for each anchor, its farthest positive and nearest
    negative in the batch (cosine distance on unit vectors). Chapter 06."""
    import torch

    dist = 1 - embeddings @ embeddings.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    hardest_pos = torch.where(same & ~eye, dist, torch.zeros_like(dist)).max(dim=1).values
    hardest_neg = torch.where(same, torch.full_like(dist, 4.0), dist).min(dim=1).values
    return torch.relu(hardest_pos - hardest_neg + margin).mean()


def train_projection_head(
    groups: np.ndarray,
    config: HeadConfig = HeadConfig(),
    on_epoch: Callable[[int, Callable[[np.ndarray], np.ndarray]], float | None] | None = None,
) -> TrainedHead:
    """Train a projection head on frozen features ``groups`` of shape ``(products, photos, dim)``:
    photos of one product are positives, other products negatives. ``on_epoch(epoch, project)``
    may return a validation number to record (``None`` to skip). Deterministic (one thread).
    Chapter 06."""
    import torch
    import torch.nn.functional as F

    groups = np.asarray(groups, dtype=np.float32)
    if groups.ndim != 3 or groups.shape[1] < 2:
        raise ValueError(f"groups must be (products, photos >= 2, dim), not {groups.shape}")
    n, m, d = groups.shape
    c = config
    with deterministic_torch():
        set_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        if c.hidden:
            head = torch.nn.Sequential(
                torch.nn.Linear(d, c.hidden), torch.nn.GELU(), torch.nn.Linear(c.hidden, c.dim)
            )
        else:
            head = torch.nn.Linear(d, c.dim, bias=False)
        opt = torch.optim.AdamW(head.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        x = torch.from_numpy(groups)
        losses, history = [], []

        def project(v: np.ndarray) -> np.ndarray:
            head.eval()
            with torch.no_grad():
                out = F.normalize(
                    head(torch.as_tensor(np.asarray(v, dtype=np.float32))), dim=-1
                ).numpy()
            head.train()
            return out

        for epoch in range(1, c.epochs + 1):
            order, total = rng.permutation(n), 0.0
            for start in range(0, n, c.batch_products):
                b = order[start : start + c.batch_products]
                if len(b) < 2:
                    continue
                first = rng.integers(0, m, len(b))
                second = (
                    first + rng.integers(1, m, len(b))
                ) % m  # a different photo of the same product
                za = F.normalize(head(x[b, first]), dim=-1)
                zp = F.normalize(head(x[b, second]), dim=-1)
                if c.loss == "infonce":
                    loss = info_nce_loss(za, zp, c.temperature)
                elif c.mining == "random":
                    negatives = torch.roll(zp, int(rng.integers(1, len(b))), dims=0)
                    loss = torch.relu((za * negatives).sum(1) - (za * zp).sum(1) + c.margin).mean()
                else:
                    labels = torch.arange(len(b)).repeat(2)
                    loss = batch_hard_triplet_loss(torch.cat([za, zp]), labels, c.margin)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            losses.append(total / n)
            if on_epoch is not None:
                value = on_epoch(epoch, project)
                if value is not None:
                    history.append((epoch, float(value)))
        head.eval()
    return TrainedHead(c, head, tuple(losses), tuple(history))


# --------------------------------------------------------------------------- the object localiser
def validation_split(
    catalog: Catalog, fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """The **train** products split again, seeded, into ``(fit ids, validation ids)``: settings
    (thresholds, margins, epochs) are chosen on the validation part, never on the test products.
    Chapter 06."""
    ids = [p.id for p in catalog.split("train")]
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(fraction * len(ids)))
    val = set(order[:n_val].tolist())
    return [i for k, i in enumerate(ids) if k not in val], [
        i for k, i in enumerate(ids) if k in val
    ]


def assert_no_test_products(catalog: Catalog, product_ids: Sequence[str]) -> None:
    """Refuse to train on a **test** product (their customer photos must stay unseen)."""
    leaked = sorted(i for i in product_ids if catalog[i].split != "train")
    if leaked:
        raise ValueError(f"{len(leaked)} test product(s) in a training set, e.g. {leaked[:3]}")


@dataclass(frozen=True)
class LocalizerConfig:
    """The trained localiser: its head (:func:`~image_search.localizer.localizer_head`) on Lite0's
    frozen stride-16 maps of ``size`` px images, trained with per-cell binary cross-entropy against
    the share of each cell the product's mask covers; every other epoch sees the maps and masks
    mirrored. Chapter 06."""

    size: int = 160
    hidden: int = 32
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 0


def localizer_examples(
    catalog: Catalog,
    product_ids: Sequence[str],
    size: int,
    threads: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The localiser's training examples from the products' customer photos: the frozen trunk's
    maps ``(n, 112, h, w)`` and the targets ``(n, 1, h, w)``, the share of each map cell covered
    by the rendered mask. Chapter 06."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from .images import load_image
    from .localizer import localizer_trunk

    assert_no_test_products(catalog, product_ids)
    trunk = localizer_trunk(size, threads)
    paths = [p for i in product_ids for p in catalog.view_paths(i)]
    maps = []
    for s in tqdm(range(0, len(paths), 64), desc="localiser maps", disable=not progress):
        maps.append(trunk([load_image(p) for p in paths[s : s + 64]])[0])
    features = np.concatenate(maps)
    masks = torch.from_numpy(np.stack([catalog.object_mask(p) for p in paths]).astype(np.float32))
    targets = F.adaptive_avg_pool2d(masks[:, None], features.shape[-2:]).numpy()
    return features, targets


def train_localizer(
    features: np.ndarray, targets: np.ndarray, config: LocalizerConfig = LocalizerConfig()
):
    """Train the localiser's head on :func:`localizer_examples`; returns the head (a torch module)
    with the features' standardisation folded into its first convolution. Deterministic (one
    thread, seeded). Chapter 06."""
    import torch
    import torch.nn.functional as F

    from .localizer import localizer_head

    x, y = (
        torch.from_numpy(np.asarray(features, np.float32)),
        torch.from_numpy(np.asarray(targets, np.float32)),
    )
    if x.ndim != 4 or y.shape != (len(x), 1, *x.shape[-2:]):
        raise ValueError(
            f"features (n, c, h, w) and targets (n, 1, h, w) do not fit: {x.shape}, {y.shape}"
        )
    c = config
    with deterministic_torch():
        set_seed(c.seed)
        mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3)) + 1e-3
        x = (x - mean[:, None, None]) / std[:, None, None]
        head = localizer_head(c.hidden, x.shape[1])
        opt = torch.optim.AdamW(head.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        rng = np.random.default_rng(c.seed)
        for epoch in range(c.epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            for start in range(0, len(x), c.batch_size):
                b = order[start : start + c.batch_size]
                xb, yb = (x[b].flip(-1), y[b].flip(-1)) if epoch % 2 else (x[b], y[b])
                loss = F.binary_cross_entropy_with_logits(head(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():  # fold the standardisation into the first convolution
            first = head[0]
            w = first.weight / std[None, :, None, None]
            first.bias -= (w * mean[None, :, None, None]).sum((1, 2, 3))
            first.weight.copy_(w)
    return head.eval()


def localizer_ious(
    localizer, catalog: Catalog, paths: Sequence[Path], batch_size: int = 32
) -> np.ndarray:
    """IoU of the localiser's best box with the stored box (``boxes.csv``) of each photo; 0 where it
    finds nothing. Chapter 06."""
    found = localizer.locate_batch(list(paths), batch_size)
    return np.array(
        [boxes[0].iou(catalog.object_box(p)) if boxes else 0.0 for p, boxes in zip(paths, found)]
    )


# --------------------------------------------------------------------------- the shipped models
MODELS_FORMAT = 1
LOCALIZER_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)


def build_localizer(
    catalog: Catalog,
    config: LocalizerConfig = LocalizerConfig(),
    threads: int | None = None,
    progress: bool = False,
) -> tuple[object, dict]:
    """Train the localiser for shipping: fit the head on the fit part of the **train** products,
    choose the heat-map threshold with the best mean IoU on the validation part, then refit on every
    train product. Returns the head and its manifest entry (config, threshold, validation IoUs,
    train ids, wall time). Chapter 06."""
    import time

    from .localizer import trained_localizer

    start = time.perf_counter()
    fit, val = validation_split(catalog)
    train_ids = [p.id for p in catalog.split("train")]
    assert_no_test_products(catalog, train_ids)
    features, targets = localizer_examples(catalog, train_ids, config.size, threads, progress)
    row = {pid: k for k, pid in enumerate(train_ids)}
    views = len(catalog.view_paths(train_ids[0]))
    rows = lambda ids: np.array([row[i] * views + v for i in ids for v in range(views)])  # noqa: E731
    head = train_localizer(features[rows(fit)], targets[rows(fit)], config)
    val_paths = [p for i in val for p in catalog.view_paths(i)]
    val_iou = {}
    for t in LOCALIZER_THRESHOLDS:
        val_iou[t] = float(
            localizer_ious(
                trained_localizer(head, config.size, t, threads), catalog, val_paths
            ).mean()
        )
    threshold = max(LOCALIZER_THRESHOLDS, key=lambda t: (val_iou[t], -t))
    head = train_localizer(features, targets, config)
    entry = {
        "config": asdict(config),
        "threshold": threshold,
        "validation_mean_iou": {str(t): round(v, 4) for t, v in val_iou.items()},
        "train_ids": train_ids,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return head, entry


# --------------------------------------------------------------------------- the query tower
@dataclass(frozen=True)
class QueryTowerConfig:
    """Fine-tuning the top of the **query** side: EfficientNet-Lite0's last block, its 1280-channel
    head convolution and norm (batch-norm statistics frozen), so that a shopper's cropped photo
    lands near its product's shop photos in the catalog's **frozen** embedding space. Symmetric
    InfoNCE (``temperature``) of each train crop against the index's own shop-photo vectors,
    one product per batch row (in-batch negatives), the crop mirrored half the time. The number
    of epochs is chosen from ``epochs`` on a validation split of the train products. The catalog
    is never re-embedded. Chapter 06."""

    epochs: tuple[int, ...] = (5, 10, 20)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 64
    temperature: float = 0.05
    seed: int = 0


QUERY_TOP_BLOCK = 6  # the query tower trains Lite0's blocks[6], conv_head and bn2


def query_top(model):
    """A trainable copy of a Lite0 model's top: its last block, head convolution and norm."""
    import copy

    import torch

    b = QUERY_TOP_BLOCK
    return copy.deepcopy(torch.nn.Sequential(model.blocks[b], model.conv_head, model.bn2)).eval()


def query_top_state(top) -> dict:
    """The top's tensors under the Lite0 model's own names (``blocks.6.*``, ``conv_head.*``,
    ``bn2.*``), what ``query_top.safetensors`` holds."""
    prefixes = (f"blocks.{QUERY_TOP_BLOCK}.", "conv_head.", "bn2.")
    return {
        prefixes[int(k.split(".", 1)[0])] + k.split(".", 1)[1]: v.detach().contiguous()
        for k, v in top.state_dict().items()
    }


def top_inputs(images: Sequence, preprocess, progress: bool = False) -> np.ndarray:
    """What the query top sees of decoded images: each preprocessed as Lite0 is
    (``preprocess``), through Lite0's frozen stem and blocks 0-5, 32 at a time:
    ``(n, 192, 7, 7)`` float32. Chapter 06."""
    import torch
    from tqdm.auto import tqdm

    from .localizer import _trunk

    trunk, out = _trunk(QUERY_TOP_BLOCK), []
    with torch.inference_mode():
        for s in tqdm(range(0, len(images), 32), desc="top inputs", disable=not progress):
            batch = np.stack([preprocess(im) for im in images[s : s + 32]])
            out.append(trunk(torch.from_numpy(batch)).numpy())
    return np.concatenate(out)


def crop_trunk_features(search, paths: Sequence[Path], progress: bool = False) -> np.ndarray:
    """The query top's inputs (:func:`top_inputs`) of each photo cropped as ``search`` (a
    localising encoder) crops it, then of the mirrored crops: ``(2, n, 192, 7, 7)`` float32.
    Chapter 06."""
    from PIL import ImageOps

    from .images import load_image

    images = [load_image(p) for p in paths]
    crops = [im.crop(b.as_tuple()) for im, b in zip(images, search.crop_boxes(images))]
    preprocess = search.base.preprocess
    return np.stack(
        [
            top_inputs(crops, preprocess, progress),
            top_inputs([ImageOps.mirror(c) for c in crops], preprocess, progress),
        ]
    )


def query_top_vectors(top, features: np.ndarray) -> np.ndarray:
    """Unit-length embeddings of trunk features ``(n, 192, 7, 7)`` through a query top."""
    import torch

    with torch.inference_mode():
        return np.concatenate(
            [
                l2_normalize(
                    top(torch.from_numpy(np.asarray(features[s : s + 256], np.float32)))
                    .mean((2, 3))
                    .numpy()
                )
                for s in range(0, len(features), 256)
            ]
        )


def train_query_top(
    model,
    features: np.ndarray,
    owners: np.ndarray,
    targets: np.ndarray,
    target_owners: np.ndarray,
    epochs: int,
    config: QueryTowerConfig = QueryTowerConfig(),
):
    """Fine-tune a fresh copy of ``model``'s top (:func:`query_top`) on crop features
    (:func:`crop_trunk_features`, owned by product rows ``owners``) against fixed unit-length
    catalog vectors ``targets`` (owned by ``target_owners``): each batch takes one crop and one
    catalog photo of up to ``batch_size`` products. Deterministic (one thread, seeded).
    Chapter 06."""
    import torch
    import torch.nn.functional as F

    c = config
    products = np.unique(owners)
    crops = {p: np.flatnonzero(owners == p) for p in products}
    shots = {p: np.flatnonzero(target_owners == p) for p in products}
    if any(len(v) == 0 for v in shots.values()):
        raise ValueError("every product with a training crop needs a catalog vector")
    target = torch.from_numpy(np.asarray(targets, np.float32))
    with deterministic_torch():
        set_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        top = query_top(model)
        opt = torch.optim.AdamW(top.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        for _ in range(epochs):
            top.train()
            for m in top.modules():  # batch norm keeps its ImageNet statistics
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
            n_batches = max(1, len(products) // c.batch_size)
            for b in np.array_split(rng.permutation(products), n_batches):
                a = np.array([rng.choice(crops[p]) for p in b])
                flip = (rng.random(len(b)) < 0.5).astype(int)
                x = torch.from_numpy(features[flip, a])
                s = np.array([rng.choice(shots[p]) for p in b])
                z = F.normalize(top(x).mean((2, 3)), dim=1)
                loss = info_nce_loss(z, target[s], c.temperature)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return top.eval()


def build_query_tower(
    catalog: Catalog,
    search,
    config: QueryTowerConfig = QueryTowerConfig(),
    progress: bool = False,
) -> tuple[object, dict]:
    """Train the query tower for shipping: crops of the **train** products' customer photos by
    ``search`` (a localising encoder), targets the index's vectors of every product's shop photos
    by its catalog encoder (frozen Lite0, cached or shipped), which the tower starts from; the
    epochs with the best validation
    Recall@1 (then @10) on a validation fifth of the train products, then a refit on every
    train product. Returns the top and its manifest entry. Chapter 06."""
    import time

    from .features import exact_retrieval
    from .stores import indexed_photos

    start = time.perf_counter()
    train_ids = [p.id for p in catalog.split("train")]
    assert_no_test_products(catalog, train_ids)
    row = {pid: n for n, pid in enumerate(catalog.ids)}
    paths, truth = catalog.queries("train")
    owners = np.array([row[i] for i in truth])
    shop = [(row[i], p) for i in catalog.ids for p in indexed_photos(catalog, i)]
    target_owners = np.array([o for o, _ in shop])
    catalog_encoder = getattr(search, "catalog_encoder", None) or search.base
    targets = encode_paths(catalog_encoder, [p for _, p in shop], progress=progress)
    features = crop_trunk_features(search, paths, progress)
    fit, val = validation_split(catalog)
    on_fit = np.isin(owners, [row[i] for i in fit])
    model = catalog_encoder.model
    val_recall = {}
    for epochs in config.epochs:
        top = train_query_top(
            model, features[:, on_fit], owners[on_fit], targets, target_owners, epochs, config
        )
        q = query_top_vectors(top, features[0, ~on_fit])
        r = exact_retrieval(q, owners[~on_fit], targets, target_owners, ks=(1, 10))[0]
        val_recall[epochs] = (r.recall[1], r.recall[10])
    epochs = max(config.epochs, key=lambda e: (*val_recall[e], -e))
    top = train_query_top(model, features, owners, targets, target_owners, epochs, config)
    entry = {
        "config": asdict(config),
        "epochs": epochs,
        "validation_recall": {str(e): [round(v, 4) for v in r] for e, r in val_recall.items()},
        "train_ids": train_ids,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return top, entry


def write_model(folder: Path, name: str, tensors: dict, entry: dict, **manifest) -> None:
    """Save shipped model ``name`` as ``<name>.safetensors`` and record it, with its SHA-256, in the
    folder's ``training.json`` (other models' entries are kept; ``manifest`` sets top-level
    fields)."""
    from safetensors.torch import save

    from .localizer import MANIFEST

    data = save(tensors)
    (folder / f"{name}.safetensors").write_bytes(data)
    path = folder / MANIFEST
    old = json.loads(path.read_text()) if path.is_file() else {}
    models = {**old.get("models", {})}
    models[name] = {
        "file": f"{name}.safetensors",
        "sha256": hashlib.sha256(data).hexdigest(),
        **entry,
    }
    out = {"format": MODELS_FORMAT, "made_by": "make models", **old, **manifest, "models": models}
    path.write_text(json.dumps(out, indent=1) + "\n")


def build_models(
    folder: str | Path | None = None,
    catalog: Catalog | None = None,
    margin: float = 0.1,
    progress: bool = True,
) -> Path:
    """``make models``: retrain the shipped localiser, then the query tower on its crops (both
    seeded, single-threaded), into ``data/models/product-search`` (safetensors + ``training.json``
    with each file's SHA-256, the train products, the wall times and the pipeline's crop
    ``margin``). Chapter 06."""
    from .localizer import MODELS_DIR, LocalizedEncoder, trained_localizer

    catalog = catalog or load_catalog()
    folder = Path(folder) if folder is not None else MODELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    common = {
        "base_encoder": LIT_BASE_ENCODER,
        "catalog_sha256": _catalog_checksum(catalog),
        "margin": margin,
    }
    head, entry = build_localizer(catalog, progress=progress)
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    write_model(folder, "localizer", tensors, entry, **common)
    base = load_encoder(LIT_BASE_ENCODER)
    localizer = trained_localizer(head, entry["config"]["size"], entry["threshold"])
    search = LocalizedEncoder(base, localizer, margin)
    top, entry = build_query_tower(catalog, search, progress=progress)
    write_model(folder, "query_top", query_top_state(top), entry, **common)
    return folder


# ------------------------------------------------- LiT: a text tower for a locked image tower
@dataclass(frozen=True)
class LitConfig:
    """The text tower (a small open_clip text transformer, random init, open_clip's BPE tokenizer)
    and its training. The image tower is EfficientNet-Lite0, locked, with no projection: text
    vectors live in the same 1280-d space as the book's image embeddings. Chapter 06."""

    width: int = 128
    layers: int = 2
    heads: int = 4
    context_length: int = 24
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.1
    seed: int = 0

    def model_cfg(self, embed_dim: int = 1280) -> dict:
        """The open_clip ``model_cfg`` (as saved in ``open_clip_config.json``)."""
        return {
            "embed_dim": embed_dim,
            "vision_cfg": {
                "timm_model_name": "tf_efficientnet_lite0",
                "timm_model_pretrained": False,
                "timm_pool": "avg",
                "timm_proj": "none",
                "image_size": 224,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.width,
                "heads": self.heads,
                "layers": self.layers,
            },
        }


LIT_PREPROCESS_CFG = {
    "size": 224,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def product_text_fields(p: Product) -> list[str]:
    """The words a shopper might type about a product: colour, name, category, tags (lower case)."""
    return [p.colour, p.name.lower(), p.category.lower(), *(t.lower() for t in p.tags)]


def random_product_text(p: Product, rng: np.random.Generator) -> str:
    """A training caption: half the time the full :attr:`Product.text`, else a random non-empty
    subset of its fields in random order, so single words ("green", "office") get aligned too."""
    if rng.random() < 0.5:
        return p.text
    fields = product_text_fields(p)
    pick = rng.permutation(len(fields))[: rng.integers(1, len(fields) + 1)]
    return ", ".join(fields[i] for i in pick)


@dataclass(frozen=True)
class LitResult:
    """A trained LiT model (an ``open_clip.CLIP``) and its mean loss per epoch."""

    model: object = field(repr=False)
    tokenizer: object = field(repr=False)
    losses: tuple[float, ...]
    config: LitConfig

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return l2_normalize(self.model.encode_text(self.tokenizer(list(texts))).numpy())


def new_lit_model(config: LitConfig = LitConfig()):
    """An open_clip CLIP with EfficientNet-Lite0 ImageNet weights as its (locked) image tower and a
    randomly initialised text tower; returns ``(model, tokenizer)``."""
    import open_clip
    import torch

    torch.manual_seed(config.seed)
    model = open_clip.CLIP(**config.model_cfg())
    trunk = load_encoder(LIT_BASE_ENCODER).model
    model.visual.trunk.load_state_dict(trunk.state_dict())
    model.visual.requires_grad_(False)
    return model.eval(), open_clip.SimpleTokenizer(context_length=config.context_length)


def train_lit(
    products: Sequence[Product],
    image_features: np.ndarray,
    config: LitConfig = LitConfig(),
    on_epoch: Callable[[int, LitResult], None] | None = None,
) -> LitResult:
    """Train the text tower with open_clip's contrastive ``ClipLoss`` against fixed image features
    ``(len(products), photos, 1280)`` (the locked tower's embeddings of each product's photos).
    Each step pairs a random caption of each product with one random photo of it. Chapter 06."""
    import open_clip
    import torch

    feats = np.asarray(image_features, dtype=np.float32)
    if feats.ndim != 3 or len(feats) != len(products):
        raise ValueError(
            f"image_features must be (products={len(products)}, photos, dim), not {feats.shape}"
        )
    with deterministic_torch():
        model, tokenizer = new_lit_model(config)
        set_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model.token_embedding.sparse = (
            True  # only the rows of tokens in a batch get updated: 8x faster steps
        )
        dense = [
            p
            for n, p in model.named_parameters()
            if p.requires_grad and n != "token_embedding.weight"
        ]
        opt = torch.optim.AdamW(dense, lr=config.lr, weight_decay=config.weight_decay)
        opt_emb = torch.optim.SparseAdam([model.token_embedding.weight], lr=config.lr)
        loss_fn = open_clip.ClipLoss()
        x = torch.from_numpy(feats)
        losses = []
        for epoch in range(1, config.epochs + 1):
            model.train()
            order, total = rng.permutation(len(products)), 0.0
            for start in range(0, len(order), config.batch_size):
                b = order[start : start + config.batch_size]
                if len(b) < 2:
                    continue
                tokens = tokenizer([random_product_text(products[i], rng) for i in b])
                images = x[b, rng.integers(0, feats.shape[1], len(b))]
                texts = model.encode_text(tokens, normalize=True)
                loss = loss_fn(images, texts, model.logit_scale.exp())
                opt.zero_grad()
                opt_emb.zero_grad()
                loss.backward()
                opt.step()
                opt_emb.step()
                total += loss.item() * len(b)
            losses.append(total / len(products))
            model.eval()
            if on_epoch is not None:
                on_epoch(epoch, LitResult(model, tokenizer, tuple(losses), config))
        model.token_embedding.sparse = False
    return LitResult(model.eval(), tokenizer, tuple(losses), config)


def lit_dir() -> Path:
    """Where the LiT model is cached: ``cache_dir()/models/lit-efficientnet-lite0``."""
    return cache_dir() / "models" / LIT_DIR_NAME


def _catalog_checksum(catalog: Catalog) -> str:
    return hashlib.sha256((catalog.root / "products.csv").read_bytes()).hexdigest()


def save_lit(result: LitResult, folder: str | Path, catalog_checksum: str = "") -> Path:
    """Save as an open_clip ``local-dir:`` model (``open_clip_config.json`` + safetensors weights)
    plus ``training.json`` (config, catalog checksum), atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    tmp.chmod(0o755)
    try:
        config = {"model_cfg": result.config.model_cfg(), "preprocess_cfg": LIT_PREPROCESS_CFG}
        (tmp / "open_clip_config.json").write_text(json.dumps(config, indent=1))
        state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
        save_file(state, str(tmp / "open_clip_model.safetensors"))
        meta = {
            "format": LIT_FORMAT,
            "base_encoder": LIT_BASE_ENCODER,
            "config": asdict(result.config),
            "catalog_sha256": catalog_checksum,
            "losses": [round(v, 6) for v in result.losses],
            "note": "image tower locked: its embeddings equal efficientnet-lite0's "
            "(resize 256, crop 224)",
        }
        (tmp / "training.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def lit_training_log(folder: str | Path | None = None) -> dict:
    """What :func:`save_lit` recorded next to the model: config, catalog checksum, loss per
    epoch."""
    folder = Path(folder) if folder is not None else lit_dir()
    return json.loads((folder / "training.json").read_text())


def _lit_is_current(folder: Path, config: LitConfig, checksum: str) -> bool:
    try:
        meta = json.loads((folder / "training.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("format") == LIT_FORMAT
        and meta.get("config") == asdict(config)
        and meta.get("catalog_sha256") == checksum
        and (folder / "open_clip_model.safetensors").is_file()
    )


def build_lit(
    folder: str | Path | None = None,
    config: LitConfig = LitConfig(),
    catalog: Catalog | None = None,
    force: bool = False,
) -> Path:
    """Train the LiT text tower on the catalog's **train** products and save it (skipped when an
    up-to-date model is already there, unless ``force``). Chapter 06."""
    catalog = catalog or load_catalog()
    folder = Path(folder) if folder is not None else lit_dir()
    checksum = _catalog_checksum(catalog)
    if not force and _lit_is_current(folder, config, checksum):
        return folder
    train = catalog.split("train")
    feats = catalog_features(catalog, load_encoder(LIT_BASE_ENCODER), [p.id for p in train])
    return save_lit(train_lit(train, feats, config), folder, checksum)


def load_lit_encoder(
    threads: int | None = None, folder: str | Path | None = None, train_if_missing: bool = True
) -> TorchEncoder:
    """The LiT model as an :class:`~image_search.encoders.Encoder` named ``"lit"``, with
    ``encode_images`` (exactly EfficientNet-Lite0's embeddings: the tower is locked and uses the
    same preprocessing) and ``encode_texts``. Loaded through open_clip's ``local-dir:`` schema;
    trained first (about a minute on 2 cores) when missing or stale. Chapter 06."""
    import open_clip
    import torch

    folder = Path(folder) if folder is not None else lit_dir()
    if train_if_missing:
        build_lit(folder)
    elif not (folder / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"no LiT model in {folder}: run image_search.training.build_lit()")
    model = open_clip.create_model(f"local-dir:{folder}", require_pretrained=True).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    lite0 = load_encoder(LIT_BASE_ENCODER, threads=threads)
    visual = model.visual.to(memory_format=torch.channels_last)
    return TorchEncoder(
        name="lit",
        dim=int(model.text_projection.shape[1]),
        model=visual,
        preprocess=lite0.preprocess,
        encode_text_fn=lambda texts: model.encode_text(tokenizer(texts)),
        threads=threads,
        fingerprint_parts={
            **lite0.fingerprint_parts,
            "encoder": "lit",
            "lit_weights": weights_digest(model),
        },
    )


register_encoder("lit", lambda name, threads: load_lit_encoder(threads=threads))


__all__ = [
    "build_localizer",
    "build_models",
    "validation_split",
    "assert_no_test_products",
    "LocalizerConfig",
    "localizer_examples",
    "train_localizer",
    "localizer_ious",
    "QueryTowerConfig",
    "query_top",
    "query_top_state",
    "top_inputs",
    "crop_trunk_features",
    "query_top_vectors",
    "train_query_top",
    "build_query_tower",
    "write_model",
    "set_seed",
    "deterministic_torch",
    "catalog_features",
    "HeadConfig",
    "TrainedHead",
    "info_nce_loss",
    "batch_hard_triplet_loss",
    "train_projection_head",
    "LitConfig",
    "LitResult",
    "product_text_fields",
    "random_product_text",
    "new_lit_model",
    "train_lit",
    "lit_dir",
    "save_lit",
    "build_lit",
    "lit_training_log",
    "load_lit_encoder",
]
