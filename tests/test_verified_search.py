"""Searches that verify their candidates with local features (issue 19), through the
service, with the real EfficientNet encoder, OpenCV and a SQLite store: a heavy crop and
a photo inside a page are found with the region they show, and missed without
verification; results carry the verdict in their JSON; records kept without a thumbnail
still search, unchecked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS, encode, photo
from PIL import Image

pytest.importorskip("cv2", reason="install lookalike[verify]")

from lookalike import Settings
from lookalike.search import SIGNATURE_SURE
from lookalike.service import Lookalike


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def opened(tmp_path: Path, model_cache: Path, name: str, **settings: object) -> Lookalike:
    store = "sqlite:///" + str(tmp_path / f"{name}.db")
    return Lookalike(
        Settings(
            backend=store,
            embeddings=True,
            model_cache=str(model_cache),
            embedding_threads=1,
            **settings,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
def both(tmp_path: Path, model_cache: Path) -> Iterator[dict[str, Lookalike]]:
    """The same photos in a store searched with verification and in one without."""
    services = {
        "verified": opened(tmp_path, model_cache, "on"),
        "unverified": opened(tmp_path, model_cache, "off", verify=False),
    }
    for service in services.values():
        for name in PHOTOS:
            service.add(name, encode(photo(name)))
    yield services
    for service in services.values():
        service.close()


def centre_half(name: str) -> bytes:
    pixels = photo(name)
    h, w = pixels.shape[:2]
    return encode(np.ascontiguousarray(pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]))


def on_a_page(name: str) -> tuple[bytes, tuple[float, float, float, float]]:
    """The photo at a third of a 1200×800 page's width, among lines of text."""
    page = Image.new("RGB", (1200, 800), (245, 245, 245))
    pixels = Image.fromarray(photo(name))
    w = 400
    h = round(w * pixels.height / pixels.width)
    for y in range(40, 800, 40):
        page.paste((70, 70, 70), (700, y, 1160, y + 10))
    page.paste(pixels.resize((w, h)), (150, 160))
    return encode(np.asarray(page)), (150 / 1200, 160 / 800, 550 / 1200, (160 + h) / 800)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "coins"])
def test_a_centre_crop_of_half_each_side_is_found_only_when_verified(
    both: dict[str, Lookalike], name: str
) -> None:
    query = centre_half(name)
    assert name not in [m.filepath for m in both["unverified"].search(query, method="hybrid")]
    [match, *_] = both["verified"].search(query, method="hybrid")
    assert (match.filepath, match.verified, match.distance) == (name, True, SIGNATURE_SURE)
    assert match.region is not None
    assert iou(match.region.stored, (0.25, 0.25, 0.75, 0.75)) > 0.85
    assert iou(match.region.query, (0, 0, 1, 1)) > 0.9
    assert match.region.overlap == pytest.approx(0.25, abs=0.05)
    found = match.to_json()
    assert found["verified"] is True and found["score"] == pytest.approx(60.0)
    assert found["region"]["stored"] == [round(v, 4) for v in match.region.stored]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket"])
def test_a_photo_inside_a_page_is_found_where_it_is(both: dict[str, Lookalike], name: str) -> None:
    query, box = on_a_page(name)
    missed = both["unverified"].search(query, method="hybrid")
    assert name not in [m.filepath for m in missed]
    [match, *_] = both["verified"].search(query, method="embedding")
    assert match.filepath == name and match.verified and match.region is not None
    assert iou(match.region.query, box) > 0.85


def test_the_best_results_carry_their_verdict_and_a_plain_search_is_unchanged(
    both: dict[str, Lookalike],
) -> None:
    copy = encode(photo("rocket"), quality=40)
    [match, *_] = both["verified"].search(copy, method="hybrid")
    assert match.filepath == "rocket" and match.verified and match.region is not None
    assert match.region.overlap > 0.9
    plain = both["unverified"].search(copy, method="hybrid")[0]
    assert match.distance == plain.distance  # already closer than verification puts it
    assert "verified" not in plain.to_json() and plain.verified is None
    signature = both["verified"].search(copy, method="signature")[0]
    assert signature.verified is None  # the signature method verifies nothing


def test_a_stricter_cutoff_than_verification_gives_is_kept(both: dict[str, Lookalike]) -> None:
    query = centre_half("astronaut")
    found = both["verified"].search(query, method="hybrid", max_distance=0.3)
    assert "astronaut" not in [m.filepath for m in found]


def test_records_kept_without_a_thumbnail_still_search_unchecked(
    tmp_path: Path, model_cache: Path
) -> None:
    """A store written before thumbnails (or with them off) has nothing to verify with."""
    with opened(tmp_path, model_cache, "bare", thumbnails=False) as service:
        for name in PHOTOS:
            service.add(name, encode(photo(name)))
        [match, *_] = service.search(encode(photo("coffee"), quality=50), method="hybrid")
        assert match.filepath == "coffee" and match.verified is None
        assert service.search(centre_half("astronaut"), method="hybrid") == []


@pytest.mark.parametrize("name", ["brick", "grass", "gravel"])
def test_a_look_alike_the_embeddings_accept_is_rejected(
    tmp_path: Path, model_cache: Path, name: str
) -> None:
    """Two halves of one texture: another place, the same look. The embeddings put them
    within their cutoff; local features find no common geometry, and the match goes."""
    pixels = photo(name)
    width = pixels.shape[1]
    left = encode(np.ascontiguousarray(pixels[:, : width // 2]))
    right = encode(np.ascontiguousarray(pixels[:, width // 2 :]))
    found = {}
    for verifying in (False, True):
        with opened(tmp_path, model_cache, f"{name}-{verifying}", verify=verifying) as service:
            service.add("left half", left)
            found[verifying] = service.search(right, method="embedding")
    assert [m.filepath for m in found[False]] == ["left half"]
    assert found[True] == []
