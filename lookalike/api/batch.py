"""``POST /add_batch``: many images in one request, added by a background job.

Two forms of body. Multipart: repeated ``image`` files, each with the ``filepath`` field
of the same rank and, optionally, a ``metadata`` field of the same rank (all or none).
JSON: a list of ``{"filepath", "url", "metadata"}`` objects (or ``{"items": [...]}``),
whose URLs are fetched under the service's URL policy. The job's results, one per item
in order, say ``added``, ``replaced``, ``unchanged`` or ``failed`` with the ``error``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import InvalidRequest
from ..records import BatchItem
from ..service import Lookalike
from .parameters import json_object
from .responses import envelope, fail

__all__ = ["PATH", "add_batch_routes"]

PATH = "/add_batch"


def add_batch_routes(app: FastAPI, service: Lookalike) -> None:
    most = service.settings.batch_max_items

    @app.post(
        PATH,
        status_code=202,
        summary="Start adding many images (multipart or JSON list); answers the job's id",
        description="Multipart: repeated `image`, `filepath` and (all or none) `metadata`"
        ' fields, paired by rank. JSON: `[{"filepath", "url", "metadata"}, ...]`. Follow'
        " the job at `GET /jobs/<id>`: one result per item, `added`, `replaced`,"
        f" `unchanged` or `failed` with its `error`. At most {most} items.",
    )
    async def add_batch(request: Request) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            items = await _multipart_items(request, most)
        elif kind == "application/json":
            items = _json_items(await request.body(), most)
        else:
            raise InvalidRequest("send multipart/form-data or application/json")
        if items is None:
            message = f"a batch holds at most {most} images"
            return fail(request, 413, message)
        if not items:
            raise InvalidRequest("the batch holds no images")
        job = await run_in_threadpool(service.start_add_batch, items)
        return envelope("add_batch", [{"job": job, "items": len(items)}])


async def _multipart_items(request: Request, most: int) -> list[BatchItem] | None:
    """The items of a multipart batch; None when there are more than ``most``."""
    # closed here: the uploads' spooled files go as soon as their bytes are read
    async with request.form(max_files=most + 1, max_fields=2 * most + 2) as form:
        images = form.getlist("image")
        if len(images) > most:
            return None
        unknown = sorted(set(form.keys()) - {"image", "filepath", "metadata"})
        if unknown:
            raise InvalidRequest(f"unknown fields for a batch: {', '.join(unknown)}")
        paths, metadata = form.getlist("filepath"), form.getlist("metadata")
        if len(paths) != len(images) or (metadata and len(metadata) != len(images)):
            raise InvalidRequest(
                f"give one filepath per image (and one metadata per image, or none):"
                f" {len(images)} images, {len(paths)} filepaths, {len(metadata)} metadata"
            )
        items = []
        for rank, (image, path) in enumerate(zip(images, paths, strict=True)):
            if not isinstance(image, UploadFile) or not isinstance(path, str):
                raise InvalidRequest("each image is a file upload and each filepath a text field")
            text = metadata[rank] if metadata else None
            content = await image.read()
            items.append(_item(path, text if isinstance(text, str) else None, content=content))
        return items


def _json_items(body: bytes, most: int) -> list[BatchItem] | None:
    """The items of a JSON batch; None when there are more than ``most``."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not valid JSON") from None
    if isinstance(value, dict) and set(value) == {"items"}:
        value = value["items"]
    if not isinstance(value, list):
        raise InvalidRequest('give a JSON list of {"filepath", "url", "metadata"} objects')
    if len(value) > most:
        return None
    items = []
    for entry in value:
        if not isinstance(entry, dict):
            items.append(BatchItem(None, error="an item is a JSON object"))
            continue
        path, url, meta = entry.get("filepath"), entry.get("url"), entry.get("metadata")
        if not isinstance(path, str) or not path:
            items.append(BatchItem(None, error="filepath is required (a string)"))
        elif not isinstance(url, str) or not url:
            items.append(BatchItem(path, error="url is required (a string)"))
        elif meta is not None and not isinstance(meta, dict):
            items.append(BatchItem(path, error="metadata must be a JSON object"))
        elif unknown := sorted(set(entry) - {"filepath", "url", "metadata"}):
            items.append(BatchItem(path, error=f"unknown keys: {', '.join(unknown)}"))
        else:
            items.append(BatchItem(path, url=url, metadata=meta))
    return items


def _item(path: str, metadata: str | None, *, content: bytes) -> BatchItem:
    """A multipart item, failed alone when its metadata is not a JSON object."""
    try:
        meta = json_object("metadata", metadata)
    except InvalidRequest as error:
        return BatchItem(path, error=str(error))
    return BatchItem(path, content, metadata=meta)
