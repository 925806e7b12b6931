"""``GET /ready`` (503 until the store answers) and ``GET /metrics`` (Prometheus text
format, every worker counted); ``GET /ping`` stays Match's liveness answer."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import metrics
from ..service import Lookalike
from .responses import envelope

__all__ = ["add_health_routes"]


def add_health_routes(app: FastAPI, service: Lookalike) -> None:
    async def ready() -> dict[str, Any]:
        # a store that cannot be reached raises BackendUnavailable: answered 503
        await run_in_threadpool(service.count)
        return envelope("ready", [])

    for method in ("GET", "HEAD"):
        app.add_api_route(
            "/ready",
            ready,
            methods=[method],
            summary="Is the store open and reachable? (503 until it is)",
            include_in_schema=method == "GET",
        )

    async def metrics_page() -> Response:
        body, kind = await run_in_threadpool(metrics.exposition, service.stats)
        return Response(body, media_type=kind)

    for method in ("GET", "HEAD"):
        app.add_api_route(
            "/metrics",
            metrics_page,
            methods=[method],
            summary="Prometheus metrics of every worker (behind the API key unless"
            " LOOKALIKE_METRICS_PUBLIC=true)",
            response_class=Response,
            responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "The metrics"}},
            include_in_schema=method == "GET",
        )
