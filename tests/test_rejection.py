import numpy as np
import pytest
from PIL import Image

from image_search import InvalidRequestError, encode_paths
from image_search.rejection import (
    NON_PRODUCT_KINDS,
    RejectionQueries,
    Rejector,
    calibrate_rejector,
    embed_images,
    evaluate_rejector,
    fit_rejector,
    non_product_images,
    rejection_curve,
    rejection_experiment,
    score_features,
)


def score_lists(top1, n=10, step=0.01):
    """Descending score lists whose best score is ``top1`` (one list per value)."""
    return np.asarray(top1, dtype=np.float64)[:, None] - step * np.arange(n)


def test_score_features():
    flat = np.full((1, 10), 0.5)
    standout = np.r_[0.9, np.full(9, 0.5)][None]
    f = score_features(np.vstack([flat, standout]))
    assert np.allclose(f[:, 0], [0.5, 0.9]) and np.allclose(f[:, 1], [0.0, 0.4])
    assert (
        f[0, 2] == pytest.approx(1.0) and f[1, 2] < 1e-6
    )  # ten equal candidates vs one clear winner
    assert score_features(np.array([0.7, 0.6]), ("top1",)).shape == (1, 1)


def test_threshold_rejector_is_the_calibrated_quantile_of_in_catalogue_top1():
    rng = np.random.default_rng(0)
    inside, outside = rng.uniform(0.5, 0.9, 1000), rng.uniform(0.2, 0.6, 400)
    r = fit_rejector(score_lists(inside), score_lists(outside), max_false_rejection=0.05)
    assert r.threshold == pytest.approx(np.quantile(inside, 0.05))
    assert r.reject(score_lists(inside)).mean() == pytest.approx(0.05, abs=0.002)
    assert r.reject(np.array([0.95, 0.9])) is False and r.reject(np.array([0.3, 0.2])) is True
    # on fresh queries from the same distributions the false-rejection rate holds
    fresh = evaluate_rejector(
        r,
        RejectionQueries(
            score_lists(np.r_[rng.uniform(0.5, 0.9, 2000), outside]),
            ("a",) * 2400,
            ("a",) * 2000 + ("",) * 400,
            ("catalog",) * 2000 + ("noise",) * 400,
        ),
    )
    assert fresh.false_rejection == pytest.approx(
        0.05, abs=0.025
    )  # sampling error of a 5% quantile of 1,000
    assert fresh.recall == pytest.approx(np.mean(outside < r.threshold))
    assert fresh.recall_by_kind == {"noise": fresh.recall}


def test_classifier_combines_features_the_threshold_cannot():
    """In-catalogue queries have one clear winner; out-of-catalogue ones ten close candidates, at
    the same top-1 scores: the top-1 threshold is blind, a classifier on the margin is not."""
    rng = np.random.default_rng(1)
    top = rng.uniform(0.5, 0.8, 600)
    inside = np.hstack([top[:300, None], top[:300, None] - 0.1 - 0.005 * np.arange(9)])
    outside = top[300:, None] - 0.005 * np.arange(10)
    queries = RejectionQueries(
        np.vstack([inside, outside]),
        ("p",) * 600,
        ("p",) * 300 + ("",) * 300,
        ("catalog",) * 300 + ("removed product",) * 300,
    )
    threshold = evaluate_rejector(fit_rejector(inside, outside), queries)
    learned = evaluate_rejector(
        fit_rejector(inside, outside, ("top1", "margin", "entropy")), queries
    )
    assert (
        threshold.auc < 0.6
        and learned.auc > 0.99
        and learned.auc_by_kind == {"removed product": learned.auc}
    )
    assert learned.recall > 0.95 and learned.false_rejection <= 0.06


def test_curve_sweeps_every_threshold():
    rng = np.random.default_rng(2)
    inside, outside = (
        score_lists(rng.uniform(0.5, 0.9, 200)),
        score_lists(rng.uniform(0.2, 0.6, 100)),
    )
    r = fit_rejector(inside, outside)
    q = RejectionQueries(
        np.vstack([inside, outside]),
        ("a",) * 300,
        ("a",) * 300,
        ("catalog",) * 200 + ("noise",) * 100,
    )
    curve = rejection_curve(r, q)
    assert len(curve) == 300 and curve["threshold"].is_monotonic_increasing
    assert (
        curve["false_rejection"].is_monotonic_increasing and curve["recall"].is_monotonic_increasing
    )
    at = curve[
        curve["threshold"] == curve["threshold"][curve["threshold"] > r.threshold].min()
    ].iloc[0]
    report = evaluate_rejector(r, q)
    assert (at["false_rejection"], at["recall"]) == pytest.approx(
        (report.false_rejection, report.recall)
    )


def test_non_product_images_are_seeded_and_of_every_kind(catalog):
    products = [p.id for p in catalog.split("train")[:20]]
    images, kinds = non_product_images(catalog, products, 3, seed=5)
    assert kinds == [k for k in NON_PRODUCT_KINDS for _ in range(3)]
    assert all(im.size == (128, 128) and im.mode == "RGB" for im in images)
    again, _ = non_product_images(catalog, products, 3, seed=5)
    other, _ = non_product_images(catalog, products, 3, seed=6)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert not any(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, other))
    solid = np.asarray(images[3])
    assert (solid == solid[0, 0]).all()


def test_rejector_fitted_on_train_products_rejects_noise_and_accepts_catalog_photos(catalog, lite0):
    x = rejection_experiment(catalog, lite0, removed_share=0.3, per_kind=6, seed=0)
    split = {p.id: p.split for p in catalog.products}
    # no test leakage: the fitting queries show train products only, the evaluation ones test ones
    assert {split[t] for t in x.fit.true_ids if t} == {"train"}
    assert {split[t] for t in x.test.true_ids if t} == {"test"}
    assert {split[t] for t in x.removed} == {"train", "test"} and not set(x.removed) & set(
        x.indexed
    )
    assert {k for k, t in zip(x.fit.kinds, x.fit.true_ids) if t in x.removed} == {"removed product"}
    assert (
        set(x.fit.kinds) == set(x.test.kinds) == {"catalog", "removed product", *NON_PRODUCT_KINDS}
    )
    fit_noise = x.fit.scores[~np.isin(x.fit.kinds, ["catalog", "removed product"])]
    test_noise = x.test.scores[~np.isin(x.test.kinds, ["catalog", "removed product"])]
    assert not (fit_noise[:, None, :] == test_noise[None, :, :]).all(axis=2).any()  # other images
    rejector = fit_rejector(
        x.fit.scores[x.fit.in_catalog], x.fit.scores[~x.fit.in_catalog], encoder=lite0.name
    )
    assert rejector.threshold == pytest.approx(np.quantile(x.fit.scores[x.fit.in_catalog, 0], 0.05))
    assert calibrate_rejector(catalog, lite0, per_kind=6) == rejector

    index = encode_paths(lite0, [catalog.icon_path(i) for i in x.indexed], progress=False)
    rng = np.random.default_rng(99)
    obvious = [
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)),
        Image.new("RGB", (128, 128), (128, 128, 128)),
    ]
    pid = x.indexed[0]
    photos = encode_paths(
        lite0, catalog.shop_photo_paths(pid)[:2], progress=False
    )  # the icon and a studio shot
    queries = np.vstack([embed_images(lite0, obvious), photos])
    scores = -np.sort(-(queries @ index.T), axis=1)[:, :10]
    assert list(rejector.reject(scores)) == [True, True, False, False]
    assert rejector.reason(scores[0]).startswith("no confident match: best match scores 0.")
    assert rejector.reason(scores[2]) is None
    report = evaluate_rejector(rejector, x.test)
    assert report.recall_by_kind["solid colour"] == 1.0 and report.false_rejection < 0.15


def test_json_round_trip():
    r = Rejector(
        ("top1", "margin"), (1.0, 2.0), -0.5, (0.6, 0.05), (0.1, 0.02), 0.25, "efficientnet-lite0"
    )
    assert Rejector.from_json(r.to_json()) == r


@pytest.mark.parametrize(
    "make",
    [
        lambda: score_features(np.array([0.5, np.nan])),
        lambda: score_features(np.array([0.5, 0.9])),  # not best first
        lambda: score_features(np.zeros((3, 1))),  # the margin needs two scores
        lambda: score_features(np.array([]), ("top1",)),
        lambda: score_features(np.array(["a", "b"])),
        lambda: score_features(np.ones((2, 3)), ("confidence",)),
        lambda: fit_rejector(
            score_lists([0.8, 0.7]), score_lists([0.3, 0.2]), max_false_rejection=1.5
        ),
        lambda: fit_rejector(score_lists([0.8]), score_lists([0.3, 0.2])),
        lambda: Rejector(("top1",), (1.0, 1.0), 0.0, (0.0,), (1.0,), 0.5),
        lambda: Rejector(("top1",), (1.0,), 0.0, (0.0,), (-1.0,), 0.5),
        lambda: Rejector(("top1",), (1.0,), 0.0, (0.0,), (1.0,), float("inf")),
        lambda: Rejector.from_json("[]"),
        lambda: evaluate_rejector(
            Rejector(("top1",), (1.0,), 0.0, (0.0,), (1.0,), 0.5),
            RejectionQueries(score_lists([0.8]), ("a",), ("a",), ("catalog",)),
        ),
    ],
)
def test_bad_input_is_a_request_error(make):
    with pytest.raises(InvalidRequestError):
        make()
