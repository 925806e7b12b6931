"""Bad input: a 4xx with a message in the envelope, the service still up, the store intact."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; the body is a few bytes of nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


@pytest.fixture
def redirector() -> Iterator[int]:
    """A local server whose every answer redirects to a private address."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/image.jpg")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def check_bad(live, response, status: int, message: str, count_before: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "fail"
    assert body["result"] == []
    assert any(message.lower() in e.lower() for e in body["error"]), body["error"]
    assert "Traceback" not in response.text
    assert live.call("GET", "/ping").status_code == 200
    assert live.call("GET", "/count").json()["result"] == [count_before]


CASES = {
    "no image": ("POST", "/search", {"data": {"all_orientations": "true"}}, 400, "give the image"),
    "no filepath": ("POST", "/add", {"files": {"image": b"x"}}, 400, "filepath"),
    "empty file": (
        "POST",
        "/add",
        {"files": {"image": b""}, "data": {"filepath": "e"}},
        400,
        "empty",
    ),
    "text as image": (
        "POST",
        "/add",
        {"files": {"image": b"hello, I am text\n" * 20}, "data": {"filepath": "t"}},
        400,
        "not a supported image",
    ),
    "huge header": (
        "POST",
        "/add",
        {"files": {"image": png_claiming(100_000, 100_000)}, "data": {"filepath": "h"}},
        413,
        "pixels",
    ),
    "metadata not json": (
        "POST",
        "/add",
        {"files": {"image": b"x"}, "data": {"filepath": "m", "metadata": "{nope"}},
        400,
        "metadata is not valid JSON",
    ),
    "metadata not object": (
        "POST",
        "/add",
        {"files": {"image": b"x"}, "data": {"filepath": "m", "metadata": "[1, 2]"}},
        400,
        "metadata must be a JSON object",
    ),
    "negative offset": ("GET", "/list", {"params": {"offset": "-1"}}, 400, "offset"),
    "non-integer limit": ("GET", "/list", {"params": {"limit": "ten"}}, 400, "limit"),
    "bad all_orientations": (
        "POST",
        "/search",
        {"files": {"image": b"x"}, "data": {"all_orientations": "maybe"}},
        400,
        "true or false",
    ),
    "bad search limit": (
        "POST",
        "/search",
        {"files": {"image": b"x"}, "data": {"limit": "0"}},
        400,
        "limit",
    ),
    "bad filter": (
        "POST",
        "/search",
        {"files": {"image": b"x"}, "data": {"filter": '{"a": {"b": 1}}'}},
        400,
        "filter",
    ),
    "unknown route": ("GET", "/nope", {}, 404, "no such endpoint"),
    "wrong method": ("GET", "/add", {}, 405, "method not allowed"),
    "delete without filepath": ("DELETE", "/delete", {}, 400, "filepath"),
    "url to loopback": (
        "POST",
        "/search",
        {"data": {"url": "http://127.0.0.1:9/x.jpg"}},
        400,
        "loopback",
    ),
    "url to private": (
        "POST",
        "/search",
        {"data": {"url": "http://10.0.0.1/x.jpg"}},
        400,
        "private",
    ),
    "url name resolving to loopback": (
        "POST",
        "/search",
        {"data": {"url": "http://localhost:9/x.jpg"}},
        400,
        "loopback",
    ),
    "url to link-local": (
        "POST",
        "/search",
        {"data": {"url": "http://169.254.169.254/latest"}},
        400,
        "refused",
    ),
    "url not http": ("POST", "/search", {"data": {"url": "file:///etc/passwd"}}, 400, "refused"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_table(shared_live, photo_bytes, case):
    """Each case on one shared server: "kept" is added (again: replaced) first, and the bad
    request must leave the count at 1."""
    live = shared_live
    live.call("POST", "/add", files={"image": photo_bytes["coins"]}, data={"filepath": "kept"})
    method, path, request, status, message = CASES[case]
    check_bad(live, live.call(method, path, **request), status, message, 1)
    assert (
        live.call("POST", "/search", files={"image": photo_bytes["coins"]}).json()["result"][0][
            "filepath"
        ]
        == "kept"
    )


def test_truncated_jpeg(live, photo_bytes):
    truncated = photo_bytes["chelsea"][: len(photo_bytes["chelsea"]) // 2]
    response = live.call("POST", "/add", files={"image": truncated}, data={"filepath": "t"})
    check_bad(live, response, 400, "truncated", 0)


def test_upload_over_the_limit(start_server, photo_bytes):
    live = start_server(max_image_bytes=10_000)
    response = live.call(
        "POST", "/add", files={"image": photo_bytes["chelsea"]}, data={"filepath": "big"}
    )
    check_bad(live, response, 413, "limit", 0)
    body = b"x" * 30_000  # over the whole-body limit: refused before it is read
    response = live.call("POST", "/add", files={"image": body * 2}, data={"filepath": "big"})
    check_bad(live, response, 413, "bytes", 0)


def test_redirect_to_a_private_address_is_refused(start_server, redirector):
    live = start_server(url_allowlist="127.0.0.1/32")
    response = live.call("POST", "/search", data={"url": f"http://127.0.0.1:{redirector}/a.jpg"})
    check_bad(live, response, 400, "10.0.0.1", 0)


def test_url_that_never_answers_times_out(start_server, silent_port):
    live = start_server(url_allowlist="127.0.0.1/32", fetch_timeout=1.0, fetch_connect_timeout=1.0)
    started = time.monotonic()
    response = live.call("POST", "/search", data={"url": f"http://127.0.0.1:{silent_port}/x.jpg"})
    check_bad(live, response, 400, "no complete answer within 1 s", 0)
    assert time.monotonic() - started < 10  # bounded: the fetch deadline held


def test_backend_down_is_503(live, photo_bytes, caplog):
    live.service.backend.close()  # the store goes away under a running server
    response = live.call(
        "POST", "/add", files={"image": photo_bytes["coins"]}, data={"filepath": "x"}
    )
    assert response.status_code == 503
    assert response.json()["status"] == "fail"
    assert live.call("GET", "/ping").status_code == 200
    # what the driver said, and where the store lives, is logged but not answered
    assert response.json()["error"] == ["the store is not available right now; try again later"]
    path = live.service.settings.backend.removeprefix("sqlite:///")
    assert any("SQLite store" in r.getMessage() for r in caplog.records)
    assert path not in response.text


def test_api_key_guards_everything_but_ping(start_server, photo_bytes):
    live = start_server(api_key="s3cret")
    assert live.call("GET", "/ping").status_code == 200
    refused = live.call("GET", "/count")
    assert refused.status_code == 401 and refused.json()["status"] == "fail"
    assert live.call("GET", "/count", headers={"Authorization": "Bearer wrong"}).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert live.call("GET", "/count", headers=good).json()["result"] == [0]
    added = live.call(
        "POST", "/add", files={"image": photo_bytes["coins"]}, data={"filepath": "k"}, headers=good
    )
    assert added.status_code == 200


def test_one_log_line_per_request_without_secrets(start_server, photo_bytes, caplog):
    live = start_server(api_key="s3cret-key")
    caplog.set_level("INFO", logger="lookalike.http")
    headers = {"Authorization": "Bearer s3cret-key"}
    live.call(
        "POST",
        "/add",
        files={"image": photo_bytes["coins"]},
        data={"filepath": "x"},
        headers=headers,
    )
    live.call("GET", "/nope", headers=headers)
    lines = [r.getMessage() for r in caplog.records if r.name == "lookalike.http"]
    assert len(lines) == 2
    assert lines[0].startswith("POST /add 200 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("GET /nope 404 ")
    assert not any("s3cret" in line for line in lines)
