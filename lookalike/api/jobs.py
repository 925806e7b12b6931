"""The HTTP routes of whole-collection work: ``POST /duplicates`` starts a background job,
``GET /jobs/<id>`` follows it and pages its groups, ``DELETE /jobs/<id>`` cancels it;
``/distinct`` keeps the pairs a user marked as not copies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Form, Query
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidRequest
from ..service import Lookalike
from .parameters import MAX_LISTED, METHOD_HELP, boolean, integer, json_object, score
from .responses import envelope

__all__ = ["add_job_routes"]

FormText = Annotated[str | None, Form()]


def add_job_routes(app: FastAPI, service: Lookalike) -> None:
    @app.post(
        "/duplicates",
        status_code=202,
        summary="Start finding every group of copies in the store; answers the job's id",
    )
    async def duplicates(
        method: Annotated[str | None, Form(description=METHOD_HELP)] = None,
        min_score: Annotated[str | None, Form(description="Pairs scoring at least this")] = None,
        filter: Annotated[str | None, Form(description="JSON object: metadata equality")] = None,
        keep: Annotated[
            str | None, Form(description="The copy to keep: largest (default), oldest, newest")
        ] = None,
        strict: Annotated[
            str | None, Form(description="Every member within the cutoff of the kept one")
        ] = None,
        min_size: Annotated[str | None, Form(description="Smallest group (default 2)")] = None,
        all_orientations: Annotated[
            str | None, Form(description="Also match turned and mirrored copies (default true)")
        ] = None,
    ) -> dict[str, Any]:
        options: dict[str, Any] = {
            "method": method,
            "min_score": score("min_score", min_score),
            "where": json_object("filter", filter),
            "keep": keep or "largest",
            "strict": bool(boolean("strict", strict)),
            "min_size": integer("min_size", min_size, 2, MAX_LISTED, least=2),
            "all_orientations": boolean("all_orientations", all_orientations),
        }
        job = await run_in_threadpool(lambda: service.start_duplicates(**options))
        return envelope("duplicates", [{"job": job}])

    @app.get("/jobs/{job}", summary="A job's state and progress; when done, a page of results")
    async def job_state(
        job: str,
        offset: Annotated[str | None, Query()] = None,
        limit: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        first = integer("offset", offset, 0, 2**31)
        count = integer("limit", limit, 100, MAX_LISTED, least=1)
        return envelope("jobs", [await run_in_threadpool(service.jobs.get, job, first, count)])

    @app.delete("/jobs/{job}", summary="Cancel a running job")
    async def cancel(job: str) -> dict[str, Any]:
        return envelope("jobs", [await run_in_threadpool(service.jobs.cancel, job)])

    @app.post("/distinct", summary="Mark two stored images as not copies of each other")
    async def mark(first: FormText = None, second: FormText = None) -> dict[str, Any]:
        await run_in_threadpool(service.mark_distinct, *_two(first, second))
        return envelope("distinct", [])

    @app.delete("/distinct", summary="Remove the mark of two images")
    async def unmark(first: FormText = None, second: FormText = None) -> dict[str, Any]:
        await run_in_threadpool(service.unmark_distinct, *_two(first, second))
        return envelope("distinct", [])

    @app.get("/distinct", summary="Every pair marked as not copies")
    async def marks() -> dict[str, Any]:
        pairs = await run_in_threadpool(service.distinct)
        return envelope("distinct", [list(pair) for pair in pairs])


def _two(first: str | None, second: str | None) -> tuple[str, str]:
    if not first or not second:
        raise InvalidRequest("give the two images as 'first' and 'second' (their filepaths)")
    return first, second
