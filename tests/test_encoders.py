import time

import numpy as np
import pytest
import torch

from image_search import ModelUnavailableError, encode_paths, load_encoder
from image_search.encoders import EmbeddingCache


@pytest.fixture(scope="module")
def lite0():
    return load_encoder("efficientnet-lite0")


def test_default_encoder_is_really_pretrained(lite0, catalog):
    """ImageNet weights, not random ones: the ImageNet head (re-attached) names the barrel a barrel."""
    import timm

    from image_search.encoders import PRETRAINED_CNNS
    import importlib

    arch, module, cls, *_ = PRETRAINED_CNNS["efficientnet-lite0"]
    model = timm.create_model(arch, num_classes=1000)
    state = torch.load(getattr(importlib.import_module(module), cls).get_model_file_path(), weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
    model.eval()
    from image_search.images import load_image

    x = lite0.preprocess(load_image(catalog.icon_path("blend-swap-cc-0-barrel")))[None]
    with torch.no_grad():
        top5 = model(x).topk(5).indices[0].tolist()
    assert 427 in top5  # ImageNet class 427: "barrel, cask"


def test_embeddings_are_unit_float32_and_deterministic(lite0, catalog):
    paths = [catalog.icon_path(i) for i in catalog.ids[:3]]
    a = lite0.encode_images(paths)
    b = lite0.encode_images(paths, batch_size=1)
    assert a.dtype == np.float32 and a.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(a, b, atol=1e-5)  # batching does not change results


@pytest.mark.parametrize("name,dim", [("colour-histogram", 128), ("raw-pixels", 768)])
def test_baselines(name, dim, catalog):
    enc = load_encoder(name)
    x = enc.encode_images([catalog.icon_path(catalog.ids[0]), catalog.icon_path(catalog.ids[1])])
    assert x.shape == (2, dim) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert not np.allclose(x[0], x[1])


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("resnet-9000")


def test_open_clip_without_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty Hugging Face cache
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="not cached"):
        load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert time.perf_counter() - start < 10


def test_open_clip_bad_names_are_clear():
    with pytest.raises(ValueError, match="no model"):
        load_encoder("open_clip:NoSuchNet/x")
    with pytest.raises(ValueError, match="pretrained tag"):
        load_encoder("open_clip:ViT-B-32")


def test_cache_reuses_vectors_and_keys_by_content(monkeypatch, tmp_path, catalog):
    monkeypatch.setenv("IMAGE_SEARCH_CACHE", str(tmp_path / "cache"))
    enc = load_encoder("colour-histogram")
    src = catalog.icon_path(catalog.ids[0])
    copy = tmp_path / "copy.png"
    copy.write_bytes(src.read_bytes())
    first = encode_paths(enc, [src], progress=False)
    calls = []
    monkeypatch.setattr(enc, "encode_images", lambda *a, **k: calls.append(a) or np.zeros((0, 128)))
    again = encode_paths(enc, [copy], progress=False)  # same bytes, other path: a cache hit
    assert calls == [] and np.array_equal(first, again)
    assert EmbeddingCache(enc.name, enc.dim).path.is_relative_to(tmp_path / "cache")
