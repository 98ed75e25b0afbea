import time

import numpy as np
import pytest
import torch

from image_search import ModelUnavailableError, encode_paths, load_encoder
from image_search.encoders import EmbeddingCache


def test_default_encoder_is_really_pretrained(lite0, catalog):
    """ImageNet weights, not random ones: the ImageNet head (re-attached) names the barrel a
    barrel."""
    import importlib

    import timm

    from image_search.encoders import PRETRAINED_CNNS

    arch, module, cls, *_ = PRETRAINED_CNNS["efficientnet-lite0"]
    model = timm.create_model(arch, num_classes=1000)
    state = torch.load(
        getattr(importlib.import_module(module), cls).get_model_file_path(), weights_only=True
    )
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
    model.eval()
    from image_search.images import load_image

    x = torch.from_numpy(lite0.preprocess(load_image(catalog.icon_path("blend-swap-cc-0-barrel"))))[
        None
    ]
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
    with pytest.raises(ModelUnavailableError, match="not in the local Hugging Face cache"):
        load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert time.perf_counter() - start < 10


def test_open_clip_never_probes_the_network(monkeypatch, tmp_path):
    """Without the weights cached, loading fails at once, with no socket opened (no probe, no
    retries)."""
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("IMAGE_SEARCH_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelUnavailableError, match="IMAGE_SEARCH_ALLOW_DOWNLOADS=1"):
        load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")


def test_fingerprint_names_weights_preprocessing_backend_and_versions(lite0, monkeypatch):
    parts = lite0.fingerprint_parts
    assert {"weights", "preprocess", "torch", "pillow", "onnxruntime"} <= parts.keys()
    assert (
        parts["preprocess"]
        == "Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))"
    )
    monkeypatch.setenv("IMAGE_SEARCH_ONNX", "0")
    eager = load_encoder("efficientnet-lite0")
    assert eager.backend == "torch" and lite0.backend == "onnxruntime"
    assert eager.fingerprint != lite0.fingerprint  # another backend never reads the other's vectors
    assert load_encoder("efficientnet-lite2").fingerprint not in (
        lite0.fingerprint,
        eager.fingerprint,
    )


def test_eager_encoding_leaves_the_global_thread_count_alone(monkeypatch, catalog):
    monkeypatch.setenv("IMAGE_SEARCH_ONNX", "0")
    before = torch.get_num_threads()
    enc = load_encoder("efficientnet-lite0", threads=1)
    enc.encode_images([catalog.icon_path(catalog.ids[0])])
    assert torch.get_num_threads() == before


def test_failed_onnx_export_warns_and_falls_back(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken)
    monkeypatch.setenv(
        "IMAGE_SEARCH_CACHE", str(__import__("tempfile").mkdtemp())
    )  # no cached .onnx
    with caplog.at_level("WARNING", logger="image_search.encoders"):
        enc = load_encoder("efficientnet-lite0")
    assert enc.onnx is None and enc.backend == "torch"
    assert "exporter exploded" in caplog.text


def test_registry_lists_and_extends(monkeypatch):
    from image_search import encoders

    assert {"efficientnet-lite0", "colour-histogram", "lit"} <= set(encoders.encoder_names())
    monkeypatch.setattr(encoders, "_LOADERS", dict(encoders._LOADERS))
    encoders.register_encoder("toy", lambda name, threads: encoders.RawPixelEncoder(side=2))
    assert load_encoder("toy").dim == 12


def test_importing_the_package_does_not_import_training_from_encoders():
    """No import cycle: the encoders module never imports training (the registry inverts it)."""
    import ast
    import inspect

    from image_search import encoders

    tree = ast.parse(inspect.getsource(encoders))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m and m.endswith("training") for m in imported)


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
    assert EmbeddingCache.of(enc).path.is_relative_to(tmp_path / "cache")


def test_numpy_preprocessing_equals_torchvision_bit_for_bit(catalog):
    """The query path resizes and normalises in NumPy; torchvision's transforms give the same
    floats."""
    from PIL import Image
    from torchvision import transforms

    from image_search.encoders import Preprocess
    from image_search.images import load_image

    reference = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    images = [load_image(catalog.icon_path(i)) for i in catalog.ids[:3]] + [
        load_image(catalog.view_paths(catalog.ids[0])[0])
    ]
    images += [
        Image.new("RGB", (300, 201), (10, 200, 30)),
        Image.new("RGB", (129, 517), (250, 3, 90)),
    ]
    for image in images:
        np.testing.assert_array_equal(Preprocess(256, 224)(image), reference(image).numpy())
