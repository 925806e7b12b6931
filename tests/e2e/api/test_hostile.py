"""Requests that once poisoned, stalled or exhausted the service (issue 13's table, by row),
each against a real server on 127.0.0.1: a 4xx with a message, the service still up, the
store intact. Most run on one `lookalike serve` with 2 workers shared by the module; those
that need a particular setting or a store prepared by hand start a server of their own."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.records import INVALID_METADATA, MAX_FILTER_KEYS

from .conftest import Servers
from .test_serve import Served, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("hostile")
    yield from serve(folder, "sqlite:///" + str(folder / "store.db"))


@pytest.fixture(scope="module")
def client(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def refused(response: httpx.Response, status: int, message: str) -> None:
    body = response.json()
    assert response.status_code == status, body
    assert body["status"] == "fail" and any(message in e for e in body["error"]), body
    assert "Traceback" not in response.text


def still_serving(client: httpx.Client) -> int:
    """/ping answers and /count is readable: the count, for checks that nothing changed."""
    assert client.get("/ping").json()["status"] == "ok"
    count: int = client.get("/count").json()["result"][0]
    return count


@pytest.fixture(scope="module")
def noise_png() -> bytes:
    """A small picture full of detail: quick to decode and sign."""
    return png(np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


# -- F1, F5: values that can be stored can be served ------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ('{"a": "\\ud800"}', "lone surrogate"),
        ('{"\\udfff": 1}', "lone surrogate"),
        ('{"a": ' * 40 + "1" + "}" * 40, "deeper than 32"),
        ('{"a": ' * 300 + "1" + "}" * 300, "deeper than 32"),
        ('{"a": ' * 10_000 + "1" + "}" * 10_000, "nests too deeply"),
        ('{"n": ' + "9" * 5000 + "}", "not valid JSON"),
        ('{"n": ' + str(2**64) + "}", "64 bits"),
        ('{"big": "' + "x" * 70_000 + '"}', "over 65536 bytes"),
    ],
    ids=[
        "surrogate",
        "surrogate-key",
        "depth-40",
        "depth-300",
        "depth-10000",
        "digits",
        "2^64",
        "size",
    ],
)
def test_metadata_that_could_not_be_served_is_refused(client, photo_bytes, metadata, message):
    before = still_serving(client)
    response = client.post(
        "/add", files={"image": photo_bytes["coins"]}, data={"filepath": "m", "metadata": metadata}
    )
    refused(response, 400, message)
    assert still_serving(client) == before


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (json.dumps({f"k{i}": i for i in range(MAX_FILTER_KEYS + 1)}), "at most 32"),
        (json.dumps({f"k{i}": i for i in range(991)}), "at most 32"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ('{"\\ud800": "a"}', "lone surrogate"),
        ('{"a": ' * 10_000 + "1" + "}" * 10_000, "nests too deeply"),
        ('{"n": ' + str(2**70) + "}", "beyond 64-bit"),
    ],
    ids=["33-keys", "991-keys", "surrogate-value", "surrogate-key", "depth-10000", "2^70"],
)
def test_malformed_filters_are_refused_not_500_or_503(client, photo_bytes, where, message):
    response = client.post("/search", files={"image": photo_bytes["coins"]}, data={"filter": where})
    refused(response, 400, message)
    still_serving(client)


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("/search", {"limit": str(2**63)}, "limit"),
        ("/search", {"limit": "10001"}, "limit"),
        ("/search", {"min_score": "NaN"}, "not NaN"),
        ("/search", {"min_score": "101"}, "from 0 to 100"),
    ],
)
def test_numbers_out_of_range_are_400(client, photo_bytes, path, data, message):
    response = client.post(path, files={"image": photo_bytes["coins"]}, data=data)
    refused(response, 400, message)


@pytest.mark.parametrize(
    "query", ["limit=9223372036854775808", "offset=9223372036854775808", "limit=100001"]
)
def test_list_bounds_are_400(client, query):
    refused(client.get(f"/list?{query}"), 400, "must be from 0 to")


def test_a_bad_record_written_before_these_rules_is_served_with_a_marker(
    start_server, photo_bytes, caplog
):
    """An older version stored metadata that cannot be served (a lone surrogate, deep
    nesting): searches that return it answer 200 with the marker, and a warning is logged."""
    live = start_server()
    for name in ("coins", "coffee"):
        live.call("POST", "/add", files={"image": photo_bytes[name]}, data={"filepath": name})
    path = live.service.settings.backend.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:  # as an older version wrote them
        db.execute("UPDATE images SET metadata = ? WHERE filepath = 'coins'", ['{"a": "\\ud800"}'])
        deep = '{"a": ' * 300 + "1" + "}" * 300
        db.execute("UPDATE images SET metadata = ? WHERE filepath = 'coffee'", [deep])
    for name in ("coins", "coffee"):
        response = live.call("POST", "/search", files={"image": photo_bytes[name]})
        assert response.status_code == 200, response.text
        (match,) = [m for m in response.json()["result"] if m["filepath"] == name]
        assert set(match["metadata"]) == {INVALID_METADATA}
        by_path = live.call("POST", "/search", data={"filepath": name})
        assert by_path.status_code == 200, by_path.text
    assert any("cannot be served" in r.getMessage() for r in caplog.records)


# -- F3, F5b: framing, and connections after an error -----------------------------------------


def exchange(url: str, raw: bytes, *, reads: int = 1) -> list[bytes]:
    """Send raw bytes on one connection; the answers to ``reads`` requests, in order."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(raw)
        buffer = b""
        for _ in range(reads):
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buffer += chunk
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            while len(rest) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                rest += chunk
            answers.append(head + b"\r\n\r\n" + rest[:length])
            buffer = rest[length:]
    return answers


def test_content_length_with_transfer_encoding_is_refused_before_the_body(server, client):
    """Both framings at once (Content-Length: 1 and chunked), then a body that would be
    200 MB: 400 at once, without reading it (the test sends only its first chunk)."""
    raw = (
        b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n"
        b"C800000\r\n" + b"x" * 65536
    )
    (answer,) = exchange(server.url, raw)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    still_serving(client)


def test_an_internal_error_leaves_a_keep_alive_connection_usable(start_server):
    """A 500 is an answer like any other: the next request on the same connection is
    answered too (or the 500 says Connection: close)."""
    live = start_server()

    def broken() -> int:
        raise RuntimeError("a bug")

    live.service.count = broken  # type: ignore[method-assign]
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    raw = request % b"/count" + request % b"/ping"
    first, second = exchange(live.url, raw, reads=2)
    assert first.startswith(b"HTTP/1.1 500"), first
    assert b'"internal error"' in first and b"a bug" not in first
    assert second.startswith(b"HTTP/1.1 200"), second
    assert b'"method":"ping"' in second


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`lookalike serve` that gives a client 1 s to send a whole request."""
    folder = tmp_path_factory.mktemp("impatient")
    yield from serve(folder, "sqlite:///" + str(folder / "store.db"), LOOKALIKE_REQUEST_TIMEOUT="1")


def answer_to(url: str, raw: bytes) -> bytes:
    """What the server sends back on a connection given ``raw`` and then nothing more,
    until it closes the connection (the socket gives up after 20 s)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(raw)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def test_headers_that_never_finish_get_408_and_a_close(impatient):
    answer = answer_to(impatient.url, b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"Connection: close" in answer and b"not received within 1 s" in answer


def test_a_body_that_never_finishes_is_cut_off(impatient):
    head = b"POST /add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
    answer = answer_to(impatient.url, head + b"Content-Type: image/jpeg\r\n\r\n\xff\xd8")
    assert not answer.startswith(b"HTTP/1.1 2"), answer  # closed, with or without a word
    with httpx.Client(base_url=impatient.url) as client:
        assert still_serving(client) == 0


def test_a_slow_but_steady_keep_alive_client_is_not_cut_off(impatient):
    """The deadline is per request: a connection may live longer than it, request after
    request, as long as each request arrives whole in time."""
    with httpx.Client(base_url=impatient.url) as client:
        for _ in range(3):
            assert client.get("/ping").status_code == 200
            time.sleep(0.6)  # 1.8 s on one connection, beyond the 1 s deadline


# -- F9, F10: ambiguity is refused; no paths to anonymous callers ------------------------------


def test_image_and_url_together_are_refused(client, photo_bytes):
    response = client.post(
        "/search", files={"image": photo_bytes["coins"]}, data={"url": "http://example.org/a"}
    )
    refused(response, 400, "not both")


def test_a_field_given_twice_is_refused(client, photo_bytes):
    before = still_serving(client)
    response = client.post(
        "/add",
        files=[
            ("image", ("a.jpg", photo_bytes["coins"])),
            ("filepath", (None, b"one")),
            ("filepath", (None, b"two")),
        ],
    )
    refused(response, 400, "filepath given more than once")
    refused(client.get("/list?limit=1&limit=2"), 400, "limit given more than once")
    assert still_serving(client) == before


@pytest.mark.parametrize(
    ("filepath", "message"),
    [
        (b"bad\xff\xfename.jpg", "not valid UTF-8"),
        (b"line\r\nbreak.jpg", "control characters"),
        (b"\x1b[31mred.jpg", "control characters"),
        (b"x" * 900_000, "over 4096 bytes"),
    ],
    ids=["invalid-utf8", "crlf", "ansi", "900kb"],
)
def test_filepaths_must_be_clean_text(client, photo_bytes, filepath, message):
    before = still_serving(client)
    response = client.post(
        "/add", files=[("image", ("a.jpg", photo_bytes["coins"])), ("filepath", (None, filepath))]
    )
    refused(response, 400, message)
    assert still_serving(client) == before


def test_stats_show_no_path_without_an_api_key(start_server):
    anonymous = start_server().call("GET", "/stats").json()["result"][0]
    assert "path" not in anonymous and anonymous["name"].endswith(".db")
    assert not any("/" in str(v) for v in anonymous.values())
    keyed = start_server(api_key="k").call("GET", "/stats", headers={"Authorization": "Bearer k"})
    assert keyed.json()["result"][0]["path"].startswith("/")


# -- O1, O3: blank images; HEAD -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2, 3), (300, 400, 3)], ids=["1x1", "2x2", "flat"])
def test_blank_images_are_refused_when_the_signature_is_the_only_method(client, shape):
    blank = png(np.full(shape, 128, dtype=np.uint8))
    before = still_serving(client)
    refused(client.post("/add", files={"image": blank}, data={"filepath": "b"}), 400, "no detail")
    refused(client.post("/search", files={"image": blank}), 400, "no detail")
    compared = client.post("/compare", files={"image1": blank, "image2": blank})
    refused(compared, 400, "no detail")
    assert still_serving(client) == before


@pytest.mark.parametrize("path", ["/ping", "/count", "/list", "/stats"])
def test_head_works_wherever_get_does(client, path):
    response = client.head(path)
    assert response.status_code == 200 and response.content == b""


# -- F2: bounded work per worker ------------------------------------------------------------


def test_a_request_beyond_the_decode_slots_waits_then_gets_503_with_retry_after(
    start_server, photo_bytes
):
    """With one decode slot taken (here by the test itself, as by a long decode), a search
    waits up to decode_wait for it, then is told to retry; once the slot is free it runs."""
    live = start_server(max_decodes=1, decode_wait=0.2)
    with live.service._decoding():
        busy = live.call("POST", "/search", files={"image": photo_bytes["coins"]})
        refused(busy, 503, "busy")
        assert busy.headers["Retry-After"] == "1"
        assert live.call("GET", "/ping").status_code == 200  # no decode: not held up
    assert live.call("POST", "/search", files={"image": photo_bytes["coins"]}).status_code == 200


# -- every storable value can be served: a property ---------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, categories=None), max_size=8)  # surrogates included
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def property_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    servers = Servers(tmp_path_factory.mktemp("property"))
    yield servers.start()
    servers.stop_all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    metadata=st.dictionaries(
        st.text(st.characters(codec=None), max_size=5), JSON_VALUES, max_size=4
    ),
    depth=st.integers(0, 40),
)
def test_metadata_is_refused_or_served_by_every_search_that_finds_it(
    property_server, noise_png, metadata, depth
):
    """Arbitrary JSON (any Unicode, surrogates too; big integers; nesting up to 40 more
    levels): /add answers 400 with a message, or the record round-trips and the searches
    that return it (by image, by filepath, filtered on its own keys) all answer 200."""
    live = property_server
    for _ in range(depth):
        metadata = {"n": metadata}
    text = json.dumps(metadata)  # lone surrogates travel as \\ud800 escapes
    added = live.call(
        "POST", "/add", files={"image": noise_png}, data={"filepath": "p", "metadata": text}
    )
    if added.status_code == 400:
        assert added.json()["error"], added.text
        return
    assert added.status_code == 200, added.text
    by_image = live.call("POST", "/search", files={"image": noise_png})
    assert by_image.status_code == 200, by_image.text
    (found,) = [m for m in by_image.json()["result"] if m["filepath"] == "p"]
    assert found["metadata"] == json.loads(text)
    assert live.call("POST", "/search", data={"filepath": "p"}).status_code == 200
    scalars = {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)}
    filtered = live.call(
        "POST", "/search", files={"image": noise_png}, data={"filter": json.dumps(scalars)}
    )
    if all(scalars):  # a filter key must not be empty; a metadata key may be
        assert filtered.status_code == 200, filtered.text
        assert "p" in [m["filepath"] for m in filtered.json()["result"]]
    else:
        refused(filtered, 400, "non-empty")
