"""Records as Milvus rows and back, and the exact ranking of fetched rows: pure, no client.

A record's row holds its signature as floats (or a placeholder when it is all zeros:
``blank``), its metadata as exact JSON text and as the dynamic fields filters read; an
embedding's row holds the vector and the record's ``version``. The package's docstring
describes both collections.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import InvalidRequest
from ...records import (
    INT64_RANGE,
    MAX_THUMBNAIL_BYTES,
    Filter,
    Match,
    Metadata,
    Preview,
    Record,
    loads_metadata,
    matches_filter,
)
from ...signature import LENGTH
from ...vectors import cosine_distances
from ..base import ranked, signature_distances
from .queries import FIELD_PREFIX

__all__ = [
    "MAX_MEDIA_TYPE",
    "MAX_TEXT",
    "PLACEHOLDER_DIMENSION",
    "PREVIEW",
    "PREVIEW_SOURCE",
    "RECORD",
    "Checked",
    "Row",
    "check_lengths",
    "embedding_of",
    "metadata_of",
    "preview_of",
    "preview_row",
    "rank_embeddings",
    "rank_signatures",
    "record_rows",
    "signature_of",
    "storable",
]

Row = dict[str, Any]
# filepath, signature, metadata, embedding, preview
Checked = tuple[
    str, npt.NDArray[np.int8], Metadata | None, Any, Preview | None, float | None, float | None
]  # filepath, signature, metadata, embedding, preview, created, updated (None: now)

MAX_TEXT = 65_535  # Milvus's longest VARCHAR, in bytes
MAX_MEDIA_TYPE = 64
PLACEHOLDER_DIMENSION = 2  # the previews collection's vector, the same in every row
PREVIEW = ["version", "width", "height", "file_bytes", "media_type"]  # sizes, without thumbnail
PREVIEW_SOURCE = ["sha256", "modified"]  # dynamic fields: absent from older collections
RECORD = ["signature", "blank", "metadata"]  # what ranking reads
_PLACEHOLDER = [1.0] + [0.0] * (LENGTH - 1)
# a thumbnail in base64 fits one VARCHAR
assert 4 * -(-MAX_THUMBNAIL_BYTES // 3) <= MAX_TEXT


def check_lengths(record: Record) -> Checked:
    """A record (checked at the seam) within what Milvus's VARCHAR fields hold."""
    filepath, metadata = record.filepath, record.metadata
    if len(filepath.encode("utf-8")) > MAX_TEXT:
        raise InvalidRequest(f"a Milvus store keeps filepaths of at most {MAX_TEXT} bytes")
    text, _ = storable(metadata)
    if len(text.encode("utf-8")) > MAX_TEXT:
        raise InvalidRequest(f"a Milvus store keeps metadata of at most {MAX_TEXT} bytes of JSON")
    return (
        filepath,
        record.signature,
        metadata,
        record.embedding,
        record.preview,
        record.created,
        record.updated,
    )


def storable(metadata: Metadata | None) -> tuple[str, dict[str, Any]]:
    """Metadata as the exact JSON text it is kept as, and as the dynamic fields that
    filters read: ``m:<key>`` for each key (Milvus Lite evaluates filters on the dynamic
    field column alone, and fast; on a JSON field it converts every column of every row).

    pymilvus refuses integers beyond 64 bits in JSON: in the dynamic fields they become
    the float of equal value (None if there is none), which compares with a filter's
    value as Python compares the exact one; the text keeps the metadata as it was given."""

    def representable(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: representable(v) for key, v in value.items()}
        if isinstance(value, list):
            return [representable(v) for v in value]
        if isinstance(value, int) and not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            try:  # (booleans are ints too, but within range)
                return float(value)
            except OverflowError:
                return None
        return value

    keys = {f"{FIELD_PREFIX}{k}": representable(v) for k, v in (metadata or {}).items()}
    return json.dumps(metadata, ensure_ascii=False), keys


def record_rows(
    record: Checked, *, seq: int, created: float, updated: float, version: int
) -> tuple[Row, Row | None]:
    """The record's row, and its embedding's row (None without an embedding)."""
    filepath, sig, metadata, embedding, *_ = record
    text, keys = storable(metadata)
    row = {
        "filepath": filepath,
        "signature": sig.astype(np.float32).tolist() if sig.any() else _PLACEHOLDER,
        "blank": not sig.any(),
        "metadata": text,
        **keys,
        "seq": seq,
        "created": created,
        "updated": updated,
        "version": version,
        "has_embedding": embedding is not None,
    }
    if embedding is None:
        return row, None
    return row, {"filepath": filepath, "embedding": embedding.tolist(), **keys, "version": version}


def preview_row(filepath: str, preview: Preview, version: int, hashes: bool = True) -> Row:
    """The row of a record's preview; ``version`` is its record's, as for embeddings;
    with ``hashes``, its content hash and file time, where it has them."""
    thumbnail = preview.thumbnail
    source = {"sha256": preview.sha256, "modified": preview.modified} if hashes else {}
    return {
        **{key: value for key, value in source.items() if value is not None},
        "filepath": filepath,
        "placeholder": [1.0] + [0.0] * (PLACEHOLDER_DIMENSION - 1),
        "version": version,
        "width": preview.width,
        "height": preview.height,
        "file_bytes": preview.file_bytes,
        "media_type": preview.media_type,
        "thumbnail": "" if thumbnail is None else base64.b64encode(thumbnail).decode("ascii"),
    }


def preview_of(row: Row) -> Preview:
    """A preview row (with or without its ``thumbnail`` field) as the preview."""
    text = row.get("thumbnail") or ""
    return Preview(
        int(row["width"]),
        int(row["height"]),
        int(row["file_bytes"]),
        base64.b64decode(text) if text else None,
        str(row["media_type"]),
        row.get("sha256"),
        None if row.get("modified") is None else float(row["modified"]),
    )


def metadata_of(row: Row) -> Metadata | None:
    return loads_metadata(row["metadata"])  # "null" for none


def signature_of(row: Row) -> npt.NDArray[np.int8]:
    if row["blank"]:
        return np.zeros(LENGTH, dtype=np.int8)
    values = np.rint(np.asarray(row["signature"], dtype=np.float32))
    signature: npt.NDArray[np.int8] = values.astype(np.int8)
    return signature


def embedding_of(row: Row) -> npt.NDArray[np.float32]:
    embedding: npt.NDArray[np.float32] = np.asarray(row["embedding"], dtype=np.float32)
    return embedding


def rank_signatures(
    queries: npt.NDArray[np.int8], max_distance: float, where: Filter | None, rows: list[Row]
) -> list[Match]:
    """Exact matches among record rows that pass ``where``, best first."""
    kept = [
        (row, metadata) for row in rows if matches_filter(metadata := metadata_of(row), where or {})
    ]
    if not kept:
        return []
    stored = np.stack([signature_of(row) for row, _ in kept])
    named = [(row["filepath"], metadata) for row, metadata in kept]
    return ranked(named, signature_distances(queries, stored), max_distance)


def rank_embeddings(
    queries: npt.NDArray[np.float32],
    max_distance: float,
    where: Filter | None,
    vectors: list[Row],
    owners: dict[str, Row],
) -> list[Match]:
    """Exact matches among embedding rows whose record (``owners``: its row by filepath,
    with ``version`` and ``metadata``) is current and passes ``where``, best first."""
    kept: list[tuple[Row, Metadata | None]] = []
    for vector in vectors:
        owner = owners.get(vector["filepath"])
        if owner is None or owner["version"] != vector["version"]:
            continue  # deleted, or left by a write that failed halfway
        if matches_filter(metadata := metadata_of(owner), where or {}):
            kept.append((vector, metadata))
    if not kept:
        return []
    stored = np.stack([embedding_of(vector) for vector, _ in kept])
    named = [(vector["filepath"], metadata) for vector, metadata in kept]
    return ranked(named, cosine_distances(queries, stored), max_distance, method="embedding")
