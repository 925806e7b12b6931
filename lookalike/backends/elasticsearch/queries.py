"""Request bodies and response shapes of the Elasticsearch store, the two index layouts and
the exact re-rank of what a search returns: pure functions, no client.

Each body is written from Elasticsearch's documentation (dense_vector, flattened, kNN
search, _msearch) so that it can be checked against it without a server. Nothing here
imports the ``elasticsearch`` package.

Embeddings live in the ``embedding`` field of lookalike-layout indices: a ``dense_vector``
of 1280 floats, cosine similarity, indexed as ``int8_hnsw`` — HNSW over vectors quantized
to one byte per dimension (Elasticsearch 8.12+), which needs a quarter of the memory of
float HNSW. The raw floats stay on disk, and every candidate is re-ranked from them with
``vectors.cosine_distances``, so quantization can only cost recall, never a wrong distance.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import BackendUnavailable, ConfigError
from ...records import Filter, Match, Preview, Record, check_filepath, matches_filter
from ...signature import LENGTH, words
from ...vectors import EMBEDDING_DIMENSION, as_stored, cosine_distances
from ..base import ranked, signature_distances

__all__ = [
    "DISTINCT_PAGE",
    "EMBEDDING",
    "EMBEDDING_SOURCE",
    "LAYOUT_VERSION",
    "LEGACY",
    "LOOKALIKE",
    "MAX_CANDIDATES",
    "PREVIEW",
    "PREVIEW_SIZES",
    "SOURCE",
    "Layout",
    "distinct_delete_query",
    "distinct_document",
    "distinct_id",
    "distinct_index",
    "distinct_mapping",
    "distinct_page_body",
    "distinct_pairs",
    "document_id",
    "embedding_field",
    "embedding_field_problem",
    "embedding_knn_body",
    "embedding_of",
    "error_reason",
    "filter_clauses",
    "hits_of",
    "is_legacy",
    "knn_body",
    "layout_of",
    "mapping",
    "normalise_url",
    "preview_field",
    "preview_field_problem",
    "preview_of",
    "preview_source",
    "rank_embeddings",
    "rank_signatures",
    "source_of",
    "upsert_action",
    "word_body",
]

WORDS = 63
LAYOUT_VERSION = 1
EMBEDDING = "embedding"
MAX_CANDIDATES = 10_000  # Elasticsearch's limit on num_candidates (and so on k)
SOURCE = ["path", "signature", "metadata"]  # what a signature re-rank needs
# What an embedding re-rank needs. Naming the vector field explicitly matters: from 9.2,
# new indices leave vectors out of returned _source unless a request names them.
EMBEDDING_SOURCE = ["path", "metadata", EMBEDDING]
# A record's sizes and thumbnail: one object, kept in _source and never indexed.
PREVIEW = "preview"
PREVIEW_SIZES = [
    f"{PREVIEW}.{key}"
    for key in ("width", "height", "file_bytes", "media_type", "sha256", "modified")
]
DISTINCT_PAGE = 10_000  # marks per search: index.max_result_window's default
# Keep the first insert time when a document is replaced, so that list order holds.
_REPLACE = (
    "def added = ctx._source.added; ctx._source.clear(); ctx._source.putAll(params.doc);"
    " if (added != null) { ctx._source.added = added; }"
)


def normalise_url(url: str) -> str:
    """Match's ``ELASTICSEARCH_URL``: a bare ``host:port`` means http."""
    url = url.strip()
    if not url:
        raise ConfigError("ELASTICSEARCH_URL is empty")
    return url if "://" in url else f"http://{url}"


def document_id(filepath: str) -> str:
    """The id of a filepath's document: SHA-256 of its UTF-8 bytes, in hex (64 chars,
    under Elasticsearch's 512-byte id limit whatever the path's length)."""
    return hashlib.sha256(check_filepath(filepath).encode("utf-8")).hexdigest()


# -- distinct marks: one document per pair, in an index of their own beside the store's --


def distinct_index(index: str) -> str:
    """The name of the index that keeps ``index``'s distinct marks."""
    return f"{index}-distinct"


def distinct_mapping() -> dict[str, Any]:
    """The explicit mapping of a marks index: the two filepaths of a pair, sorted, as
    keywords (exact terms, sortable on doc values); nothing else is accepted."""
    return {
        "dynamic": "strict",
        "_meta": {"lookalike": LAYOUT_VERSION, "holds": "distinct marks"},
        "properties": {"first": {"type": "keyword"}, "second": {"type": "keyword"}},
    }


def distinct_id(first: str, second: str) -> str:
    """The id of the mark of a sorted pair: SHA-256 of ``first`` NUL ``second`` (no
    filepath holds a NUL, so no two pairs share it), so that marking twice is one mark."""
    pair = f"{check_filepath(first)}\0{check_filepath(second)}"
    return hashlib.sha256(pair.encode("utf-8")).hexdigest()


def distinct_document(first: str, second: str) -> dict[str, str]:
    """The document of the mark of a sorted pair."""
    return {"first": first, "second": second}


def distinct_delete_query(filepath: str) -> dict[str, Any]:
    """The _delete_by_query body removing every mark that names ``filepath``."""
    return {
        "query": {
            "bool": {
                "should": [{"term": {"first": filepath}}, {"term": {"second": filepath}}],
                "minimum_should_match": 1,
            }
        }
    }


def distinct_page_body(after: list[Any] | None, size: int = DISTINCT_PAGE) -> dict[str, Any]:
    """One page of marks in pair order: a sort on both fields (unique per document, so a
    tiebreaker of its own) continued with ``search_after`` from the last hit's sort."""
    body: dict[str, Any] = {
        "size": size,
        "query": {"match_all": {}},
        "sort": [{"first": "asc"}, {"second": "asc"}],
        "_source": ["first", "second"],
        "track_total_hits": False,
    }
    if after is not None:
        body["search_after"] = after
    return body


def distinct_pairs(hits: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The pairs of a page of marks."""
    return [(hit["_source"]["first"], hit["_source"]["second"]) for hit in hits]


def embedding_field() -> dict[str, Any]:
    """The mapping of the ``embedding`` field: quantized HNSW over unit floats."""
    return {
        "type": "dense_vector",
        "element_type": "float",
        "dims": EMBEDDING_DIMENSION,
        "index": True,
        "similarity": "cosine",
        "index_options": {"type": "int8_hnsw"},
    }


def preview_field() -> dict[str, Any]:
    """The mapping of the ``preview`` field: an object kept in _source only (``enabled:
    false``: nothing in it is parsed or indexed, so a thumbnail costs no index)."""
    return {"type": "object", "enabled": False}


def preview_field_problem(index_mapping: dict[str, Any]) -> str | None:
    """Why an existing ``preview`` field cannot hold previews, or None if it can or is
    absent (then it is added)."""
    field = (index_mapping.get("properties") or {}).get(PREVIEW)
    if field is None or (field.get("type", "object") == "object" and field.get("enabled") is False):
        return None
    return f"its {PREVIEW!r} field is not an object with enabled: false"


def preview_source(preview: Preview) -> dict[str, Any]:
    """A preview as the ``preview`` object of a document; the thumbnail in base64."""
    source: dict[str, Any] = {
        "width": preview.width,
        "height": preview.height,
        "file_bytes": preview.file_bytes,
        "media_type": preview.media_type,
    }
    if preview.thumbnail is not None:
        source["thumbnail"] = base64.b64encode(preview.thumbnail).decode("ascii")
    if preview.sha256 is not None:
        source["sha256"] = preview.sha256
    if preview.modified is not None:
        source["modified"] = preview.modified
    return source


def preview_of(source: dict[str, Any]) -> Preview | None:
    """The preview of a document's _source (with or without its thumbnail), or None."""
    found = source.get(PREVIEW)
    if not found:
        return None
    thumbnail = found.get("thumbnail")
    return Preview(
        int(found["width"]),
        int(found["height"]),
        int(found["file_bytes"]),
        base64.b64decode(thumbnail) if thumbnail else None,
        str(found["media_type"]),
        found.get("sha256"),
        None if found.get("modified") is None else float(found["modified"]),
    )


def mapping() -> dict[str, Any]:
    """The explicit mapping of a lookalike index."""
    properties: dict[str, Any] = {
        "path": {"type": "keyword"},
        "signature": {"type": "byte", "index": False, "doc_values": False},
        "vector": {
            "type": "dense_vector",
            "element_type": "byte",
            "dims": LENGTH,
            "index": True,
            "similarity": "l2_norm",
            "index_options": {"type": "hnsw", "m": 16, "ef_construction": 100},
        },
        EMBEDDING: embedding_field(),
        PREVIEW: preview_field(),
        "metadata": {"type": "flattened"},
        "added": {"type": "long"},
        "timestamp": {"type": "date"},
    }
    for i in range(WORDS):
        properties[f"simple_word_{i}"] = {"type": "long"}
    return {
        "dynamic": "strict",
        "_meta": {"lookalike": LAYOUT_VERSION},
        "_source": {"excludes": ["vector"]},
        "properties": properties,
    }


def is_legacy(index_mapping: dict[str, Any]) -> bool:
    """True for an index lookalike did not create (image-match's or Match's)."""
    meta = index_mapping.get("_meta") or {}
    return meta.get("lookalike") is None


@dataclass(frozen=True, slots=True)
class Layout:
    """What differs between the two layouts an index may have.

    ``LOOKALIKE``, the indices lookalike creates (``mapping``): a document's id is
    ``document_id(path)``, so a path is read, replaced and deleted by its id; ``vector``
    serves kNN candidates, ``embedding`` embeddings, and ``metadata`` is flattened, so
    filters go with the query.

    ``LEGACY``, Match's and image-match's (random ids, dynamic mapping): a path is found
    with a ``match_phrase`` query and may have several documents, all deleted before it is
    written again; words are the only candidates; there are no embeddings; filters are
    applied to the results only (as they are anyway, after every search)."""

    name: str  # as stats show it
    legacy: bool
    added: str  # the field of the first insert time
    path: str  # the path field as it sorts (a dynamic mapping sorts on its keyword)

    @property
    def order(self) -> list[dict[str, str]]:
        """The sort of ``list``: first insert, then path."""
        return [{self.added: "asc"}, {self.path: "asc"}]


LOOKALIKE = Layout("lookalike", legacy=False, added="added", path="path")
LEGACY = Layout("legacy", legacy=True, added="timestamp", path="path.keyword")


def layout_of(index_mapping: dict[str, Any]) -> Layout:
    """The layout of an existing index, from its mapping."""
    return LEGACY if is_legacy(index_mapping) else LOOKALIKE


def embedding_field_problem(index_mapping: dict[str, Any]) -> str | None:
    """Why an existing ``embedding`` field cannot hold lookalike's embeddings, or None if
    it can or is absent (then it is added). Elasticsearch reports back the options it
    filled in (m, ef_construction, …), so only what matters is compared."""
    field = (index_mapping.get("properties") or {}).get(EMBEDDING)
    if field is None:
        return None
    wanted = embedding_field()
    keys = ("type", "element_type", "dims", "index", "similarity")
    if any(field.get(key, wanted[key]) != wanted[key] for key in keys):
        return (
            f"its {EMBEDDING!r} field is not an indexed float dense_vector of"
            f" {EMBEDDING_DIMENSION} dimensions with cosine similarity"
        )
    return None


def source_of(record: Record, added: int) -> dict[str, Any]:
    """The document of a record (without the vector, which is the signature again). The
    embedding, when there is one, is written as floats: its values are float16 values,
    which JSON and Elasticsearch's float32 keep exactly."""
    signature = np.asarray(record.signature, dtype=np.int8)
    document: dict[str, Any] = {
        "path": record.filepath,
        "signature": signature.tolist(),
        "added": added,
        "timestamp": int(time.time() * 1000),
    }
    document.update({f"simple_word_{i}": int(w) for i, w in enumerate(words(signature))})
    if record.metadata is not None:
        document["metadata"] = record.metadata
    if record.embedding is not None:
        document[EMBEDDING] = np.asarray(record.embedding, dtype=np.float32).tolist()
    if record.preview is not None:
        document[PREVIEW] = preview_source(record.preview)
    return document


def upsert_action(index: str, record: Record, added: int, vector: bool) -> dict[str, Any]:
    """The bulk action that writes a record's document under its id, keeping the first
    insert time (``added``) of a document it replaces, so that list order holds; with
    ``vector`` (lookalike's layout) the signature is also the kNN ``vector``."""
    document = source_of(record, added)
    if vector:
        document["vector"] = document["signature"]
    return {
        "_op_type": "update",
        "_index": index,
        "_id": document_id(record.filepath),
        "script": {"source": _REPLACE, "lang": "painless", "params": {"doc": document}},
        "upsert": document,
        "retry_on_conflict": 3,
    }


def embedding_of(source: dict[str, Any]) -> npt.NDArray[np.float32] | None:
    """The stored embedding of a document's _source, or None. Rounded to float16 again:
    lookalike only stores float16 values, and a cluster that rebuilds vectors from its
    own (normalised) copy may hand them back a float32 ulp off."""
    values = source.get(EMBEDDING)
    if values is None:
        return None
    return as_stored(values)


def filter_clauses(where: Filter | None, legacy: bool) -> list[dict[str, Any]]:
    """Metadata equality as query filters. Flattened fields index every value as a
    keyword, so a number may be written either way (1 and 1.0); the exact semantics are
    applied again to the results. Legacy indices map metadata dynamically: no filter is
    sent and the results are filtered here instead."""
    if not where or legacy:
        return []
    clauses = []
    for key, value in where.items():
        if isinstance(value, bool):
            spellings = ["true" if value else "false"]
        elif isinstance(value, int | float):
            spellings = sorted(
                {json.dumps(value), json.dumps(float(value))}
                | ({str(int(value))} if float(value).is_integer() else set())
            )
        else:
            spellings = [value]
        clauses.append({"terms": {f"metadata.{key}": spellings}})
    return clauses


def word_body(
    row: npt.NDArray[np.int8], size: int, filters: list[dict[str, Any]]
) -> dict[str, Any]:
    """image-match's candidate query for one signature: documents sharing its words."""
    should = [{"term": {f"simple_word_{i}": int(w)}} for i, w in enumerate(words(row))]
    query: dict[str, Any] = {"bool": {"should": should, "minimum_should_match": 1}}
    if filters:
        query["bool"]["filter"] = filters
    return {"query": query, "size": size, "_source": SOURCE}


def knn_body(
    row: npt.NDArray[np.int8], k: int, num_candidates: int, filters: list[dict[str, Any]]
) -> dict[str, Any]:
    """An approximate kNN query (HNSW) for one signature over the byte vectors."""
    knn: dict[str, Any] = {
        "field": "vector",
        "query_vector": np.asarray(row, dtype=np.int8).tolist(),
        "k": k,
        "num_candidates": max(num_candidates, k),
    }
    if filters:
        knn["filter"] = filters
    return {"knn": knn, "size": k, "_source": SOURCE}


def embedding_knn_body(
    row: npt.NDArray[np.float32], k: int, filters: list[dict[str, Any]]
) -> dict[str, Any]:
    """An approximate kNN query for one query embedding (one orientation): the ``k``
    nearest of ``2k`` HNSW candidates per shard (at most 10,000, Elasticsearch's limit),
    the metadata filter applied during the graph search (so it still yields ``k`` hits),
    and the _source the exact re-rank needs."""
    k = min(k, MAX_CANDIDATES)
    knn: dict[str, Any] = {
        "field": EMBEDDING,
        "query_vector": np.asarray(row, dtype=np.float32).tolist(),
        "k": k,
        "num_candidates": min(2 * k, MAX_CANDIDATES),
    }
    if filters:
        knn["filter"] = filters
    return {"knn": knn, "size": k, "_source": EMBEDDING_SOURCE}


def rank_signatures(
    sources: list[dict[str, Any]],
    queries: npt.NDArray[np.int8],
    max_distance: float,
    where: Filter | None,
) -> list[Match]:
    """The exact re-rank of candidates' _source: the normalised distance to the nearest
    query row, the filter and the cutoff, best first, ties by filepath."""
    sources = [s for s in sources if matches_filter(s.get("metadata"), where or {})]
    if not sources:
        return []
    stored = np.asarray([s["signature"] for s in sources], dtype=np.int8)
    candidates = [(s["path"], s.get("metadata")) for s in sources]
    return ranked(candidates, signature_distances(queries, stored), max_distance)


def rank_embeddings(
    candidates: list[tuple[dict[str, Any], npt.NDArray[np.float32]]],
    queries: npt.NDArray[np.float32],
    max_distance: float,
    where: Filter | None,
) -> list[Match]:
    """The exact re-rank of candidates' (_source, stored embedding): ``cosine_distances``
    (as every backend computes it), the filter and the cutoff, best first, ties by
    filepath. Elasticsearch's _score (from quantized vectors) is not used."""
    candidates = [c for c in candidates if matches_filter(c[0].get("metadata"), where or {})]
    if not candidates:
        return []
    stored = np.stack([vector for _, vector in candidates])
    found = cosine_distances(queries, stored)
    named = [(source["path"], source.get("metadata")) for source, _ in candidates]
    return ranked(named, found, max_distance, method="embedding")


def hits_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The hits of one search response (or one item of an _msearch); errors raise."""
    if "error" in response:
        raise BackendUnavailable(
            f"Elasticsearch refused a search: {error_reason(response['error'])}"
        )
    return list(response.get("hits", {}).get("hits", []))


def error_reason(error: Any) -> str:
    """The most telling part of an Elasticsearch error object."""
    if isinstance(error, dict):
        return str(error.get("reason") or error.get("type") or error)
    return str(error)
