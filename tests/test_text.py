"""Tests of image_search.text: the two-tower model (locked MiniLM + locked image tower + heads)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from image_search import InvalidRequestError, ModelUnavailableError, load_encoder
from image_search.catalog import Product
from image_search.text import (
    MAX_TEXT_CHARS,
    SHIPPED_DIR,
    LabelBridge,
    ProjectionHeads,
    TwoTowerConfig,
    TwoTowerModel,
    check_text,
    clip_loss,
    compose_query,
    imagenet_labels,
    load_heads,
    load_sentence_tower,
    load_text_model,
    price_band,
    product_captions,
    prompt_vectors,
    size_word,
    text_model_log,
    train_two_tower,
    zero_shot_classify,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def minilm():
    return load_sentence_tower()


# --------------------------------------------------------------------- the loss and the temperature
def test_clip_loss_equals_a_from_scratch_symmetric_infonce_and_open_clip():
    import open_clip

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img + 0.8 * torch.randn(6, 8, generator=g), dim=-1)
    scale = 7.5
    s = scale * (img @ txt.T).numpy().astype(np.float64)
    i2t = -np.mean(
        [s[i, i] - math.log(np.exp(s[i]).sum()) for i in range(6)]
    )  # each image finds its text
    t2i = -np.mean(
        [s[i, i] - math.log(np.exp(s[:, i]).sum()) for i in range(6)]
    )  # each text finds its image
    ours = float(clip_loss(img, txt, torch.tensor(scale)))
    assert ours == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    assert ours == pytest.approx(
        float(open_clip.ClipLoss()(img, txt, torch.tensor(scale))), rel=1e-6
    )
    assert i2t != pytest.approx(
        t2i, rel=1e-3
    )  # the two directions differ: the loss really is symmetric
    assert float(clip_loss(img, img, torch.tensor(50.0))) < 0.01


def _toy_pairs(n=48, photos=3, d_img=16, d_txt=384, captions=2, seed=0):
    """Products as random directions; photos and captions are noisy views of them (captions
    through a fixed random linear map), so matching pairs can be aligned by linear heads."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n, d_img))
    feats = _unit(centres[:, None] + 0.3 * rng.normal(size=(n, photos, d_img))).astype(np.float32)
    mix = rng.normal(size=(d_img, d_txt))
    caps = [
        _unit(c @ mix + 0.3 * rng.normal(size=(captions, d_txt))).astype(np.float32)
        for c in centres
    ]
    return feats, caps


def test_training_learns_the_temperature_reduces_the_loss_and_is_deterministic():
    feats, caps = _toy_pairs()
    cfg = TwoTowerConfig(
        dim=8, epochs=12, batch_size=16, lr=1e-2, image_encoder="toy", label_weight=0.0
    )
    a, b = train_two_tower(feats, caps, cfg), train_two_tower(feats, caps, cfg)
    assert a.losses[-1] < 0.7 * a.losses[0]
    assert abs(a.logit_scales[-1] - 1 / cfg.init_temperature) > 0.1  # learnt, not fixed
    assert a.losses == b.losses and a.heads.digest == b.heads.digest
    assert a.heads.image.shape == (16, 8) and a.heads.text.shape == (384, 8)
    out = a.heads.project_images(feats[:, 0])
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_temperature_is_clamped_at_max_logit_scale():
    feats, caps = _toy_pairs()
    cfg = TwoTowerConfig(
        dim=8,
        epochs=15,
        batch_size=16,
        lr=0.05,
        init_temperature=0.5,
        max_logit_scale=2.5,
        image_encoder="toy",
        label_weight=0.0,
    )
    scales = train_two_tower(feats, caps, cfg).logit_scales
    assert max(scales) == pytest.approx(
        2.5, rel=1e-5
    )  # wants to grow (separable pairs), held at the clamp
    assert all(s <= 2.5 + 1e-5 for s in scales)


def test_bad_training_inputs_and_configs():
    feats, caps = _toy_pairs(n=4)
    with pytest.raises(ValueError):
        train_two_tower(feats, caps[:3])
    with pytest.raises(ValueError):
        train_two_tower(feats, [c[:0] for c in caps])
    with pytest.raises(ValueError):
        TwoTowerConfig(init_temperature=0.001)  # 1 / 0.001 > max_logit_scale 100
    with pytest.raises(ValueError):
        TwoTowerConfig(label_weight=1.0)


# --------------------------------------------------------------------------- captions
def test_captions_are_deterministic_for_a_seed_and_use_only_known_fields(catalog):
    products = catalog.split("train")
    for p in products[:40]:
        caps = product_captions(p, seed=0)
        assert caps == product_captions(p, seed=0) and len(set(caps)) == len(caps)
        assert caps[0] == p.name.lower() and all(c.strip() for c in caps)
    tagged = [p for p in products if len(p.tags) >= 3]
    assert any(
        product_captions(p, 0) != product_captions(p, 1) for p in tagged
    )  # tag subsets follow the seed
    bare = Product(id="x", name="Stool")  # no type, colour, tags, size or price
    assert product_captions(bare) == ["stool", "a photo of a stool"]


def test_size_words_and_price_bands():
    assert size_word(Product(id="a", name="a", width_cm=20, depth_cm=10, height_cm=5)) == "small"
    assert (
        size_word(Product(id="a", name="a", width_cm=60, depth_cm=50, height_cm=90))
        == "medium-sized"
    )
    assert size_word(Product(id="a", name="a", width_cm=200, depth_cm=90, height_cm=80)) == "large"
    assert size_word(Product(id="a", name="a", width_cm=40, depth_cm=40, height_cm=180)) == "tall"
    assert size_word(Product(id="a", name="a")) == ""
    assert [price_band(x) for x in (10, 75, 249.99, 250, math.nan)] == [
        "budget",
        "mid-range",
        "mid-range",
        "premium",
        "",
    ]


# --------------------------------------------------------------------------- shipped weights
def test_shipped_weights_load_match_their_digest_and_saw_no_held_out_product(
    catalog, tmp_path, minilm
):
    heads, log = load_heads()
    assert heads.image.shape == (1280, log["config"]["dim"]) and heads.text.shape == (
        384,
        log["config"]["dim"],
    )
    assert heads.digest == log["heads_digest"]
    assert (
        hashlib.sha256((SHIPPED_DIR / "heads.safetensors").read_bytes()).hexdigest()
        == log["weights_sha256"]
    )
    assert 0 < 1 / heads.logit_scale < 1 and heads.image_encoder == "efficientnet-lite0"
    test_ids = {p.id for p in catalog.split("test")}
    assert log["train_ids"] == sorted(p.id for p in catalog.split("train")) and not test_ids & set(
        log["train_ids"]
    )
    assert log["losses"][-1] < log["losses"][0]
    model = load_text_model()  # the label bridge's vectors are MiniLM's, shipped for every machine
    labels = imagenet_labels()
    assert (
        model.bridge.label_vectors.shape == (1000, 384)
        and model.label_weight == log["config"]["label_weight"]
    )
    assert np.abs(model.bridge.label_vectors[:3] - minilm.encode_texts(labels[:3])).max() < 1e-5

    damaged = tmp_path / "damaged"
    shutil.copytree(SHIPPED_DIR, damaged)
    data = bytearray((damaged / "heads.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (damaged / "heads.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        load_heads(damaged)
    with pytest.raises(ModelUnavailableError, match="make text-model"):
        text_model_log(tmp_path / "missing")
    (damaged / "training.json").write_text(json.dumps({**log, "format": 99}))
    with pytest.raises(ModelUnavailableError):
        load_heads(damaged)


# --------------------------------------------------------------------------- errors on text
@pytest.mark.parametrize(
    "bad", ["", "   \n\t", "x" * (MAX_TEXT_CHARS + 1), None, 42, b"chair", "ch\x00air"]
)
def test_bad_text_is_an_invalid_request(bad):
    with pytest.raises(InvalidRequestError):
        check_text(bad)


def test_text_checks_and_the_word_piece_limit(minilm):
    assert check_text("  a green armchair ") == "a green armchair"
    assert check_text("x" * MAX_TEXT_CHARS) == "x" * MAX_TEXT_CHARS
    v = minilm.encode_texts(["a green armchair", "something to sit on"])
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    with pytest.raises(InvalidRequestError, match="word pieces"):
        minilm.encode_texts(
            ["a." * 200]
        )  # 400 characters, but about 400 word pieces: would be cut off
    with pytest.raises(InvalidRequestError, match="empty"):
        minilm.encode_texts(["chair", " "])


# ------------------------------------------------------------------- zero-shot and composed queries
class _ToyText:
    """A text encoder that knows a few words (each a fixed direction): zero-shot by hand."""

    dim = 3
    words = {"chair": [1.0, 0, 0], "lamp": [0, 1.0, 0], "photo": [0, 0, 1.0]}

    def encode_texts(self, texts):
        out = np.array(
            [
                np.sum(
                    [self.words[w] for w in t.replace(".", "").split() if w in self.words], axis=0
                )
                for t in texts
            ],
            dtype=np.float32,
        )
        return _unit(out)


def test_zero_shot_on_a_toy_case_with_prompt_ensembling():
    toy = _ToyText()
    images = _unit(np.array([[0.9, 0.1, 0.2], [0.2, 0.8, 0.3], [0.1, 0.7, 0.0]], dtype=np.float32))
    assert zero_shot_classify(images, toy, ["chair", "lamp"]).tolist() == [0, 1, 1]
    ens = prompt_vectors(toy, ["chair"], ("{}", "a photo of a {}."))
    assert np.allclose(
        ens[0], _unit(np.array([1 + 1 / math.sqrt(2), 0, 1 / math.sqrt(2)])), atol=1e-6
    )
    with pytest.raises(InvalidRequestError):
        prompt_vectors(toy, ["chair"], ("a photo",))
    with pytest.raises(InvalidRequestError):
        zero_shot_classify(images[:, :2], toy, ["chair"])


def test_compose_query_normalises_and_interpolates():
    img, txt = np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])
    assert np.allclose(compose_query(img, txt, 0), img)
    q = compose_query(3 * img, 0.5 * txt, 1.0)  # inputs are normalised first
    assert np.allclose(q, [1 / math.sqrt(2), 1 / math.sqrt(2), 0, 0]) and q.dtype == np.float32
    assert compose_query(img, txt, 100.0)[1] > 0.99
    batch = compose_query(np.stack([img, txt]), np.stack([txt, img]), 2.0)
    assert batch.shape == (2, 4) and np.allclose(np.linalg.norm(batch, axis=1), 1)
    for alpha in (-1, math.nan, math.inf, "1", True):
        with pytest.raises(InvalidRequestError):
            compose_query(img, txt, alpha)
    for a, b in ((img, txt[:3]), (np.zeros(4), txt), (img, np.full(4, np.nan))):
        with pytest.raises(InvalidRequestError):
            compose_query(a, b, 1.0)
    with pytest.raises(InvalidRequestError, match="cancels"):
        compose_query(img, -img, 1.0)


def test_two_tower_model_joins_the_heads_and_the_label_bridge():
    rng = np.random.default_rng(0)
    heads = ProjectionHeads(
        rng.normal(size=(1280, 4)).astype(np.float32),
        rng.normal(size=(384, 4)).astype(np.float32),
        10.0,
        "efficientnet-lite0",
    )
    bridge = LabelBridge(
        rng.normal(size=(1000, 1280)).astype(np.float32) / 30,
        np.zeros(1000, np.float32),
        _unit(rng.normal(size=(1000, 384))).astype(np.float32),
    )
    tower = type("Tower", (), {"dim": 384})()
    model = TwoTowerModel(heads, tower, bridge, 0.5)
    f, t = _unit(rng.normal(size=(3, 1280))), _unit(rng.normal(size=(2, 384)))
    x, y = model.project_images(f), model.join_texts(t)
    assert x.shape == (3, 388) == (3, model.dim) and np.allclose(
        np.linalg.norm(x, axis=1), 1, atol=1e-5
    )
    cos = x @ y.T  # the joint cosine is the weighted sum of the heads' and the bridge's
    expected = (
        0.5 * heads.project_images(f) @ heads.project_texts(t).T + 0.5 * bridge.embed(f) @ t.T
    )
    assert np.allclose(cos, expected, atol=1e-5)
    assert TwoTowerModel(heads, tower).project_images(f).shape == (3, 4)
    with pytest.raises(ValueError):
        TwoTowerModel(heads, tower, None, 0.5)
    with pytest.raises(InvalidRequestError):
        heads.project_images(f[:, :10])


# --------------------------------------------------------------------------- the registry, offline
def test_registry_name_loads_offline_and_embeds_both_modalities(catalog, monkeypatch, minilm):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    enc = load_encoder("minilm-lit")
    heads, log = load_heads()
    assert enc.name == "minilm-lit" and enc.dim == heads.dim + 384
    assert enc.fingerprint != enc.image_tower.fingerprint
    ids = [
        "blend-swap-cc-0-bed3",
        "scopia-tv",
        "blend-swap-cc-by-chair4",
    ]  # held-out: a bed, a TV, a chair
    paths = [catalog.icon_path(i) for i in ids]
    images = enc.encode_images(paths)
    from image_search.embeddings import encode_paths

    assert np.allclose(
        images,
        enc.model.project_images(encode_paths(enc.image_tower, paths, progress=False)),
        atol=1e-6,
    )
    texts = enc.encode_texts(["a bed to sleep in", "a television", "a chair"])
    assert texts.shape == (3, enc.dim) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert (texts @ images.T).argmax(axis=1).tolist() == [0, 1, 2]  # each text finds its product
    q = enc.encode_query(text="in black", image=paths[2])
    assert q.shape == (enc.dim,) and math.isclose(float(np.linalg.norm(q)), 1, rel_tol=1e-5)
    with pytest.raises(InvalidRequestError):
        enc.encode_query()
    with pytest.raises(InvalidRequestError):
        enc.encode_texts([""])


def test_open_clip_local_dir_gives_the_same_vectors(tmp_path, minilm):
    import open_clip

    from image_search.text import export_open_clip, load_text_model

    model = load_text_model()
    folder = export_open_clip(tmp_path / "oc", model)
    clip = open_clip.create_model(f"local-dir:{folder}", require_pretrained=True).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    texts = ["a green armchair", "something to sit on"]
    with torch.no_grad():
        ours = clip.encode_text(tokenizer(texts), normalize=True).numpy()
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        image = clip.encode_image(x, normalize=True).numpy()
        features = clip.visual.trunk(x).numpy()
    heads_only = replace(model, bridge=None, label_weight=0.0)
    assert np.abs(ours - heads_only.encode_texts(texts)).max() < 1e-5
    assert np.abs(image - model.heads.project_images(features)).max() < 1e-5
