"""``POST /add_batch`` on real servers on 127.0.0.1 over real SQLite stores: a multipart
batch and a JSON batch of URLs, each item's outcome through ``GET /jobs/<id>``, a bad item
failing alone, and the limits answered with 413."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Live
from .test_duplicates import finished


def started(live: Live, **request: Any) -> str:
    answer = live.call("POST", "/add_batch", **request)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "ok" and body["method"] == "add_batch"
    return str(body["result"][0]["job"])


def outcomes(live: Live, job: str) -> list[dict[str, Any]]:
    state = finished(live, job, limit=1000)
    assert state["state"] == "done", state
    assert state["kind"] == "add_batch" and state["fraction"] == 1.0
    return list(state["results"])


def multipart(*items: tuple[str, bytes, str | None]) -> dict[str, Any]:
    """A multipart batch: repeated image, filepath and metadata fields, paired by rank."""
    files = [
        ("image", (f"{i}.jpg", content, "image/jpeg")) for i, (_, content, _) in enumerate(items)
    ]
    data: dict[str, list[str]] = {"filepath": [path for path, _, _ in items]}
    if any(meta is not None for _, _, meta in items):
        data["metadata"] = [meta for _, _, meta in items if meta is not None]
    return {"files": files, "data": data}


def test_a_multipart_batch_adds_the_good_images_and_fails_the_bad_alone(
    live: Live, photo_bytes: dict[str, bytes]
) -> None:
    batch = multipart(
        ("cat.jpg", photo_bytes["chelsea"], '{"shelf": 1}'),
        ("broken.jpg", b"\xff\xd8\xff not a jpeg", "{}"),
        ("coffee.jpg", photo_bytes["coffee"], '{"shelf": 2}'),
        ("meta.jpg", photo_bytes["rocket"], "{not json"),
        ("cat.jpg", photo_bytes["astronaut"], "{}"),  # its filepath again
    )
    results = outcomes(live, started(live, **batch))
    assert [r["filepath"] for r in results] == [
        "cat.jpg", "broken.jpg", "coffee.jpg", "meta.jpg", "cat.jpg",
    ]  # fmt: skip
    assert [r["status"] for r in results] == ["added", "failed", "added", "failed", "failed"]
    assert "decode" in results[1]["error"] or "image" in results[1]["error"]
    assert "metadata is not valid JSON" in results[3]["error"]
    assert "earlier in the batch" in results[4]["error"]
    assert live.call("GET", "/count").json()["result"] == [2]
    found = live.call("POST", "/search", files={"image": photo_bytes["chelsea"]}).json()
    assert found["result"][0]["filepath"] == "cat.jpg"
    assert found["result"][0]["metadata"] == {"shelf": 1}

    again = multipart(
        ("cat.jpg", photo_bytes["chelsea"], '{"shelf": 1}'),  # the same: not rewritten
        ("coffee.jpg", photo_bytes["coffee"], '{"shelf": 3}'),  # new metadata
        ("rocket.jpg", photo_bytes["rocket"], "{}"),
    )
    results = outcomes(live, started(live, **again))
    assert [r["status"] for r in results] == ["unchanged", "replaced", "added"]
    assert live.call("GET", "/count").json()["result"] == [3]


def test_a_json_batch_fetches_its_urls_under_the_url_policy(
    start_server: Callable[..., Live], image_server: Any, photo_bytes: dict[str, bytes]
) -> None:
    live = start_server(url_allowlist="127.0.0.1/32")  # the image server, nothing else
    items = [
        {"filepath": "coins", "url": image_server.url("/coins.jpg", photo_bytes["coins"])},
        {"filepath": "metadata-server", "url": "http://169.254.169.254/latest/meta-data"},
        {"filepath": "missing", "url": image_server.url("/gone.jpg", b"") + "x"},
        {
            "filepath": "camera",
            "url": image_server.url("/camera.jpg", photo_bytes["camera"]),
            "metadata": {"by": "url"},
        },
        {"url": image_server.url("/nameless.jpg", photo_bytes["coffee"])},
        {"filepath": "odd", "url": "http://127.0.0.1/", "image": "base64?"},
    ]
    results = outcomes(live, started(live, json=items))
    assert [r["status"] for r in results] == [
        "added", "failed", "failed", "added", "failed", "failed",
    ]  # fmt: skip
    assert "169.254.169.254" in results[1]["error"]
    assert "404" in results[2]["error"]
    assert "filepath is required" in results[4]["error"]
    assert "unknown keys: image" in results[5]["error"]
    assert sorted(live.call("GET", "/list").json()["result"]) == ["camera", "coins"]
    found = live.call("POST", "/search", files={"image": photo_bytes["camera"]}).json()
    assert found["result"][0]["metadata"] == {"by": "url"}

    wrapped = outcomes(live, started(live, json={"items": items[:1]}))  # the other shape
    assert wrapped == [{"filepath": "coins", "status": "unchanged"}]


def test_the_limits_are_answered_with_413_and_nothing_is_added(
    start_server: Callable[..., Live], photo_bytes: dict[str, bytes]
) -> None:
    small = min(photo_bytes.values(), key=len)
    live = start_server(batch_max_items=2, batch_max_bytes=int(3.5 * len(small)))
    three = multipart(*((f"{i}", small, None) for i in range(3)))
    too_many = live.call("POST", "/add_batch", **three)
    assert too_many.status_code == 413, too_many.text
    assert too_many.json()["error"] == ["a batch holds at most 2 images"]
    urls = [{"filepath": f"{i}", "url": "http://example.invalid/"} for i in range(3)]
    assert live.call("POST", "/add_batch", json=urls).status_code == 413
    big = multipart(("0", small * 3, None), ("1", small, None))
    over = live.call("POST", "/add_batch", **big)
    assert over.status_code == 413 and "request body over" in over.json()["error"][0]
    assert live.call("GET", "/count").json()["result"] == [0]
    # a single /add keeps its own limit (two images' worth), not the batch's (the bytes
    # after a JPEG's end are ignored)
    alone = live.call("POST", "/add", data={"filepath": "c"}, files={"image": small * 4})
    assert alone.status_code == 200, alone.text


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (multipart(("a", b"x", None)) | {"data": {}}, "one filepath per image"),
        (multipart(("a", b"x", "{}"), ("b", b"y", None)), "one metadata per image"),
        ({"data": {"filepath": "a"}, "files": {"url": b"x"}}, "unknown fields for a batch: url"),
        ({"json": []}, "the batch holds no images"),
        ({"json": {"filepath": "a"}}, "a JSON list"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "valid JSON"),
        ({"data": {"filepath": "a"}}, "send multipart/form-data or application/json"),
    ],
)
def test_a_malformed_batch_is_a_400_that_changes_nothing(
    shared_live: Live, request_: dict[str, Any], message: str
) -> None:
    answer = shared_live.call("POST", "/add_batch", **request_)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["status"] == "fail" and body["method"] == "add_batch"
    assert message in body["error"][0], body
    assert shared_live.call("GET", "/count").json()["result"] == [0]


def test_batch_results_are_paged_like_every_job(live: Live, photo_bytes: dict[str, bytes]) -> None:
    names = sorted(photo_bytes)
    job = started(live, **multipart(*((n, photo_bytes[n], json.dumps({"n": n})) for n in names)))
    finished(live, job)
    page = finished(live, job, offset=1, limit=2)
    assert page["count"] == len(names) and page["offset"] == 1
    assert [r["filepath"] for r in page["results"]] == names[1:3]
