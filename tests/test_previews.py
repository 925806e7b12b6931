"""What is kept to show an image: its sizes and thumbnail, made at add time from the
pixels already decoded, on a real SQLite store."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from PIL import Image

from lookalike import NotFound, Settings
from lookalike.images import THUMBNAIL_SIDE, thumbnail
from lookalike.records import MAX_THUMBNAIL_BYTES, Record
from lookalike.service import Lookalike


def opened(blob: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(blob))
    image.load()
    return image


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "store.db")


@pytest.fixture
def service(store_url: str) -> Lookalike:
    with Lookalike(Settings(backend=store_url)) as service:
        yield service


# -- the thumbnail ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "rocket"])
def test_thumbnail_is_a_small_jpeg_of_the_same_shape(name: str) -> None:
    pixels = photo(name)
    blob = thumbnail(pixels, MAX_THUMBNAIL_BYTES)
    image = opened(blob)
    assert image.format == "JPEG"
    assert max(image.size) == THUMBNAIL_SIDE
    height, width = pixels.shape[:2]
    assert abs(image.size[0] / image.size[1] - width / height) < 0.01
    assert len(blob) <= 20_000  # photos at 256 px: 6-16 KB
    # it is the same picture: the mean colour of each channel is kept
    small = np.asarray(image, dtype=float)
    assert np.abs(small.mean(axis=(0, 1)) - pixels.mean(axis=(0, 1))).max() < 4


def test_small_pictures_are_not_enlarged() -> None:
    pixels = photo("chelsea")[:100, :60]
    assert opened(thumbnail(np.ascontiguousarray(pixels), MAX_THUMBNAIL_BYTES)).size == (60, 100)


def test_a_thumbnail_over_the_budget_is_made_at_lower_quality_or_refused() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    best = thumbnail(noise, MAX_THUMBNAIL_BYTES)
    lower = thumbnail(noise, len(best) - 1)
    assert len(lower) < len(best)
    assert opened(lower).size == (256, 256)
    with pytest.raises(ValueError, match="fits"):
        thumbnail(noise, 1000)


# -- kept at add time ---------------------------------------------------------------------


def test_add_keeps_sizes_and_thumbnail(service: Lookalike, photo_bytes: dict[str, bytes]) -> None:
    service.add("cat.jpg", photo_bytes["chelsea"])
    preview = service.thumbnail("cat.jpg")
    assert (preview.width, preview.height) == (451, 300)
    assert preview.file_bytes == len(photo_bytes["chelsea"])
    assert preview.media_type == "image/jpeg"
    assert opened(preview.thumbnail).size == (256, 170)


def test_the_thumbnail_is_upright_as_the_picture_was_signed(service: Lookalike) -> None:
    """A camera's sideways JPEG (EXIF orientation 6) is kept upright: sizes and pixels."""
    pixels = photo("rocket")  # 640 wide, 427 high, upright
    sideways = np.ascontiguousarray(np.rot90(pixels, 1))  # as the sensor stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90° clockwise to show"
    out = io.BytesIO()
    Image.fromarray(sideways).save(out, "JPEG", quality=95, exif=exif)
    service.add("rocket.jpg", out.getvalue())
    preview = service.thumbnail("rocket.jpg")
    assert (preview.width, preview.height) == (640, 427)
    small = np.asarray(opened(preview.thumbnail), dtype=float)
    assert small.shape[:2] == (171, 256)
    expected = np.asarray(Image.fromarray(pixels).resize((256, 171)), dtype=float)
    assert np.abs(small - expected).mean() < 8  # not a turned picture: that is ~40 away


def test_fast_decode_keeps_the_full_size(store_url: str, photo_bytes: dict[str, bytes]) -> None:
    big = Image.fromarray(photo("astronaut")).resize((2048, 1536))
    out = io.BytesIO()
    big.save(out, "JPEG", quality=90)
    with Lookalike(Settings(backend=store_url, fast_decode=True)) as service:
        service.add("big.jpg", out.getvalue())
        preview = service.thumbnail("big.jpg")
    assert (preview.width, preview.height) == (2048, 1536)  # though decoded at half size
    assert opened(preview.thumbnail).size == (256, 192)


def test_without_thumbnails_the_sizes_are_kept(
    store_url: str, photo_bytes: dict[str, bytes]
) -> None:
    with Lookalike(Settings(backend=store_url, thumbnails=False)) as service:
        service.add("cat.jpg", photo_bytes["chelsea"])
        with pytest.raises(NotFound, match="no thumbnail"):
            service.thumbnail("cat.jpg")
        (match,) = service.search(photo_bytes["chelsea"])
        assert service.stats()["thumbnails"] is False
    assert (match.to_json()["width"], match.to_json()["height"]) == (451, 300)


def test_search_results_carry_the_sizes(service: Lookalike, photo_bytes: dict[str, bytes]) -> None:
    service.add("cat.jpg", photo_bytes["chelsea"], {"k": 1})
    service.add_many([Record("bare", service.signature(photo_bytes["chelsea"]))])
    found = {m.filepath: m.to_json() for m in service.search(photo_bytes["chelsea"])}
    assert found["cat.jpg"]["width"] == 451
    assert found["cat.jpg"]["height"] == 300
    assert found["cat.jpg"]["bytes"] == len(photo_bytes["chelsea"])
    # a record stored without a preview answers Match's keys alone, as before
    assert set(found["bare"]) == {
        "score",
        "filepath",
        "metadata",
        "distance",
        "orientation",
        "method",
    }
    by_stored = {m.filepath: m.to_json() for m in service.search_stored("cat.jpg")}
    assert by_stored["cat.jpg"]["width"] == 451 and "width" not in by_stored["bare"]


def test_add_files_keeps_previews(
    service: Lookalike, photo_files: dict[str, Path], photo_bytes: dict[str, bytes]
) -> None:
    files = [(f"photos/{name}.jpg", path) for name, path in photo_files.items()]
    outcomes = list(service.add_files(files, workers=2))
    assert all(outcome.error is None for outcome in outcomes)
    previews = service.backend.previews([name for name, _ in files])
    assert set(previews) == {name for name, _ in files}
    for name, path in files:
        assert previews[name].file_bytes == path.stat().st_size
        assert max(opened(previews[name].thumbnail).size) == THUMBNAIL_SIDE


def test_re_add_replaces_and_delete_removes(
    service: Lookalike, photo_bytes: dict[str, bytes]
) -> None:
    service.add("x", photo_bytes["chelsea"])
    first = service.thumbnail("x")
    service.add("x", photo_bytes["coffee"])
    second = service.thumbnail("x")
    assert second.thumbnail != first.thumbnail
    assert (second.width, second.height) == (600, 400)
    service.delete("x")
    with pytest.raises(NotFound):
        service.thumbnail("x")


def test_a_store_written_before_previews_opens_and_has_none(
    tmp_path: Path, store_url: str, photo_bytes: dict[str, bytes]
) -> None:
    with Lookalike(Settings(backend=store_url)) as service:
        service.add("old", photo_bytes["chelsea"])
    with sqlite3.connect(tmp_path / "store.db") as db:  # as the version before wrote it
        db.execute("DROP TABLE previews")
    with Lookalike(Settings(backend=store_url)) as service:
        (match,) = service.search(photo_bytes["chelsea"])
        assert match.filepath == "old" and "width" not in match.to_json()
        with pytest.raises(NotFound):
            service.thumbnail("old")
        service.add("new", photo_bytes["coffee"])
        assert service.thumbnail("new").width == 600
