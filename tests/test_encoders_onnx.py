"""The ONNX Runtime path of TorchEncoder gives the same embeddings as PyTorch
(benchmarks/bench_encoder.py)."""

import numpy as np
import pytest

from image_search import load_catalog, load_encoder


def test_onnx_matches_pytorch(monkeypatch, lite0):
    pytest.importorskip("onnxruntime")
    enc = lite0
    assert enc.onnx is not None, (
        "the default encoder should run in ONNX Runtime when it is installed"
    )
    catalog = load_catalog()
    images = [catalog.icon_path(i) for i in catalog.ids[:3]]
    fast = enc.encode_images(images)
    monkeypatch.setenv("IMAGE_SEARCH_ONNX", "0")
    plain = load_encoder("efficientnet-lite0")
    assert plain.onnx is None
    slow = plain.encode_images(images)
    assert fast.shape == slow.shape == (3, 1280)
    np.testing.assert_allclose(fast, slow, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
