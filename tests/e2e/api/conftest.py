"""Real uvicorn servers on 127.0.0.1 over real SQLite stores: one per test, or one per
module for tests that leave the store as they found it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from lookalike import Settings
from lookalike.api import create_app
from lookalike.service import Lookalike


@dataclass
class Live:
    url: str
    client: httpx.Client
    service: Lookalike

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, self.url + path, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Servers:
    """Servers started on 127.0.0.1 with Settings overrides, each on a SQLite file of its
    own in ``folder``; ``stop_all`` stops every one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[tuple[uvicorn.Server, threading.Thread, Live]] = []

    def start(self, **overrides: Any) -> Live:
        store = self.folder / f"store{len(self.running)}.db"
        settings = Settings(backend="sqlite:///" + str(store)).replace(**overrides)
        service = Lookalike(settings)
        port = free_port()
        config = uvicorn.Config(
            create_app(service), host="127.0.0.1", port=port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        live = Live(f"http://127.0.0.1:{port}", httpx.Client(timeout=30), service)
        self.running.append((server, thread, live))
        return live

    def stop_all(self) -> None:
        for server, thread, live in self.running:
            server.should_exit = True
            thread.join(timeout=10)
            live.client.close()
            live.service.close()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Live]]:
    """Start a server with Settings overrides; every server started is stopped at the end."""
    servers = Servers(tmp_path)
    yield servers.start
    servers.stop_all()


@pytest.fixture
def live(start_server: Callable[..., Live]) -> Live:
    return start_server()


@pytest.fixture(scope="module")
def shared_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server with default settings for all the tests of a module that leave its store
    as they found it (bad requests, which must change nothing)."""
    servers = Servers(tmp_path_factory.mktemp("shared-server"))
    yield servers.start()
    servers.stop_all()


class _Images:
    """A local HTTP server on 127.0.0.1 serving registered bytes by path."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )
        self._thread.start()

    def url(self, path: str, content: bytes) -> str:
        self.files[path] = content
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def image_server() -> Iterator[_Images]:
    server = _Images()
    yield server
    server.close()
