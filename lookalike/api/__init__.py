"""The HTTP API, compatible with Match: ``create_app(service)`` builds it.

Every response is Match's envelope ``{"status", "error", "method", "result"}``.
Parameters arrive as form fields (urlencoded or multipart) or, for the read-only
endpoints, as query parameters. lookalike's own errors are mapped to status codes in
one place, ``responses.STATUS_CODES``; every parameter is read by ``parameters``. Two
other places answer before an endpoint runs: the middleware's checks of access and
framing (``guard``: 401 for the API key; 400 for two framings, 411 for chunks, 413 for a
body over the limit; 400 for a text field that is not UTF-8), and the framework's own
errors (404, 405, and 400 for a malformed form).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path, PurePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from ..config import VERSION, Settings
from ..errors import InvalidRequest, NotFound
from ..records import INT64_RANGE
from ..service import Lookalike
from .batch import add_batch_routes
from .guard import DOCS_ASSETS, WEB_PATH, add_guard
from .health import add_health_routes
from .jobs import add_job_routes
from .parameters import (
    MAX_LISTED,
    MAX_RESULTS,
    METHOD_HELP,
    boolean,
    each_field_once,
    integer,
    json_object,
    score,
)
from .responses import STATUS_CODES, add_error_handlers, envelope

__all__ = ["STATUS_CODES", "app_from_environment", "app_from_settings", "create_app"]

log = logging.getLogger("lookalike.http")

WEB = Path(__file__).resolve().parent.parent / "web"
"""The page's static files (HTML, CSS, JavaScript), shipped in the package."""

Upload = Annotated[UploadFile | None, File(description="The image, as a file upload")]
FormText = Annotated[str | None, Form()]


def create_app(service: Lookalike) -> FastAPI:
    """The Match-compatible API over one service."""
    settings = service.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(service.stop_workers)  # the signing processes go with it

    app = FastAPIOffline(  # /docs loads Swagger UI from the package: it works offline
        lifespan=lifespan,
        redoc_url=None,
        static_url=DOCS_ASSETS,
        title="lookalike",
        version=VERSION,
        description="Reverse image search, compatible with Match. Every response is "
        '`{"status": "ok"|"fail", "error": [...], "method": "...", "result": [...]}`.',
        dependencies=[Depends(each_field_once)],
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
        filepath: Annotated[
            str | None, Form(description="Key of the image: a path, URL or ID (required)")
        ] = None,
        image: Upload = None,
        url: Annotated[str | None, Form(description="URL of the image")] = None,
        metadata: Annotated[str | None, Form(description="A JSON object to store")] = None,
        report: Annotated[
            str | None,
            Form(
                description="true: answer [{filepath, status}], status added, replaced or"
                " unchanged (the same bytes and metadata: nothing rewritten)"
            ),
        ] = None,
    ) -> dict[str, Any]:
        if filepath is None:
            raise InvalidRequest("filepath is required")
        meta = json_object("metadata", metadata)
        reported = boolean("report", report) or False
        content = await image_of(image, url, "image")
        record, status = await run_in_threadpool(service.add_reported, filepath, content, meta)
        result = [{"filepath": record.filepath, "status": status}] if reported else []
        return envelope("add", result)

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
            str | None, Form(description=f"Most results to return (1 to {MAX_RESULTS})")
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
        where = json_object("filter", filter)
        rotate = boolean("all_orientations", all_orientations)
        least = score("min_score", min_score)
        count = integer("limit", limit, None, MAX_RESULTS, least=1)
        if image is None and not url and filepath:
            matches = await run_in_threadpool(
                lambda: service.search_stored(
                    filepath,
                    limit=count,
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
                    limit=count,
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
        rotate = boolean("all_orientations", all_orientations) or False
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
        offset = integer("offset", values.get("offset"), 0, INT64_RANGE[1])
        limit = integer("limit", values.get("limit"), 20, MAX_LISTED)
        return envelope("list", await run_in_threadpool(service.list, offset, limit))

    async def ping() -> dict[str, Any]:
        return envelope("ping", [])

    async def thumbnail(
        request: Request,
        filepath: Annotated[str | None, Query(description="Filepath of a stored image")] = None,
    ) -> Response:
        if not filepath:
            raise InvalidRequest("filepath is required")
        found = await run_in_threadpool(service.thumbnail, filepath)
        assert found.thumbnail is not None
        # Revalidated on each use (a re-added image gets a new thumbnail), cheaply: 304.
        tag = f'"{hashlib.sha256(found.thumbnail).hexdigest()[:32]}"'
        headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
        wanted = {t.strip() for t in request.headers.get("if-none-match", "").split(",")}
        if tag in wanted or f"W/{tag}" in wanted or "*" in wanted:
            return Response(status_code=304, headers=headers)
        return Response(found.thumbnail, media_type=found.media_type, headers=headers)

    app.add_api_route(
        "/thumbnail",
        thumbnail,
        methods=["GET"],
        summary="The thumbnail kept of a stored image (JPEG, long side 256 px)",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "The thumbnail"}},
    )

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
    app.add_api_route("/thumbnail", thumbnail, methods=["HEAD"], include_in_schema=False)

    add_job_routes(app, service)
    add_batch_routes(app, service)
    add_health_routes(app, service)

    # The page: static files of the package, no build step, talking only to this API.
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8")

    app.mount(WEB_PATH, StaticFiles(directory=WEB), name="web")

    add_error_handlers(app)
    add_guard(app, settings)
    return app


def app_from_settings(settings: Settings) -> FastAPI:
    """The API over a new service: what each worker process of ``lookalike serve`` runs."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    return create_app(Lookalike(settings))


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory``: the settings from this process's environment."""
    return app_from_settings(Settings.from_env(os.environ))


_LOCATIONS = ("path", "url")


def _without_locations(facts: dict[str, Any]) -> dict[str, Any]:
    """Stats without the store's filesystem path or URL; a file keeps its name."""
    shown = {key: value for key, value in facts.items() if key not in _LOCATIONS}
    if isinstance(facts.get("path"), str):
        shown["name"] = PurePath(facts["path"]).name
    return shown
