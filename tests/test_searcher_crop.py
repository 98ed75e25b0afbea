"""The region-of-interest crop of a search request (chapter 02)."""

import numpy as np
import pytest
from PIL import Image

from image_search import InvalidRequestError, Searcher, SearchRequest


@pytest.fixture(scope="module")
def searcher(catalog):
    return Searcher.from_catalog("colour-histogram", catalog=catalog, progress=False)


@pytest.mark.parametrize(
    "crop",
    [
        (0, 0, 10),
        (0, 0, 10, 10, 3),
        (0.0, 0, 10, 10),
        (True, 0, 10, 10),
        "0,0,10,10",
        (-1, 0, 10, 10),
        (0, -5, 10, 10),
        (10, 0, 10, 10),
        (0, 20, 10, 10),
    ],
)
def test_bad_crops_are_refused(crop):
    with pytest.raises(InvalidRequestError, match="crop"):
        SearchRequest(image=np.zeros((32, 32, 3), np.uint8), crop=crop)


def test_crop_needs_an_image():
    with pytest.raises(InvalidRequestError, match="crop needs an image"):
        SearchRequest(embedding=np.ones(8), crop=(0, 0, 4, 4))


def test_crop_is_normalised_to_a_tuple_of_ints():
    req = SearchRequest(image=np.zeros((32, 32, 3), np.uint8), crop=[np.int64(1), 2, 30, 31])
    assert req.crop == (1, 2, 30, 31) and all(type(c) is int for c in req.crop)


def test_crop_finds_the_product_inside_a_bigger_photo(searcher, catalog):
    pid = catalog.ids[5]
    icon = Image.open(catalog.icon_path(pid)).convert("RGB")
    canvas = Image.new("RGB", (icon.width + 150, icon.height + 90), (200, 30, 160))
    canvas.paste(icon, (100, 40))
    box = (100, 40, 100 + icon.width, 40 + icon.height)
    plain = searcher.search(icon, k=5)
    cropped = searcher.search(canvas, k=5, crop=box)
    uncropped = searcher.search(canvas, k=5)
    assert cropped.ids == plain.ids and np.allclose(cropped.scores, plain.scores)
    assert cropped.ids[0] == pid
    assert uncropped.scores[0] < cropped.scores[0]  # the magenta background pulls the query away


def test_crop_outside_the_decoded_image_is_refused(searcher):
    with pytest.raises(InvalidRequestError, match="outside the decoded 64x48 image"):
        searcher.search(np.zeros((48, 64, 3), np.uint8), crop=(0, 0, 65, 48))


class _Box(tuple):
    def as_tuple(self):
        return tuple(self)


class _Localizing:
    """A stand-in for a localising encoder (chapter 05): it always finds the product at ``box``."""

    def __init__(self, base, box):
        self.base, self.box, self.calls = base, box, []
        self.name, self.dim, self.fingerprint = base.name, base.dim, base.fingerprint  # same space

    def encode_images(self, images, batch_size=32, progress=False):
        return self.encode_located(images)[0]

    def encode_located(self, images, locate=None, batch_size=32):
        self.calls.append(len(images))
        crops = [Image.fromarray(np.asarray(im)).crop(self.box) for im in images]
        return self.base.encode_images(crops), [[_Box(self.box)]] * len(images)


def test_a_localising_encoder_crops_the_query_and_reports_its_box(searcher, catalog):
    pid = catalog.ids[5]
    icon = Image.open(catalog.icon_path(pid)).convert("RGB")
    canvas = Image.new("RGB", (icon.width + 150, icon.height + 90), (200, 30, 160))
    canvas.paste(icon, (100, 40))
    box = (100, 40, 100 + icon.width, 40 + icon.height)
    located = Searcher(searcher.index, catalog, _Localizing(searcher.encoder, box))
    found = located.search(canvas, k=5)
    assert found.box == box and found.ids == searcher.search(canvas, k=5, crop=box).ids
    own = located.search(canvas, k=5, crop=(0, 0, 50, 50))  # the caller's crop wins
    assert own.box == (0, 0, 50, 50) and located.encoder.calls == [1]


def test_two_products_in_one_photo_are_offered_as_candidate_boxes(catalog):
    """The localiser's other boxes come back as ``candidates``; searching one with ``crop`` finds
    that product (chapter 02's photo of two products)."""
    located = Searcher.from_catalog("product-search", catalog=catalog, progress=False)
    test_ids = [p.id for p in catalog.split("test")]
    views = [catalog.view_paths(test_ids[0])[0], catalog.view_paths(test_ids[1])[2]]
    room = Image.new("RGB", (256, 128))
    for x, path in zip((0, 128), views):
        room.paste(Image.open(path).convert("RGB"), (x, 0))
    found = located.search(room, k=5)
    assert len(found.candidates) >= 2 and found.box == found.candidates[0]
    assert found.ids == located.search(room, k=5, crop=found.box).ids  # the same crop embedded
    other = located.search(room, k=5, crop=found.candidates[1])
    assert other.box == found.candidates[1] and other.candidates == ()  # the caller's box wins
    assert other.ids != found.ids
    whole = located.search(Image.new("RGB", (64, 64), (200, 200, 200)), k=3)
    assert whole.candidates in ((), ((0, 0, 64, 64),)) and whole.box is None
