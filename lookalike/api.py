"""The HTTP API, compatible with Match: ``create_app(service)`` builds it.

Every response is Match's envelope ``{"status", "error", "method", "result"}``.
Parameters arrive as form fields (urlencoded or multipart) or, for the read-only
endpoints, as query parameters. Errors are mapped to status codes in one place,
``STATUS_CODES``; nothing else here decides a status.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from . import __version__
from .config import Settings
from .errors import (
    BackendUnavailable,
    ConfigError,
    FetchError,
    ImageTooLarge,
    InvalidImage,
    InvalidRequest,
    LookalikeError,
    NotFound,
)
from .service import Lookalike

__all__ = ["STATUS_CODES", "app_from_environment", "create_app"]

log = logging.getLogger("lookalike.http")

# Most specific first: the first matching class decides.
STATUS_CODES: tuple[tuple[type[LookalikeError], int], ...] = (
    (ImageTooLarge, 413),
    (InvalidImage, 400),
    (InvalidRequest, 400),
    (FetchError, 400),
    (NotFound, 404),
    (BackendUnavailable, 503),
    (ConfigError, 500),
    (LookalikeError, 500),
)
_UNAUTHENTICATED = frozenset({"/ping", "/docs", "/openapi.json"})

Upload = Annotated[UploadFile | None, File(description="The image, as a file upload")]
FormText = Annotated[str | None, Form()]


def envelope(method: str, result: list[Any], errors: list[str] | None = None) -> dict[str, Any]:
    return {
        "status": "fail" if errors else "ok",
        "error": errors or [],
        "method": method,
        "result": result,
    }


METHOD_HELP = (
    "signature (copies: image-match's distance), embedding (look-alikes and crops: needs"
    " LOOKALIKE_EMBEDDINGS=true; distance 1 − cosine) or hybrid (both; each image at the"
    " better distance, embedding distances scaled onto the signature's cutoff)"
)


def create_app(service: Lookalike) -> FastAPI:
    """The Match-compatible API over one service."""
    settings = service.settings
    app = FastAPI(
        title="lookalike",
        version=__version__,
        description="Reverse image search, compatible with Match. Every response is "
        '`{"status": "ok"|"fail", "error": [...], "method": "...", "result": [...]}`.',
    )
    app.state.service = service

    async def image_of(upload: UploadFile | None, url: str | None, name: str) -> bytes:
        if upload is not None:
            return await upload.read()
        if url:
            return await run_in_threadpool(service.fetch, url)
        raise InvalidRequest(f"give the image as a file upload '{name}' or as a URL 'url'")

    @app.post("/add", summary="Add an image; the same filepath again replaces it")
    async def add(
        filepath: Annotated[str, Form(description="Key of the image: a path, URL or ID")],
        image: Upload = None,
        url: Annotated[str | None, Form(description="URL of the image")] = None,
        metadata: Annotated[str | None, Form(description="A JSON object to store")] = None,
    ) -> dict[str, Any]:
        meta = _json_object("metadata", metadata)
        content = await image_of(image, url, "image")
        await run_in_threadpool(service.add, filepath, content, meta)
        return envelope("add", [])

    @app.delete("/delete", summary="Delete the image stored under a filepath")
    async def delete(
        filepath_form: Annotated[str | None, Form(alias="filepath")] = None,
        filepath_query: Annotated[str | None, Query(alias="filepath")] = None,
    ) -> dict[str, Any]:
        filepath = filepath_form or filepath_query
        if not filepath:
            raise InvalidRequest("filepath is required")
        # Match answered ok when nothing was stored under the path; so do we.
        with contextlib.suppress(NotFound):
            await run_in_threadpool(service.delete, filepath)
        return envelope("delete", [])

    @app.post("/search", summary="Stored images like this one, best first")
    async def search(
        image: Upload = None,
        url: Annotated[str | None, Form(description="URL of the image")] = None,
        filepath: Annotated[
            str | None, Form(description="Search with the image stored under this filepath")
        ] = None,
        all_orientations: Annotated[
            str | None, Form(description="Also try 90° turns and mirrors (default true)")
        ] = None,
        limit: Annotated[int | None, Form(ge=1, description="Most results to return")] = None,
        min_score: Annotated[
            float | None, Form(ge=0, le=100, description="Only results scoring at least this")
        ] = None,
        filter: Annotated[
            str | None, Form(description="JSON object: metadata keys that must equal values")
        ] = None,
        method: Annotated[str | None, Form(description=METHOD_HELP)] = None,
        collapse: Annotated[
            str | None, Form(description="A metadata key: at most one result per value of it")
        ] = None,
    ) -> dict[str, Any]:
        where = _json_object("filter", filter)
        rotate = _boolean("all_orientations", all_orientations)
        if image is None and not url and filepath:
            matches = await run_in_threadpool(
                lambda: service.search_stored(
                    filepath,
                    limit=limit,
                    min_score=min_score,
                    where=where,
                    method=method,
                    collapse=collapse,
                )
            )
        else:
            content = await image_of(image, url, "image")
            matches = await run_in_threadpool(
                lambda: service.search(
                    content,
                    all_orientations=rotate,
                    limit=limit,
                    min_score=min_score,
                    where=where,
                    method=method,
                    collapse=collapse,
                )
            )
        return envelope("search", [m.to_json() for m in matches])

    @app.post("/compare", summary="How alike two images are, 0-100")
    async def compare(
        image1: Upload = None,
        url1: FormText = None,
        image2: Upload = None,
        url2: FormText = None,
        all_orientations: Annotated[
            str | None, Form(description="Let the second image be turned (default false)")
        ] = None,
        method: Annotated[str, Form(description=METHOD_HELP)] = "signature",
    ) -> dict[str, Any]:
        rotate = _boolean("all_orientations", all_orientations) or False
        first = await image_of(image1, url1, "image1")
        second = await image_of(image2, url2, "image2")
        result = await run_in_threadpool(
            lambda: service.compare(first, second, all_orientations=rotate, method=method)
        )
        return envelope("compare", [result.to_json()])

    async def count() -> dict[str, Any]:
        return envelope("count", [await run_in_threadpool(service.count)])

    async def listing(request: Request) -> dict[str, Any]:
        values: MutableMapping[str, Any] = dict(request.query_params)
        if request.method == "POST":
            values.update((k, v) for k, v in (await request.form()).items() if isinstance(v, str))
        offset = _integer("offset", values.get("offset"), 0)
        limit = _integer("limit", values.get("limit"), 20)
        return envelope("list", await run_in_threadpool(service.list, offset, limit))

    async def ping() -> dict[str, Any]:
        return envelope("ping", [])

    @app.get("/stats", summary="What the store holds: size, index, memory of this worker")
    async def stats() -> dict[str, Any]:
        return envelope("stats", [await run_in_threadpool(service.stats)])

    # Match answers these on GET and POST alike; one route per method keeps OpenAPI ids unique.
    for path, endpoint, summary in (
        ("/count", count, "How many images are stored"),
        ("/list", listing, "Stored filepaths, oldest first (offset, limit)"),
        ("/ping", ping, "Is the service up?"),
    ):
        for method in ("GET", "POST"):
            app.add_api_route(
                path,
                endpoint,
                methods=[method],
                summary=summary,
                operation_id=f"{path.strip('/')}_{method.lower()}",
            )

    _add_error_handlers(app)
    _add_middleware(app, settings)
    return app


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory``: each worker process builds its own service."""
    settings = Settings.from_env(os.environ)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    return create_app(Lookalike(settings))


# -- parameters -----------------------------------------------------------------------------


def _json_object(name: str, text: str | None) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"{name} is not valid JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be a JSON object")
    return value


def _boolean(name: str, text: str | None) -> bool | None:
    if text is None or text == "":
        return None
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"{name} must be true or false")


def _integer(name: str, text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number") from None
    if value < 0:
        raise InvalidRequest(f"{name} must be 0 or more")
    return value


# -- errors and middleware ------------------------------------------------------------------


def _method_of(request: Request) -> str:
    route = request.scope.get("route")
    return route.path.strip("/") if route is not None else ""


def _fail(
    request: Request,
    status: int,
    *messages: str,
    method: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The failure envelope; ``method`` defaults to the matched route's name."""
    name = _method_of(request) if method is None else method
    return JSONResponse(envelope(name, [], list(messages)), status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    async def lookalike_error(request: Request, error: Exception) -> JSONResponse:
        status = next(code for kind, code in STATUS_CODES if isinstance(error, kind))
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, error)
        return _fail(request, status, str(error))

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        messages = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in error.errors()
        ]
        return _fail(request, 400, *(messages or ["invalid request"]))

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        messages = {404: "no such endpoint", 405: "method not allowed for this endpoint"}
        message = messages.get(error.status_code, str(error.detail))
        return _fail(request, error.status_code, message, headers=error.headers)

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s crashed", request.method, request.url.path)
        return _fail(request, 500, "internal error")

    app.add_exception_handler(LookalikeError, lookalike_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    limit = 2 * settings.max_image_bytes + 1_000_000  # /compare carries two images

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        try:
            response = await _checked(request, call_next, settings, limit)
        except Exception:
            log.info("%s %s 500", request.method, request.url.path)
            raise
        log.info(
            "%s %s %d %.1f ms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
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
    if settings.api_key and request.url.path not in _UNAUTHENTICATED:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            challenge = {"WWW-Authenticate": "Bearer"}
            return _fail(request, 401, "missing or wrong API key", method=method, headers=challenge)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return _fail(request, 413, f"request body over {limit} bytes", method=method)
    if length is None and request.headers.get("transfer-encoding"):
        return _fail(request, 411, "send a Content-Length, not chunks", method=method)
    return await call_next(request)
