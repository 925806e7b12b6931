"""Records as image-match's MongoDB documents and back, the store's URLs and filters:
pure, no client.

A document is what image-match's ``SignatureMongo`` writes — ``path``, ``signature`` (a
list of 648 ints), ``simple_word_0`` … ``simple_word_62`` and ``metadata`` — plus
lookalike's own fields, which image-match ignores: ``lookalike_signature`` (the same
signature as 648 bytes, which a search reads: a BSON array of 648 ints is ~5.5 kB to
send and decode), ``lookalike_created`` and
``lookalike_updated`` (seconds), ``lookalike_embedding`` (the float16 values as bytes:
every stored embedding is float16-exact) and ``lookalike_preview``. Metadata MongoDB
cannot hold as it is (keys with dots or a leading ``$``, integers beyond 64 bits) is kept
as its JSON text in ``lookalike_metadata`` instead, so it is stored by value, never read
as an operator.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from ...errors import ConfigError
from ...records import INT64_RANGE, Filter, Metadata, Preview, Record
from ...signature import LENGTH, words
from ...vectors import EMBEDDING_DIMENSION

__all__ = [
    "LOOKALIKE_FIELDS",
    "PREVIEW_SIZES",
    "WORDS",
    "created_of",
    "document_of",
    "embedding_of",
    "metadata_of",
    "parse_url",
    "prefilter",
    "preview_of",
    "record_of",
    "signature_of",
]

WORDS = tuple(f"simple_word_{i}" for i in range(63))
SIGNATURE_BYTES = "lookalike_signature"
CREATED, UPDATED = "lookalike_created", "lookalike_updated"
EMBEDDING, PREVIEW, METADATA_TEXT = "lookalike_embedding", "lookalike_preview", "lookalike_metadata"
LOOKALIKE_FIELDS = (SIGNATURE_BYTES, CREATED, UPDATED, EMBEDDING, PREVIEW, METADATA_TEXT)


def parse_url(url: str) -> tuple[str, str, str]:
    """``mongodb://host/db.collection`` → (the client's URL, with ``/db`` as its path;
    the database; the collection). ConfigError without both names."""
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    database, _, collection = name.partition(".")
    if not parts.netloc or not database or not collection:
        raise ConfigError(
            "a MongoDB store is named mongodb://host[:port]/database.collection"
            f" (got {parts.scheme}://…/{name})"
        )
    return urlunsplit(parts._replace(path=f"/{database}")), database, collection


def document_of(record: Record, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields an add sets, and the fields it removes (left by an earlier version of
    the record); ``lookalike_created`` is set apart, on insert only."""
    signature = record.signature
    fields: dict[str, Any] = {"path": record.filepath, "signature": signature.tolist()}
    fields[SIGNATURE_BYTES] = signature.astype(np.int8).tobytes()
    fields.update(zip(WORDS, words(signature).tolist(), strict=True))
    fields[UPDATED] = now if record.updated is None else record.updated
    if record.created is not None:  # an import: its own time, else set on insert only
        fields[CREATED] = record.created
    absent = []
    if record.metadata is None:
        absent += ["metadata", METADATA_TEXT]
    elif _storable(record.metadata):
        fields["metadata"] = record.metadata
        absent.append(METADATA_TEXT)
    else:
        fields[METADATA_TEXT] = json.dumps(record.metadata, ensure_ascii=False)
        absent.append("metadata")
    if record.embedding is None:
        absent.append(EMBEDDING)
    else:
        fields[EMBEDDING] = record.embedding.astype("<f2").tobytes()
    if record.preview is None:
        absent.append(PREVIEW)
    else:
        fields[PREVIEW] = _preview_fields(record.preview)
    return fields, dict.fromkeys(absent, "")


def record_of(document: dict[str, Any]) -> Record:
    """The record a document holds (one written by image-match too)."""
    created = created_of(document)
    return Record(
        filepath=document["path"],
        signature=signature_of(document),
        metadata=metadata_of(document),
        created=created,
        updated=document.get(UPDATED, created),
        embedding=embedding_of(document),
    )


def signature_of(document: dict[str, Any]) -> npt.NDArray[np.int8]:
    """The signature: lookalike's bytes where it wrote them, else image-match's list."""
    data = document.get(SIGNATURE_BYTES)
    if data is not None and len(data) == LENGTH:
        return np.frombuffer(bytes(data), dtype=np.int8).copy()
    return np.asarray(document["signature"], dtype=np.int8).reshape(LENGTH)


def created_of(document: dict[str, Any]) -> float | None:
    """When the record was first added: image-match's documents say it by their ``_id``."""
    created = document.get(CREATED)
    if created is None and hasattr(document.get("_id"), "generation_time"):
        created = document["_id"].generation_time.timestamp()
    return created if created is None else float(created)


def metadata_of(document: dict[str, Any]) -> Metadata | None:
    text = document.get(METADATA_TEXT)
    if text is not None:
        loaded: Metadata = json.loads(text)
        return loaded
    metadata = document.get("metadata")
    return metadata if isinstance(metadata, dict) else None


def embedding_of(document: dict[str, Any]) -> npt.NDArray[np.float32] | None:
    data = document.get(EMBEDDING)
    if data is None:
        return None
    vector = np.frombuffer(bytes(data), dtype="<f2").astype(np.float32)
    return vector if vector.shape == (EMBEDDING_DIMENSION,) else None


PREVIEW_SIZES = ("width", "height", "bytes", "type", "sha256", "modified")  # no thumbnail


def preview_of(fields: dict[str, Any]) -> Preview:
    thumbnail = fields.get("thumbnail")
    return Preview(
        int(fields["width"]),
        int(fields["height"]),
        int(fields["bytes"]),
        bytes(thumbnail) if thumbnail is not None else None,
        str(fields.get("type", "image/jpeg")),
        fields.get("sha256"),
        _float_or_none(fields.get("modified")),
    )


def prefilter(where: Filter | None) -> dict[str, Any]:
    """A MongoDB query that every document satisfying ``where`` passes (the exact test is
    ``records.matches_filter``, after it): ``$eq`` on ``metadata.<key>`` for the keys
    that are plain field names, and every document whose metadata is kept as text. A key
    with a dot or a leading ``$`` is left to the exact test: it never reaches the query."""
    clauses = {
        f"metadata.{key}": {"$eq": value} for key, value in (where or {}).items() if _plain(key)
    }
    if not clauses:
        return {}
    return {"$or": [clauses, {METADATA_TEXT: {"$exists": True}}]}


def _preview_fields(preview: Preview) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "width": preview.width,
        "height": preview.height,
        "bytes": preview.file_bytes,
        "type": preview.media_type,
    }
    if preview.thumbnail is not None:
        fields["thumbnail"] = preview.thumbnail
    if preview.sha256 is not None:
        fields["sha256"] = preview.sha256
    if preview.modified is not None:
        fields["modified"] = preview.modified
    return fields


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _plain(key: str) -> bool:
    return bool(key) and "." not in key and not key.startswith("$") and "\0" not in key


def _storable(value: Any) -> bool:
    """Whether MongoDB keeps this JSON value as it is, as a document."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return INT64_RANGE[0] <= value <= INT64_RANGE[1]
    return True
