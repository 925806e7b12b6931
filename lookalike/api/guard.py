"""The middleware: access (the API key) and framing (one framing, a bounded body, UTF-8
text fields), checked before a request is routed, and one log line per request."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request

from .. import metrics
from ..config import Settings
from .batch import PATH as BATCH_PATH
from .responses import fail

__all__ = ["DOCS_ASSETS", "add_guard"]

log = logging.getLogger("lookalike.http")

DOCS_ASSETS = "/docs-assets"
WEB_PATH = "/web"
_UNAUTHENTICATED = frozenset(
    {"/", "/ping", "/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
)
_PUBLIC_FOLDERS = (DOCS_ASSETS + "/", WEB_PATH + "/")
# Every answer: the page runs only its own scripts and styles, shows images from here
# (thumbnails arrive as blobs fetched with the API key), and no one may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_CLOSE = {"Connection": "close"}  # the body that follows is not read


def add_guard(app: FastAPI, settings: Settings) -> None:
    limits = {
        "": 2 * settings.max_image_bytes + 1_000_000,  # /compare carries two images
        BATCH_PATH: settings.batch_max_bytes,
    }

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        try:
            limit = limits.get(request.url.path, limits[""])
            response = await _checked(request, call_next, settings, limit)
        except Exception:
            # Answered here rather than by Starlette's outermost handler, which answers
            # and then re-raises to the server, which drops the keep-alive connection.
            log.exception("%s %s crashed", request.method, request.url.path)
            response = fail(request, 500, "internal error", method=request.url.path.strip("/"))
        elapsed = time.perf_counter() - started
        endpoint = _endpoint(request, app)
        metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(endpoint).observe(elapsed)
        for name, value in SECURITY_HEADERS.items():
            # Swagger UI (/docs) runs inline scripts: it keeps its own policy.
            if name != "Content-Security-Policy" or not request.url.path.startswith("/docs"):
                response.headers.setdefault(name, value)
        log.info(
            "%s %s %d %.1f ms",
            request.method,
            request.url.path,
            response.status_code,
            elapsed * 1000,
        )
        return response


async def _checked(
    request: Request,
    call_next: Callable[[Request], Awaitable[Any]],
    settings: Settings,
    limit: int,
) -> Any:
    # Before routing, so the envelope is named after the path rather than the route.
    method = request.url.path.strip("/")
    public = (
        request.url.path in _UNAUTHENTICATED
        or request.url.path.startswith(_PUBLIC_FOLDERS)
        or (request.url.path == "/metrics" and settings.metrics_public)
    )
    if settings.api_key and not public:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            challenge = {"WWW-Authenticate": "Bearer"}
            return fail(request, 401, "missing or wrong API key", method=method, headers=challenge)
    length = request.headers.get("content-length")
    if length is not None and request.headers.get("transfer-encoding"):
        # Two framings: proxies and servers may each pick another one (request smuggling).
        message = "send either Content-Length or Transfer-Encoding, not both"
        return fail(request, 400, message, method=method, headers=_CLOSE)
    if length is not None and (not length.isdigit() or int(length) > limit):
        return fail(request, 413, f"request body over {limit} bytes", method=method)
    if length is None and request.headers.get("transfer-encoding"):
        return fail(request, 411, "send a Content-Length, not chunks", method=method)
    boundary = _multipart_boundary(request.headers.get("content-type", ""))
    if boundary is not None:
        # Starlette reads a text field that is not UTF-8 as Latin-1, silently: check the
        # bytes here, while they are still bytes (the body is read once and handed on).
        name = _field_not_utf8(await request.body(), boundary)
        if name is not None:
            return fail(request, 400, f"{name} is not valid UTF-8", method=method)
    return await call_next(request)


def _endpoint(request: Request, app: FastAPI) -> str:
    """The route a request reached, as its path template (``/jobs/{job}``: few label
    values), or the route of its path when it was answered before routing (a 401, a
    413); ``/web/`` for the page's files, ``other`` for an unknown path."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if any(getattr(r, "path", None) == request.url.path for r in app.routes):
        return request.url.path
    if request.url.path.startswith(_PUBLIC_FOLDERS):
        return "/" + request.url.path.split("/")[1] + "/"
    return "other"


def _multipart_boundary(content_type: str) -> bytes | None:
    kind, _, options = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for option in options.split(";"):
        key, _, value = option.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1", "replace")
    return None


def _field_not_utf8(body: bytes, boundary: bytes) -> str | None:
    """The name of the first text field (a part without a filename) of a multipart body
    whose value is not UTF-8, or None. File parts are skipped, not copied."""
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    while start != -1:
        head_start = start + len(delimiter) + 2  # past the CRLF after the delimiter
        head_end = body.find(b"\r\n\r\n", head_start)
        end = body.find(b"\r\n" + delimiter, head_start)
        if head_end == -1 or end == -1 or head_end > end:
            return None  # the end, or a malformed body: the form parser will judge it
        headers = body[head_start:head_end]
        if b"filename=" not in headers:
            try:
                body[head_end + 4 : end].decode("utf-8")
            except UnicodeDecodeError:
                _, _, rest = headers.partition(b'name="')
                return rest.partition(b'"')[0].decode("latin-1") or "a form field"
        start = end + 2
    return None
