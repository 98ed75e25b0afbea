"""Tests of image_search.training: losses, projection heads, LiT save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from image_search.training import (
    HeadConfig,
    LitConfig,
    batch_hard_triplet_loss,
    info_nce_loss,
    load_lit_encoder,
    product_text_fields,
    random_product_text,
    save_lit,
    train_lit,
    train_projection_head,
)


def _groups(n=40, m=3, d=16, noise=0.3, seed=0):
    """Products as cluster centres, photos as noisy copies: a head should pull photos together."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n, 1, d))
    x = centres + noise * rng.normal(size=(n, m, d))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_info_nce_is_low_for_matching_pairs_and_high_for_shuffled():
    a = torch.nn.functional.normalize(
        torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    assert info_nce_loss(a, a, 0.05) < 0.01
    assert info_nce_loss(a, a.roll(1, 0), 0.05) > 1.0


def test_batch_hard_triplet_loss_zero_when_classes_are_separated():
    e = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet_loss(e, labels, margin=0.2) == 0
    mixed = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0], [0, 1.0]])
    assert batch_hard_triplet_loss(mixed, labels, margin=0.2) > 1.0


@pytest.mark.parametrize("loss", ["infonce", "triplet"])
def test_head_training_reduces_loss_and_is_deterministic(loss):
    g = _groups()
    cfg = HeadConfig(loss=loss, dim=8, epochs=15, batch_products=16, lr=1e-2)
    a, b = train_projection_head(g, cfg), train_projection_head(g, cfg)
    assert a.losses[-1] < a.losses[0]
    assert a.losses == b.losses
    out = a.project(g[:, 0])
    assert out.shape == (40, 8) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(out, b.project(g[:, 0]))


def test_on_epoch_history_and_bad_config():
    seen = []
    head = train_projection_head(
        _groups(),
        HeadConfig(dim=4, epochs=4, batch_products=8),
        on_epoch=lambda e, project: (
            seen.append(project(_groups()[:2, 0]).shape) or (e if e % 2 == 0 else None)
        ),
    )
    assert head.history == ((2, 2.0), (4, 4.0)) and seen == [(2, 4)] * 4
    with pytest.raises(ValueError):
        HeadConfig(loss="contrastive")
    with pytest.raises(ValueError):
        train_projection_head(np.zeros((4, 1, 8), np.float32))


def test_random_product_text_uses_only_product_words(catalog):
    p = catalog.products[0]
    rng = np.random.default_rng(0)
    words = set(product_text_fields(p))
    for _ in range(20):
        t = random_product_text(p, rng)
        assert t == p.text or set(t.split(", ")) <= words


def test_lit_trains_saves_and_loads_as_open_clip_local_dir(catalog, tmp_path, lite0, monkeypatch):
    from image_search import training

    monkeypatch.setattr(
        training, "load_encoder", lambda name, threads=None: lite0
    )  # the session's copy
    products = catalog.split("train")[:12]
    feats = _groups(n=12, m=2, d=1280)
    cfg = LitConfig(width=32, layers=1, heads=2, context_length=16, epochs=3, batch_size=6)
    result = train_lit(products, feats, cfg)
    assert len(result.losses) == 3
    folder = save_lit(result, tmp_path / "lit", catalog_checksum="x")
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == "tf_efficientnet_lite0"
    enc = load_lit_encoder(folder=folder, train_if_missing=False)
    t = enc.encode_texts(["green chair", "lamp"])
    assert t.shape == (2, 1280)
    np.testing.assert_allclose(t, result.encode_texts(["green chair", "lamp"]), atol=1e-5)
    with pytest.raises(FileNotFoundError):
        load_lit_encoder(folder=tmp_path / "missing", train_if_missing=False)


def test_lit_staleness_retrains_only_when_config_catalog_or_format_change(
    catalog, tmp_path, monkeypatch
):
    from dataclasses import asdict

    from image_search import training

    cfg = LitConfig(epochs=2)
    checksum = training._catalog_checksum(catalog)
    folder = tmp_path / "lit"
    folder.mkdir()
    (folder / "open_clip_model.safetensors").write_bytes(b"weights")
    meta = {"format": training.LIT_FORMAT, "config": asdict(cfg), "catalog_sha256": checksum}
    (folder / "training.json").write_text(json.dumps(meta))
    assert training._lit_is_current(folder, cfg, checksum)
    assert not training._lit_is_current(folder, LitConfig(epochs=3), checksum)  # another config
    assert not training._lit_is_current(folder, cfg, "0" * 64)  # the catalog changed
    assert not training._lit_is_current(tmp_path / "nowhere", cfg, checksum)

    trained = []
    monkeypatch.setattr(
        training, "catalog_features", lambda *a, **k: np.zeros((1, 1, 1280), np.float32)
    )
    monkeypatch.setattr(
        training, "train_lit", lambda products, feats, config: trained.append(config) or "model"
    )
    monkeypatch.setattr(training, "save_lit", lambda result, f, checksum: Path(f))
    monkeypatch.setattr(training, "load_encoder", lambda name: None)
    assert (
        training.build_lit(folder, cfg, catalog) == folder and trained == []
    )  # up to date: no training
    training.build_lit(folder, cfg, catalog, force=True)
    training.build_lit(folder, LitConfig(epochs=3), catalog)
    assert trained == [cfg, LitConfig(epochs=3)]
    for broken in ({**meta, "format": training.LIT_FORMAT + 1}, "{not json"):
        (folder / "training.json").write_text(
            broken if isinstance(broken, str) else json.dumps(broken)
        )
        assert not training._lit_is_current(folder, cfg, checksum)
    (folder / "training.json").write_text(json.dumps(meta))
    (folder / "open_clip_model.safetensors").unlink()  # weights lost
    assert not training._lit_is_current(folder, cfg, checksum)
    training.build_lit(folder, cfg, catalog)
    assert len(trained) == 3


# --------------------------------------------------------------------------- the object localiser
def test_validation_split_is_seeded_inside_train_and_test_products_are_refused(catalog):
    from image_search.training import assert_no_test_products, validation_split

    fit, val = validation_split(catalog)
    assert (fit, val) == validation_split(catalog) and not set(fit) & set(val)
    assert set(fit) | set(val) == {p.id for p in catalog.split("train")}
    assert_no_test_products(catalog, fit + val)
    with pytest.raises(ValueError, match="test product"):
        assert_no_test_products(catalog, fit[:2] + [catalog.split("test")[0].id])


def test_localizer_head_learns_where_the_object_is_deterministically():
    from image_search.training import LocalizerConfig, train_localizer

    rng = np.random.default_rng(0)
    targets = np.zeros((64, 1, 6, 6), np.float32)
    for k in range(64):  # one object per map, at a random place; channel 0 lights up on it
        r, c = rng.integers(0, 4, 2)
        targets[k, 0, r : r + 2, c : c + 2] = 1
    features = rng.normal(size=(64, 8, 6, 6)).astype(np.float32) * 0.3 + 5
    features[:, :1] += 2 * targets
    config = LocalizerConfig(hidden=4, epochs=30, batch_size=16, lr=1e-2)
    head = train_localizer(features, targets, config)
    with torch.no_grad():
        p = torch.sigmoid(head(torch.from_numpy(features))).numpy()
    peak = p.reshape(64, -1).argmax(1)
    assert (
        np.mean(targets.reshape(64, -1)[np.arange(64), peak] > 0.5) > 0.9
    )  # the peak is on the object
    assert p[targets > 0.5].mean() > p[targets < 0.5].mean() + 0.3
    again = train_localizer(features, targets, config)
    assert all(
        torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values())
    )
    with pytest.raises(ValueError, match="do not fit"):
        train_localizer(features, targets[:, :, :3], config)


def test_query_top_pulls_crops_towards_their_catalog_vectors_deterministically(lite0):
    from image_search.features import exact_retrieval
    from image_search.training import (
        QueryTowerConfig,
        query_top,
        query_top_state,
        query_top_vectors,
        train_query_top,
    )

    rng = np.random.default_rng(0)
    n = 16  # products: a clean block-6 input each, two noisy "crops" of it (and mirrored copies)
    clean = np.abs(rng.normal(size=(n, 192, 7, 7))).astype(np.float32)  # post-activation: >= 0
    owners = np.repeat(np.arange(n), 2)
    noise = np.abs(rng.normal(size=(2, 2 * n, 192, 7, 7)))
    features = (clean[owners][None] + 1.5 * noise).astype(np.float32)
    frozen = query_top(lite0.model)
    targets = query_top_vectors(frozen, clean)  # the catalog: the frozen top on the clean inputs
    config = QueryTowerConfig(batch_size=8)
    top = train_query_top(lite0.model, features, owners, targets, np.arange(n), 30, config)
    before = query_top_vectors(frozen, features[0])
    after = query_top_vectors(top, features[0])
    assert np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-5)

    def loss(v):
        return float(info_nce_loss(torch.from_numpy(v), torch.from_numpy(targets[owners]), 0.05))

    assert loss(after) < loss(before)
    r_before = exact_retrieval(before, owners, targets, np.arange(n), ks=(1, 3))[0].recall
    r_after = exact_retrieval(after, owners, targets, np.arange(n), ks=(1, 3))[0].recall
    assert r_after[1] >= r_before[1] + 0.125 and r_after[3] > r_before[3]  # 4 of 32 crops or more
    again = train_query_top(lite0.model, features, owners, targets, np.arange(n), 30, config)
    assert all(
        torch.equal(a, b) for a, b in zip(top.state_dict().values(), again.state_dict().values())
    )
    state = query_top_state(top)
    own = lite0.model.state_dict()
    assert all(k in own and own[k].shape == v.shape for k, v in state.items())
    assert not torch.equal(state["conv_head.weight"], own["conv_head.weight"])  # a copy trained
    with pytest.raises(ValueError, match="catalog vector"):
        train_query_top(lite0.model, features, owners, targets[:3], np.arange(3), 1, config)


def test_write_model_records_the_digest_and_keeps_other_models(tmp_path):
    import hashlib

    from safetensors.torch import load

    from image_search.training import write_model

    write_model(tmp_path, "a", {"w": torch.ones(2)}, {"epochs": 3}, margin=0.1)
    write_model(tmp_path, "b", {"w": torch.zeros(2)}, {})
    manifest = json.loads((tmp_path / "training.json").read_text())
    assert set(manifest["models"]) == {"a", "b"} and manifest["margin"] == 0.1
    data = (tmp_path / "a.safetensors").read_bytes()
    assert manifest["models"]["a"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert torch.equal(load(data)["w"], torch.ones(2)) and manifest["models"]["a"]["epochs"] == 3
