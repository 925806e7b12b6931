"""The one way request parameters are read: the framework hands each over as text (or
a file), and these parsers turn the text into values, with lookalike's messages."""

from __future__ import annotations

import json
import math
from typing import Any, overload

from fastapi import Request

from ..errors import InvalidRequest
from ..records import MAX_METADATA_BYTES

__all__ = [
    "MAX_LISTED",
    "MAX_RESULTS",
    "METHOD_HELP",
    "boolean",
    "each_field_once",
    "integer",
    "json_object",
    "score",
]

MAX_RESULTS = 10_000
"""Most results one search may ask for (``limit``)."""
METHOD_HELP = (
    "signature (copies: image-match's distance), embedding (look-alikes and crops: needs"
    " LOOKALIKE_EMBEDDINGS=true; distance 1 − cosine) or hybrid (both; each image at the"
    " better distance, embedding distances scaled onto the signature's cutoff)"
)

MAX_LISTED = 100_000
"""Most filepaths one ``/list`` may ask for."""
_SINGLE_VALUED = frozenset(
    {
        "image", "url", "filepath", "metadata", "all_orientations", "limit", "min_score",
        "filter", "method", "collapse", "image1", "url1", "image2", "url2", "offset",
        "report",
    }
)  # fmt: skip


async def each_field_once(request: Request) -> None:
    """Refuse a parameter given twice (in the query, the form, or both): which one was
    meant cannot be known, and frameworks disagree on which they take."""
    names = [name for name, _ in request.query_params.multi_items()]
    if request.url.path == "/add_batch":  # its fields repeat, one of each per image
        return
    if request.method not in ("GET", "HEAD") and request.headers.get("content-type", "").startswith(
        ("multipart/form-data", "application/x-www-form-urlencoded")
    ):
        names += [name for name, _ in (await request.form()).multi_items()]
    repeated = sorted({n for n in names if n in _SINGLE_VALUED and names.count(n) > 1})
    if repeated:
        raise InvalidRequest(f"{', '.join(repeated)} given more than once")


def json_object(name: str, text: str | None) -> dict[str, Any] | None:
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


def boolean(name: str, text: str | None) -> bool | None:
    if text is None or text == "":
        return None
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"{name} must be true or false")


@overload
def integer(name: str, text: str | None, default: int, most: int, *, least: int = 0) -> int: ...
@overload
def integer(
    name: str, text: str | None, default: None, most: int, *, least: int = 0
) -> int | None: ...
def integer(
    name: str, text: str | None, default: int | None, most: int, *, least: int = 0
) -> int | None:
    if text is None or text == "":
        return default
    if len(text) > 40:  # no int() of an arbitrarily long number
        raise InvalidRequest(f"{name} must be from {least} to {most}")
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number") from None
    if not least <= value <= most:
        raise InvalidRequest(f"{name} must be from {least} to {most}")
    return value


def score(name: str, text: str | None) -> float | None:
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
