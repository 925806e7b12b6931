"""The export format: a whole collection as JSON Lines, version 1 (README: Export and
import).

The first line is the header ``{"format": "lookalike-export", "version": 1, "exported",
"count"}``; then one line per record, oldest first::

    {"filepath", "metadata", "signature", "embedding", "created", "updated", "preview"}

``signature`` is the 648 int8 values as base64; ``embedding`` the float32 values
(little-endian) as base64, or null; ``preview`` null or ``{"width", "height", "bytes",
"media_type", "thumbnail" (base64 or null), "sha256", "modified"}``. Then one line per
pair marked as not copies: ``{"distinct": [filepath, filepath]}``. A file whose name ends
in ``.gz`` is gzip-compressed. Readers refuse a later version and name the line of a
malformed record.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import InvalidRequest
from .records import Preview, Record
from .signature import LENGTH

__all__ = [
    "FORMAT",
    "VERSION",
    "Mark",
    "count_of",
    "header",
    "mark_line",
    "open_export",
    "read",
    "record_line",
]

FORMAT = "lookalike-export"
VERSION = 1
Mark = tuple[str, str]
"""Two filepaths marked as not copies of each other."""


def open_export(path: Path, mode: str, *, name: str | None = None) -> IO[str]:
    """The file as text (``"r"`` or ``"w"``), through gzip when its name (or ``name``,
    the name it will have) ends in .gz."""
    if (name or path.name).endswith(".gz"):
        return io.TextIOWrapper(gzip.GzipFile(path, mode + "b"), encoding="utf-8")
    return path.open(mode, encoding="utf-8")


def header(count: int) -> str:
    return json.dumps(
        {"format": FORMAT, "version": VERSION, "exported": time.time(), "count": count}
    )


def count_of(first_line: str) -> int:
    """The record count a header announces (0 if it says none: the bar then grows)."""
    try:
        count = json.loads(first_line).get("count", 0)
    except (ValueError, AttributeError):
        return 0
    return count if isinstance(count, int) and count >= 0 else 0


def record_line(record: Record, preview: Preview | None) -> str:
    """One record as a line of the format (without its newline)."""
    embedding = record.embedding
    line = {
        "filepath": record.filepath,
        "metadata": record.metadata,
        "signature": _b64(record.signature.astype(np.int8).tobytes()),
        "embedding": None if embedding is None else _b64(embedding.astype("<f4").tobytes()),
        "created": record.created,
        "updated": record.updated,
        "preview": None if preview is None else _preview_json(preview),
    }
    return json.dumps(line, ensure_ascii=False, allow_nan=False)


def mark_line(mark: Mark) -> str:
    return json.dumps({"distinct": list(mark)}, ensure_ascii=False)


def read(lines: Iterable[str]) -> Iterator[tuple[int, Record | Mark]]:
    """The records and marks of an export, each with its line number; InvalidRequest
    naming the line of the first one that is malformed (or of a missing header)."""
    numbered = enumerate(lines, start=1)
    first = next(numbered, None)
    if first is None:
        raise InvalidRequest("line 1: the export is empty (no header)")
    _check_header(first[1])
    for number, text in numbered:
        if not text.strip():
            continue
        try:
            yield number, _parsed(json.loads(text.rstrip("\r\n")))
        except (ValueError, TypeError, KeyError, binascii.Error) as error:
            raise InvalidRequest(f"line {number}: {_why(error)}") from None


def _check_header(text: str) -> None:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise InvalidRequest(f"line 1: not a lookalike export (no {FORMAT!r} header)")
    if not isinstance(value.get("version"), int) or value["version"] > VERSION:
        raise InvalidRequest(
            f"line 1: export version {value.get('version')!r}; this lookalike reads {VERSION}"
        )


def _parsed(value: Any) -> Record | Mark:
    if not isinstance(value, dict):
        raise ValueError("a line is a JSON object")
    if "distinct" in value:
        pair = value["distinct"]
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise ValueError("distinct is a list of two filepaths")
        return pair[0], pair[1]
    path = value["filepath"]
    if not isinstance(path, str):
        raise ValueError("filepath is a string")
    signature = np.frombuffer(_bytes(value["signature"]), dtype=np.int8)
    if signature.shape != (LENGTH,):
        raise ValueError(f"a signature is {LENGTH} bytes, this one {signature.size}")
    embedding = value.get("embedding")
    vector = None if embedding is None else np.frombuffer(_bytes(embedding), dtype="<f4")
    return Record(
        path,
        signature.copy(),
        value.get("metadata"),
        _time(value.get("created")),
        _time(value.get("updated")),
        embedding=None if vector is None else vector.astype(np.float32),
        preview=None if value.get("preview") is None else _preview_of(value["preview"]),
    )


def _preview_json(p: Preview) -> dict[str, Any]:
    return {
        "width": p.width,
        "height": p.height,
        "bytes": p.file_bytes,
        "media_type": p.media_type,
        "thumbnail": None if p.thumbnail is None else _b64(p.thumbnail),
        "sha256": p.sha256,
        "modified": p.modified,
    }


def _preview_of(value: Any) -> Preview:
    if not isinstance(value, dict):
        raise ValueError("preview is a JSON object")
    thumbnail = value.get("thumbnail")
    return Preview(
        int(value["width"]),
        int(value["height"]),
        int(value["bytes"]),
        None if thumbnail is None else _bytes(thumbnail),
        media_type=str(value.get("media_type", "image/jpeg")),
        sha256=value.get("sha256"),
        modified=_time(value.get("modified")),
    )


def _time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a time is a number of seconds, not {value!r}")
    return float(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("binary fields are base64 strings")
    return base64.b64decode(text, validate=True)


def _why(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"the record lacks {error.args[0]!r}"
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg}, column {error.colno}): truncated or corrupted?"
    if isinstance(error, binascii.Error):
        return f"bad base64: {error}"
    return str(error)
