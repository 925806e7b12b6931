"""``GET /thumbnail`` and the sizes ``/search`` adds, on a real server on 127.0.0.1."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image

from .conftest import Live


def add(live: Live, filepath: str, content: bytes) -> None:
    answer = live.call("POST", "/add", data={"filepath": filepath}, files={"image": content})
    assert answer.status_code == 200, answer.text


def test_the_thumbnail_is_served_as_an_image_with_validators(
    live: Live, photo_bytes: dict[str, bytes]
) -> None:
    add(live, "cats/chelsea.jpg", photo_bytes["chelsea"])
    answer = live.call("GET", "/thumbnail", params={"filepath": "cats/chelsea.jpg"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "private, no-cache"
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert Image.open(io.BytesIO(answer.content)).size == (256, 170)

    tag = answer.headers["etag"]
    again = live.call(
        "GET", "/thumbnail", params={"filepath": "cats/chelsea.jpg"}, headers={"If-None-Match": tag}
    )
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == tag
    head = live.call("HEAD", "/thumbnail", params={"filepath": "cats/chelsea.jpg"})
    assert head.status_code == 200 and head.headers["etag"] == tag

    add(live, "cats/chelsea.jpg", photo_bytes["coffee"])  # another image under the name
    changed = live.call(
        "GET", "/thumbnail", params={"filepath": "cats/chelsea.jpg"}, headers={"If-None-Match": tag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != tag


def test_no_thumbnail_is_a_404_in_the_envelope(
    start_server: Callable[..., Live], photo_bytes: dict[str, bytes]
) -> None:
    live = start_server(thumbnails=False)
    add(live, "a.jpg", photo_bytes["chelsea"])
    for filepath in ("a.jpg", "never-stored.jpg"):
        answer = live.call("GET", "/thumbnail", params={"filepath": filepath})
        assert answer.status_code == 404
        body = answer.json()
        assert body["status"] == "fail" and body["method"] == "thumbnail"
        assert "no thumbnail" in body["error"][0]
    missing = live.call("GET", "/thumbnail")
    assert missing.status_code == 400 and missing.json()["error"] == ["filepath is required"]
    stats = live.call("GET", "/stats").json()["result"][0]
    assert stats["thumbnails"] is False


def test_search_results_gain_the_sizes(live: Live, photo_bytes: dict[str, bytes]) -> None:
    add(live, "coffee.jpg", photo_bytes["coffee"])
    answer = live.call("POST", "/search", files={"image": photo_bytes["coffee"]}).json()
    (result,) = answer["result"]
    # Match's keys first, with their meaning unchanged; the sizes are extra keys
    assert list(result)[:3] == ["score", "filepath", "metadata"]
    assert result["score"] == 100.0
    assert (result["width"], result["height"]) == (600, 400)
    assert result["bytes"] == len(photo_bytes["coffee"])
    assert live.call("GET", "/stats").json()["result"][0]["thumbnails"] is True


def test_the_thumbnail_needs_the_api_key(
    start_server: Callable[..., Live], photo_bytes: dict[str, bytes]
) -> None:
    live = start_server(api_key="s3cret")
    key = {"Authorization": "Bearer s3cret"}
    live.call(
        "POST", "/add", data={"filepath": "a"}, files={"image": photo_bytes["chelsea"]}, headers=key
    ).raise_for_status()
    assert live.call("GET", "/thumbnail", params={"filepath": "a"}).status_code == 401
    answer = live.call("GET", "/thumbnail", params={"filepath": "a"}, headers=key)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
