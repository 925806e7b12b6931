"""Geometric verification (``lookalike.verify``) with the real OpenCV on scikit-image's
photos: copies verified with the region each picture shows of the other, checked against
the known boxes of crops and pastes; different pictures (the halves of one texture, which
the embeddings call alike) not verified; pictures found inside pictures."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import photo
from PIL import Image

pytest.importorskip("cv2", reason="install lookalike[verify]")

from lookalike import images, verify

Box = tuple[float, float, float, float]


def thumbnail_features(rgb: np.ndarray) -> verify.Features:
    """The stored side as a search sees it: the features of the kept thumbnail."""
    small = images.thumbnail(np.ascontiguousarray(rgb), 16_000)
    return verify.features(images.decode(small, max_bytes=10**7, max_pixels=10**8))


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def cut(rgb: np.ndarray, box: Box) -> np.ndarray:
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(rgb[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)])


def pasted(rgb: np.ndarray, left: float, top: float, width: float) -> tuple[np.ndarray, Box]:
    """``rgb`` put on a 900×600 page of text lines, at (``left``, ``top``), ``width`` of the
    page wide, its aspect kept; the page and the box it fills."""
    canvas = Image.new("RGB", (900, 600), (235, 235, 235))
    w = round(width * 900)
    h = round(w * rgb.shape[0] / rgb.shape[1])
    x0, y0 = round(left * 900), round(top * 600)
    for y in range(30, 600, 45):  # lines of text beside the picture, 20 px away
        if y + 8 < y0 - 20 or y > y0 + h + 20:
            canvas.paste((60, 60, 60), (20, y, 880, y + 8))
        else:
            if x0 > 60:
                canvas.paste((60, 60, 60), (20, y, x0 - 20, y + 8))
            if x0 + w < 840:
                canvas.paste((60, 60, 60), (x0 + w + 20, y, 880, y + 8))
    canvas.paste(Image.fromarray(rgb).resize((w, h)), (x0, y0))
    return np.asarray(canvas), (x0 / 900, y0 / 600, (x0 + w) / 900, (y0 + h) / 600)


@pytest.mark.parametrize(
    "name, box",
    [
        ("astronaut", (0.25, 0.25, 0.75, 0.75)),  # the centre, half of each side
        ("coffee", (0.0, 0.0, 0.6, 0.6)),  # a corner
        ("chelsea", (0.0, 0.3, 1.0, 0.75)),  # a strip
    ],
)
def test_a_crop_is_verified_and_its_place_in_the_stored_picture_given(name: str, box: Box) -> None:
    stored = photo(name)
    found = verify.region(verify.features(cut(stored, box)), thumbnail_features(stored))
    assert found is not None and found.inliers >= verify.MIN_INLIERS
    assert iou(found.stored, box) > 0.9
    assert iou(found.query, (0, 0, 1, 1)) > 0.9
    assert found.overlap == pytest.approx((box[2] - box[0]) * (box[3] - box[1]), rel=0.1)


def test_a_picture_pasted_into_a_page_is_verified_where_it_is() -> None:
    stored = photo("rocket")
    page, box = pasted(stored, 0.45, 0.2, 0.4)
    found = verify.region(verify.features(page), thumbnail_features(stored))
    assert found is not None
    assert iou(found.query, box) > 0.85 and iou(found.stored, (0, 0, 1, 1)) > 0.9


@pytest.mark.parametrize("name", ["brick", "grass", "gravel", "coffee", "chelsea"])
def test_two_halves_of_one_photo_are_not_verified(name: str) -> None:
    """Different parts of one scene (the embeddings put the texture halves within their
    cutoff: 0.05-0.22) share no geometry."""
    picture = photo(name)
    width = picture.shape[1]
    left, right = cut(picture, (0, 0, 0.5, 1)), picture[:, width // 2 :]
    assert verify.region(verify.features(left), thumbnail_features(right)) is None


def test_a_turned_query_is_verified_in_its_orientation_with_its_box_on_the_query_as_sent() -> None:
    stored = photo("astronaut")
    page, box = pasted(np.ascontiguousarray(np.rot90(stored, 2)), 0.1, 0.1, 0.5)  # upside down
    found = verify.Query(page).region(thumbnail_features(stored), "rot180")
    assert found is not None
    assert iou(found.query, box) > 0.85  # on the page as it was sent
    assert iou(found.stored, (0, 0, 1, 1)) > 0.9
    mirrored = np.ascontiguousarray(cut(stored, (0.0, 0.0, 0.6, 0.6))[:, ::-1])
    # named as matched in another orientation, the mirror is tried too
    found = verify.Query(mirrored).region(thumbnail_features(stored), "rot90")
    assert found is not None and iou(found.stored, (0.0, 0.0, 0.6, 0.6)) > 0.85


def test_pictures_without_features_are_not_verified() -> None:
    flat = np.full((300, 400, 3), 128, dtype=np.uint8)
    assert verify.region(verify.features(flat), thumbnail_features(photo("coffee"))) is None
    assert verify.region(verify.features(photo("coffee")), verify.features(flat)) is None


def test_rectangles_find_a_picture_inside_a_page() -> None:
    page, box = pasted(photo("coffee"), 0.3, 0.15, 0.45)
    found = verify.rectangles(page)
    assert 1 <= len(found) <= 3 and max(iou(b, box) for b in found) > 0.9
    assert verify.rectangles(np.full((200, 200, 3), 90, dtype=np.uint8)) == []
