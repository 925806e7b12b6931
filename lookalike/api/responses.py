"""Every answer in Match's envelope, and the one table from lookalike's errors to statuses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (
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

__all__ = ["STATUS_CODES", "add_error_handlers", "envelope", "fail"]

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
UNAVAILABLE = "the store is not available right now; try again later"


def envelope(method: str, result: list[Any], errors: list[str] | None = None) -> dict[str, Any]:
    return {
        "status": "fail" if errors else "ok",
        "error": errors or [],
        "method": method,
        "result": result,
    }


def _route_name(request: Request) -> str:
    route = request.scope.get("route")
    return route.path.strip("/") if route is not None else ""


def fail(
    request: Request,
    status: int,
    *messages: str,
    method: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The failure envelope; ``method`` defaults to the matched route's name."""
    name = _route_name(request) if method is None else method
    return JSONResponse(envelope(name, [], list(messages)), status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    async def lookalike_error(request: Request, error: Exception) -> JSONResponse:
        status = next(code for kind, code in STATUS_CODES if isinstance(error, kind))
        message = str(error)
        if status >= 500 and not isinstance(error, Overloaded):
            # The store's own words (driver errors, file paths) go to the log, not to clients.
            log.error("%s %s failed: %s", request.method, request.url.path, error)
            message = UNAVAILABLE if status == 503 else "internal error"
        retry = {"Retry-After": "1"} if isinstance(error, Overloaded) else None
        return fail(request, status, message, headers=retry)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        messages = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in error.errors()
        ]
        return fail(request, 400, *(messages or ["invalid request"]))

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        messages = {404: "no such endpoint", 405: "method not allowed for this endpoint"}
        message = messages.get(error.status_code, str(error.detail))
        return fail(request, error.status_code, message, headers=error.headers)

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s crashed", request.method, request.url.path)
        return fail(request, 500, "internal error")

    app.add_exception_handler(LookalikeError, lookalike_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
