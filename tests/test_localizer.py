"""Tests of image_search.localizer: boxes, IoU, the SCDA baseline, the shipped trained localiser and
the crop-then-embed encoder (``load_encoder("product-search")``)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from image_search import load_encoder
from image_search.encoders import with_weights
from image_search.errors import InvalidRequestError, ModelUnavailableError
from image_search.localizer import (
    MODELS_DIR,
    QUERY_ENCODER,
    Box,
    LocalizedEncoder,
    box_iou,
    heatmap_boxes,
    load_localizer,
    load_product_search,
    mask_box,
    models_manifest,
    shipped_tensors,
)
from image_search.searcher import index_encoder


@pytest.fixture(scope="module")
def trained():
    return load_localizer("trained")


@pytest.fixture(scope="module")
def test_views(catalog):
    """Two customer photos of each of the first three test products."""
    return [p for product in catalog.split("test")[:3] for p in catalog.view_paths(product.id)[:2]]


def test_box_geometry_and_iou():
    a = Box(0, 0, 10, 10)
    assert (a.width, a.height, a.area) == (10, 10, 100)
    assert a.iou(a) == 1.0
    assert a.iou((10, 0, 20, 10)) == 0.0  # touching, not overlapping
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    with pytest.raises(InvalidRequestError):
        Box(5, 0, 5, 10)


def test_square_crop_is_square_inside_the_image_and_widened_by_the_margin():
    sq = Box(40, 50, 60, 70).square(128, 128, margin=0.5)  # 20 px box, 10 px each side
    assert (sq.width, sq.height) == (40, 40)
    assert (sq.left, sq.top) == (30, 40)
    edge = Box(0, 0, 30, 10).square(100, 50, margin=0.2)  # shifted inside, capped by the short side
    assert edge.left == 0 and edge.top == 0 and edge.width == edge.height <= 50


def test_mask_box_and_heatmap_boxes_find_separate_blobs_largest_first():
    heat = np.zeros((20, 40), np.float32)
    heat[2:8, 3:9] = 1.0  # small blob
    heat[5:18, 20:35] = 1.0  # large blob
    boxes = heatmap_boxes(heat, threshold=0.5)
    assert [b.as_tuple() for b in boxes] == [(20, 5, 35, 18), (3, 2, 9, 8)]
    assert sum(b.score for b in boxes) == pytest.approx(1.0, abs=1e-3)
    assert mask_box(heat > 0.5) == Box(3, 2, 35, 18)
    assert mask_box(np.zeros((4, 4), bool)) is None and heatmap_boxes(np.zeros((4, 4)), 0.5) == []


def test_scda_finds_an_obvious_object_on_a_plain_background():
    pixels = np.full((128, 128, 3), 235, np.uint8)
    rng = np.random.default_rng(0)
    pixels[60:110, 20:70] = rng.integers(0, 255, (50, 50, 3))  # a textured square, lower left
    boxes = load_localizer("scda").locate(Image.fromarray(pixels))
    # a 7x7 map at 224 px is coarse: the box holds the object, leaves the far corner out and
    # overlaps the object better than the whole frame does (IoU 0.15)
    best = boxes[0]
    assert best.left <= 45 < best.right and best.top <= 85 < best.bottom
    assert not (best.right > 110 and best.top < 20)
    assert best.iou((20, 60, 70, 110)) > 0.25


def test_shipped_weights_match_their_digest_and_exclude_every_test_product(catalog):
    manifest = models_manifest()
    entry = manifest["models"]["localizer"]
    data = (MODELS_DIR / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    tensors, _ = shipped_tensors("localizer")
    assert sum(t.numel() for t in tensors.values()) < 10_000  # a head, not a network
    trained_on = set(entry["train_ids"])
    assert trained_on == {p.id for p in catalog.split("train")}
    assert not trained_on & {p.id for p in catalog.split("test")}


def test_tampered_or_missing_weights_fail_clearly(tmp_path):
    for name in ("localizer.safetensors", "training.json"):
        (tmp_path / name).write_bytes((MODELS_DIR / name).read_bytes())
    (tmp_path / "localizer.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        load_localizer("trained", folder=tmp_path)
    with pytest.raises(ModelUnavailableError, match="make models"):
        models_manifest(tmp_path / "nowhere")
    with pytest.raises(InvalidRequestError):
        load_localizer("yolo")


def test_trained_boxes_overlap_the_stored_boxes_of_test_photos(catalog, trained, test_views):
    ious = [
        found[0].iou(catalog.object_box(p)) if found else 0.0
        for p, found in zip(test_views, trained.locate_batch(test_views))
    ]
    assert np.median(ious) > 0.5, ious


def test_two_products_side_by_side_give_two_candidates(catalog, trained, test_views):
    left, right = Image.open(test_views[0]).convert("RGB"), Image.open(test_views[2]).convert("RGB")
    room = Image.new("RGB", (256, 128))
    room.paste(left, (0, 0))
    room.paste(right, (128, 0))
    boxes = trained.locate(room)
    lb, rb = catalog.object_box(test_views[0]), catalog.object_box(test_views[2])
    rb = (rb[0] + 128, rb[1], rb[2] + 128, rb[3])
    assert len(boxes) >= 2
    assert max(b.iou(lb) for b in boxes) > 0.3 and max(b.iou(rb) for b in boxes) > 0.3
    heat = trained.heatmaps([room])[0]
    assert (
        boxes[0] == heatmap_boxes(heat, trained.threshold)[0]
    )  # the threshold's own best comes first


def test_localized_encoder_crops_exposes_its_boxes_and_fingerprints_margin_and_weights(
    lite0, trained, test_views
):
    scda = load_localizer("scda")
    enc = LocalizedEncoder(lite0, trained, margin=0.1)
    assert enc.dim == lite0.dim and enc.name == "efficientnet-lite0+trained-crop"
    assert enc.fingerprint != LocalizedEncoder(lite0, trained, margin=0.2).fingerprint
    assert enc.fingerprint != LocalizedEncoder(lite0, scda, margin=0.1).fingerprint
    assert enc.fingerprint != lite0.fingerprint
    vectors, boxes = enc.encode_with_boxes(test_views[:2])
    assert vectors.shape == (2, lite0.dim) and np.allclose(
        np.linalg.norm(vectors, axis=1), 1, atol=1e-4
    )
    crop = Image.open(test_views[0]).convert("RGB").crop(boxes[0].as_tuple())
    assert np.allclose(
        vectors[0], lite0.encode_images([crop])[0], atol=1e-4
    )  # the crop, not the frame
    assert np.allclose(enc.encode_images(test_views[:2]), vectors, atol=1e-6)
    assert boxes[0].width == boxes[0].height < 128  # squared, smaller than the frame
    with pytest.raises(InvalidRequestError):
        LocalizedEncoder(lite0, trained, margin=-0.1)


def test_product_search_is_registered_and_uses_the_shipped_margin():
    enc = load_encoder("product-search")
    assert (
        enc.name == "product-search"
        and enc.margin == json.loads((MODELS_DIR / "training.json").read_text())["margin"]
    )
    assert enc.localizer.name == "trained"


def test_product_search_embeds_queries_with_the_tuned_top_into_the_frozen_catalog_space(
    catalog, lite0
):
    enc = load_encoder("product-search")
    assert enc.base.name == QUERY_ENCODER and enc.catalog_encoder.name == "efficientnet-lite0"
    assert index_encoder(enc) is enc.catalog_encoder  # the index keeps Lite0's shop vectors
    assert enc.catalog_encoder.fingerprint == lite0.fingerprint
    assert enc.base.fingerprint != lite0.fingerprint and enc.fingerprint != enc.base.fingerprint
    tensors, entry = shipped_tensors("query_top")
    assert all(k.startswith(("blocks.6.", "conv_head.", "bn2.")) for k in tensors)
    assert set(entry["train_ids"]) == {p.id for p in catalog.split("train")}
    assert entry["epochs"] in entry["config"]["epochs"]
    icon = catalog.icon_path(catalog.ids[0])
    tuned, frozen = enc.base.encode_images([icon])[0], lite0.encode_images([icon])[0]
    assert 0.3 < float(tuned @ frozen) < 0.9999  # moved, but still in the same space


def test_with_weights_replaces_only_named_tensors_of_the_right_shape(lite0):
    own = lite0.model.state_dict()
    zero = {"conv_head.weight": own["conv_head.weight"] * 0}
    changed = with_weights(lite0, zero, "lite0-no-head")
    assert changed.name == "lite0-no-head" and changed.fingerprint != lite0.fingerprint
    assert not changed.model.state_dict()["conv_head.weight"].any()
    assert lite0.model.state_dict()["conv_head.weight"].any()  # the original is untouched
    with pytest.raises(ModelUnavailableError, match="do not fit"):
        with_weights(lite0, {"conv_head.weight": own["conv_head.weight"][:3]}, "bad")
    with pytest.raises(ModelUnavailableError, match="do not fit"):
        with_weights(lite0, {"no.such.tensor": own["conv_head.weight"]}, "bad")


def test_a_tampered_query_top_fails_clearly(tmp_path):
    for name in ("localizer.safetensors", "query_top.safetensors", "training.json"):
        (tmp_path / name).write_bytes((MODELS_DIR / name).read_bytes())
    (tmp_path / "query_top.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        load_product_search(folder=tmp_path)


def test_the_library_defaults_to_the_product_search_pipeline():
    import inspect

    from image_search.demo import run_demo
    from image_search.localizer import PIPELINE
    from image_search.searcher import Searcher

    for fn in (Searcher.from_catalog, run_demo):
        assert inspect.signature(fn).parameters["encoder"].default == PIPELINE
