"""``lookalike serve``: uvicorn running the HTTP API, with a deadline on every request.

Each worker process gets the settings themselves, pickled with the app factory and the
uvicorn configuration; only the C libraries' knobs (malloc, BLAS threads) go through the
environment, which a process reads as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from .. import tuning
from ..api import app_from_settings
from ..config import Settings
from ..errors import ConfigError
from ..service import Lookalike

__all__ = ["DeadlineH11Protocol", "listen", "serve"]


def serve(settings: Settings) -> int:
    """Run uvicorn; each worker process builds its own service from these settings."""
    with Lookalike(settings) as service:  # fail now, in one line, if the store cannot open
        one_process = service.backend.one_process
    if settings.workers > 1 and one_process:
        print(f"lookalike: {one_process}: 1 worker, not {settings.workers}", file=sys.stderr)
        settings = settings.replace(workers=1)
    # This process first: tune_this_process leaves alone what the environment sets, and
    # the next call sets it for the workers: C libraries read it as a process starts.
    tuning.tune_this_process(tuning.SERVE_MMAP_THRESHOLD)
    tuning.prepare_worker_environment(
        blas_threads=1 if settings.workers > 1 else None,
        mmap_threshold=tuning.SERVE_MMAP_THRESHOLD,
    )
    if not settings.api_key and not _is_loopback(settings.host):
        print(
            f"lookalike: warning: listening on {settings.host} without LOOKALIKE_API_KEY: "
            "anyone who can reach this port can add and delete images",
            file=sys.stderr,
        )
    config = _Config(
        functools.partial(app_from_settings, settings),  # pickled to each worker: all it needs
        factory=True,
        http=DeadlineH11Protocol,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        access_log=False,  # the API logs one line per request itself
        server_header=False,
        request_timeout=settings.request_timeout,
    )
    if settings.workers == 1:
        uvicorn.Server(config).run()
        return 0
    # uvicorn's own listening socket has protocol 0, which the workers' asyncio takes as
    # "not TCP" and so leaves Nagle on: every answer then waited ~40 ms for a delayed ACK
    # (measured by bench/http.py). A socket made with IPPROTO_TCP gets TCP_NODELAY.
    print(f"lookalike: serving http://{settings.host}:{settings.port}", file=sys.stderr)
    with _metrics_folder():
        Multiprocess(config, sockets=[listen(settings.host, settings.port)]).run()
    return 0


@contextlib.contextmanager
def _metrics_folder() -> Iterator[None]:
    """A folder for the workers' metrics (prometheus_client's multiprocess mode), set in
    the environment they start with: the given ``PROMETHEUS_MULTIPROC_DIR`` emptied of an
    earlier run's counts, else a temporary one removed at the end."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for old in Path(given).glob("*.db"):
            old.unlink()
        yield
        return
    with tempfile.TemporaryDirectory(prefix="lookalike-metrics-") as temporary:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = temporary
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on reading each request: from its first
    byte (or the connection's opening) to the end of its body, ``request_timeout``
    seconds. uvicorn bounds only the idle time between requests, so a client sending
    headers or a body a byte at a time could hold a connection for ever. At the deadline
    a request whose headers have not all come is answered 408; one whose body has not is
    cut off. Module-level, so that uvicorn can hand it to worker processes."""

    _deadline: asyncio.TimerHandle | None = None

    @property
    def _timeout(self) -> float:
        return float(getattr(self.config, "request_timeout", Settings().request_timeout))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # a new request begins (or an idle connection speaks again)
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # received whole (DONE), or the connection is over

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self._timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = getattr(self, "cycle", None)  # the last request's, if any
        if self.conn.their_state is h11.IDLE and (cycle is None or cycle.response_complete):
            self.transport.write(_timeout_answer(self._timeout))  # the headers never came whole
        self.transport.close()


class _Config(uvicorn.Config):
    """uvicorn's configuration, with the request deadline ``DeadlineH11Protocol`` reads."""

    def __init__(self, *args: Any, request_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_timeout = request_timeout


@functools.cache
def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps(
        {"status": "fail", "error": [f"request not received within {seconds:g} s"],
         "method": "", "result": []}
    ).encode()  # fmt: skip
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPPROTO_TCP, so that workers set TCP_NODELAY on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
