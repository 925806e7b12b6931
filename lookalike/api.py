"""The HTTP API, compatible with Match: ``create_app(service)`` builds it.

Every response is Match's envelope ``{"status", "error", "method", "result"}``.
Parameters arrive as form fields (urlencoded or multipart) or, for the read-only
endpoints, as query parameters. lookalike's own errors are mapped to status codes in
one place, ``STATUS_CODES``. Two other places answer before an endpoint runs: the
middleware's checks of access and framing (401 for the API key; 400 for two framings,
411 for chunks, 413 for a body over the limit; 400 for a text field that is not UTF-8),
and the framework's own errors (404, 405, and 400 for a parameter of the wrong type).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .config import VERSION, Settings
from .errors import (
    BackendUnavailable,
    ConfigError,
    FetchError,
    ImageTooLarge,
    InvalidImage,
    InvalidRequest,
    LookalikeError,
    NotFound,
    Overloaded,
)
from .records import INT64_RANGE, MAX_METADATA_BYTES
from .service import Lookalike

__all__ = ["STATUS_CODES", "app_from_environment", "app_from_settings", "create_app"]

log = logging.getLogger("lookalike.http")

# Most specific first: the first matching class decides.
STATUS_CODES: tuple[tuple[type[LookalikeError], int], ...] = (
    (ImageTooLarge, 413),
    (InvalidImage, 400),
    (InvalidRequest, 400),
    (FetchError, 400),
    (NotFound, 404),
    (BackendUnavailable, 503),
    (Overloaded, 503),
    (ConfigError, 500),
    (LookalikeError, 500),
)
_DOCS_ASSETS = "/docs-assets"
_UNAUTHENTICATED = frozenset({"/ping", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
_UNAVAILABLE = "the store is not available right now; try again later"
_CLOSE = {"Connection": "close"}  # the body that follows is not read

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
    app = FastAPIOffline(  # /docs loads Swagger UI from the package: it works offline
        redoc_url=None,
        static_url=_DOCS_ASSETS,
        title="lookalike",
        version=VERSION,
        description="Reverse image search, compatible with Match. Every response is "
        '`{"status": "ok"|"fail", "error": [...], "method": "...", "result": [...]}`.',
        dependencies=[Depends(_each_field_once)],
    )

    async def image_of(upload: UploadFile | None, url: str | None, name: str) -> bytes:
        if upload is not None and url:
            raise InvalidRequest(f"give the image either as '{name}' or as a URL, not both")
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
        limit: Annotated[
            int | None, Form(ge=1, le=MAX_RESULTS, description="Most results to return")
        ] = None,
        min_score: Annotated[
            str | None, Form(description="Only results scoring at least this (0 to 100)")
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
        least = _score("min_score", min_score)
        if image is None and not url and filepath:
            matches = await run_in_threadpool(
                lambda: service.search_stored(
                    filepath,
                    limit=limit,
                    min_score=least,
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
                    min_score=least,
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
        offset = _integer("offset", values.get("offset"), 0, INT64_RANGE[1])
        limit = _integer("limit", values.get("limit"), 20, MAX_LISTED)
        return envelope("list", await run_in_threadpool(service.list, offset, limit))

    async def ping() -> dict[str, Any]:
        return envelope("ping", [])

    @app.get("/stats", summary="What the store holds: size, index, memory of this worker")
    async def stats() -> dict[str, Any]:
        facts = await run_in_threadpool(service.stats)
        # Where the store lives is the operator's business: shown only behind the key.
        return envelope("stats", [facts if settings.api_key else _without_locations(facts)])

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

    # HEAD wherever GET is answered (the same answer without its body), kept out of the
    # schema so that every operation keeps one id.
    for path, endpoint in (
        ("/count", count),
        ("/list", listing),
        ("/ping", ping),
        ("/stats", stats),
    ):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    _add_error_handlers(app)
    _add_middleware(app, settings)
    return app


def app_from_settings(settings: Settings) -> FastAPI:
    """The API over a new service: what each worker process of ``lookalike serve`` runs."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    return create_app(Lookalike(settings))


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory``: the settings from this process's environment."""
    return app_from_settings(Settings.from_env(os.environ))


# -- parameters -----------------------------------------------------------------------------


MAX_RESULTS = 10_000
"""Most results one search may ask for (``limit``)."""
MAX_LISTED = 100_000
"""Most filepaths one ``/list`` may ask for."""
_SINGLE_VALUED = frozenset(
    {
        "image", "url", "filepath", "metadata", "all_orientations", "limit", "min_score",
        "filter", "method", "collapse", "image1", "url1", "image2", "url2", "offset",
    }
)  # fmt: skip


async def _each_field_once(request: Request) -> None:
    """Refuse a parameter given twice (in the query, the form, or both): which one was
    meant cannot be known, and frameworks disagree on which they take."""
    names = [name for name, _ in request.query_params.multi_items()]
    if request.method not in ("GET", "HEAD") and request.headers.get("content-type", "").startswith(
        ("multipart/form-data", "application/x-www-form-urlencoded")
    ):
        names += [name for name, _ in (await request.form()).multi_items()]
    repeated = sorted({n for n in names if n in _SINGLE_VALUED and names.count(n) > 1})
    if repeated:
        raise InvalidRequest(f"{', '.join(repeated)} given more than once")


def _json_object(name: str, text: str | None) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    if len(text) > 2 * MAX_METADATA_BYTES:
        raise InvalidRequest(f"{name} is over {2 * MAX_METADATA_BYTES} characters")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"{name} is not valid JSON: {error.msg}") from None
    except RecursionError:
        raise InvalidRequest(f"{name} nests too deeply") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise InvalidRequest(f"{name} is not valid JSON: {error}") from None
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


def _integer(name: str, text: str | None, default: int, most: int) -> int:
    if text is None or text == "":
        return default
    if len(text) > 40:  # no int() of an arbitrarily long number
        raise InvalidRequest(f"{name} must be from 0 to {most}")
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number") from None
    if not 0 <= value <= most:
        raise InvalidRequest(f"{name} must be from 0 to {most}")
    return value


def _score(name: str, text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number from 0 to 100") from None
    if math.isnan(value):
        raise InvalidRequest(f"{name} must be a number from 0 to 100, not NaN")
    if not 0 <= value <= 100:
        raise InvalidRequest(f"{name} must be from 0 to 100")
    return value


_LOCATIONS = ("path", "url")


def _without_locations(facts: dict[str, Any]) -> dict[str, Any]:
    """Stats without the store's filesystem path or URL; a file keeps its name."""
    shown = {key: value for key, value in facts.items() if key not in _LOCATIONS}
    if isinstance(facts.get("path"), str):
        shown["name"] = PurePath(facts["path"]).name
    return shown


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
        message = str(error)
        if status >= 500 and not isinstance(error, Overloaded):
            # The store's own words (driver errors, file paths) go to the log, not to clients.
            log.error("%s %s failed: %s", request.method, request.url.path, error)
            message = _UNAVAILABLE if status == 503 else "internal error"
        retry = {"Retry-After": "1"} if isinstance(error, Overloaded) else None
        return _fail(request, status, message, headers=retry)

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
            # Answered here rather than by Starlette's outermost handler, which answers
            # and then re-raises to the server, which drops the keep-alive connection.
            log.exception("%s %s crashed", request.method, request.url.path)
            response = _fail(request, 500, "internal error", method=request.url.path.strip("/"))
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
    public = request.url.path in _UNAUTHENTICATED or request.url.path.startswith(_DOCS_ASSETS + "/")
    if settings.api_key and not public:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            challenge = {"WWW-Authenticate": "Bearer"}
            return _fail(request, 401, "missing or wrong API key", method=method, headers=challenge)
    length = request.headers.get("content-length")
    if length is not None and request.headers.get("transfer-encoding"):
        # Two framings: proxies and servers may each pick another one (request smuggling).
        message = "send either Content-Length or Transfer-Encoding, not both"
        return _fail(request, 400, message, method=method, headers=_CLOSE)
    if length is not None and (not length.isdigit() or int(length) > limit):
        return _fail(request, 413, f"request body over {limit} bytes", method=method)
    if length is None and request.headers.get("transfer-encoding"):
        return _fail(request, 411, "send a Content-Length, not chunks", method=method)
    boundary = _multipart_boundary(request.headers.get("content-type", ""))
    if boundary is not None:
        # Starlette reads a text field that is not UTF-8 as Latin-1, silently: check the
        # bytes here, while they are still bytes (the body is read once and handed on).
        name = _field_not_utf8(await request.body(), boundary)
        if name is not None:
            return _fail(request, 400, f"{name} is not valid UTF-8", method=method)
    return await call_next(request)


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
