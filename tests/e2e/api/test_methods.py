"""The `method` parameter of /search and /compare over HTTP, with the real encoder."""

from __future__ import annotations

import pytest
from PIL import Image

from .test_contract import ENVELOPE_KEYS, ok


def off_centre_crop(image: Image.Image) -> Image.Image:
    """60 % of each side, off centre: a crop the signature cannot match."""
    w, h = int(image.width * 0.6), int(image.height * 0.6)
    return image.crop(
        (image.width // 10, image.height // 5, image.width // 10 + w, image.height // 5 + h)
    )


def test_search_and_compare_by_method(start_server, model_cache, photo_bytes, edit):
    live = start_server(embeddings=True, model_cache=str(model_cache), embedding_threads=1)
    for name in ("chelsea", "coffee", "rocket"):
        added = live.call(
            "POST", "/add", files={"image": (name, photo_bytes[name])}, data={"filepath": name}
        )
        assert ok(added, "add") == []
    query = {"image": ("q.jpg", edit("chelsea", off_centre_crop))}
    assert ok(live.call("POST", "/search", files=query), "search") == []  # signature default
    found = ok(live.call("POST", "/search", files=query, data={"method": "embedding"}), "search")
    assert found[0]["filepath"] == "chelsea" and found[0]["method"] == "embedding"
    assert 0 < found[0]["score"] < 100
    hybrid = ok(live.call("POST", "/search", files=query, data={"method": "hybrid"}), "search")
    assert hybrid[0]["filepath"] == "chelsea"
    by_path = ok(
        live.call("POST", "/search", data={"filepath": "coffee", "method": "embedding"}), "search"
    )
    assert by_path[0]["filepath"] == "coffee" and by_path[0]["score"] > 99.99
    compared = ok(
        live.call(
            "POST",
            "/compare",
            files={"image1": ("a", photo_bytes["chelsea"]), "image2": query["image"]},
            data={"method": "embedding", "all_orientations": "true"},
        ),
        "compare",
    )
    assert compared[0]["method"] == "embedding"
    assert compared[0]["orientation"] == found[0]["orientation"]
    # the same two images; the model's batches round a little differently
    assert compared[0]["score"] == pytest.approx(found[0]["score"], abs=0.01)


def test_bad_method_and_method_without_embeddings_are_400(live, photo_bytes):
    image = {"image": ("q.jpg", photo_bytes["coffee"])}
    for method, message in (("colour", "method must be one of"), ("embedding", "EMBEDDINGS")):
        response = live.call("POST", "/search", files=image, data={"method": method})
        assert response.status_code == 400
        body = response.json()
        assert set(body) == ENVELOPE_KEYS and body["status"] == "fail"
        assert message in body["error"][0]
    assert live.call("GET", "/ping").status_code == 200
