"""A store in an Elasticsearch index, with the official client (``lookalike[elasticsearch]``).

Documents keep image-match's fields — ``path``, ``signature``, ``simple_word_0 … 62``,
``metadata`` — so an index written by Match or image-match is searched as it is (the
*legacy* layout: random ids, dynamic mapping). Indices lookalike creates (the *lookalike*
layout) add an explicit mapping (``mapping``): the id is a hash of the filepath, so an add
replaces and a delete removes exactly that path; ``metadata`` is ``flattened``; the
signature is also a ``dense_vector`` of bytes for HNSW k-nearest-neighbour search; ``added``
(nanoseconds, kept on replace) orders ``list``.

A search sends one body per query orientation in a single ``_msearch`` — image-match's
should-of-terms over the words, or a kNN query — takes the union of the candidates, and
re-ranks them exactly with the normalised distance, so scores equal brute force and only
the candidate stage can miss. Defaults come from bench/candidates.py (an
emulation of both stages at 1k–100k images): kNN k=500 loses nothing measurable; words
at 1,000 keep every original but lose a few matches of crops and padding. The request
bodies are built by the pure functions below,
so they can be checked against Elasticsearch's documentation without a server.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from ..errors import BackendUnavailable, ConfigError
from ..records import Match, Record
from ..signature import LENGTH, ORIENTATIONS, distances, words
from .base import (
    Filter,
    check_filepath,
    check_filter,
    check_metadata,
    check_queries,
    matches_filter,
)

try:
    import elasticsearch
    from elasticsearch import helpers
except ImportError:  # pragma: no cover - exercised where the extra is missing
    elasticsearch = None  # type: ignore[assignment]

__all__ = [
    "ElasticsearchBackend",
    "document_id",
    "filter_clauses",
    "is_legacy",
    "knn_body",
    "mapping",
    "normalise_url",
    "source_of",
    "word_body",
]

T = TypeVar("T")

WORDS = 63
LAYOUT_VERSION = 1
_TRANSIENT = (429, 502, 503, 504)
_SOURCE = ["path", "signature", "metadata"]
# Keep the first insert time when a document is replaced, so that list order holds.
_REPLACE = (
    "def added = ctx._source.added; ctx._source.clear(); ctx._source.putAll(params.doc);"
    " if (added != null) { ctx._source.added = added; }"
)


# -- request bodies and response shapes -------------------------------------------------


def normalise_url(url: str) -> str:
    """Match's ``ELASTICSEARCH_URL``: a bare ``host:port`` means http."""
    url = url.strip()
    if not url:
        raise ConfigError("ELASTICSEARCH_URL is empty")
    return url if "://" in url else f"http://{url}"


def redacted(url: str) -> str:
    """The URL without a password, as it may appear in messages and stats."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def document_id(filepath: str) -> str:
    """The id of a filepath's document: SHA-256 of its UTF-8 bytes, in hex (64 chars,
    under Elasticsearch's 512-byte id limit whatever the path's length)."""
    return hashlib.sha256(check_filepath(filepath).encode("utf-8")).hexdigest()


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


def source_of(record: Record, added: int) -> dict[str, Any]:
    """The document of a record (without the vector, which is the signature again)."""
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
    return document


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
    return {"query": query, "size": size, "_source": _SOURCE}


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
    return {"knn": knn, "size": k, "_source": _SOURCE}


def hits_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The hits of one search response (or one item of an _msearch); errors raise."""
    if "error" in response:
        raise BackendUnavailable(f"Elasticsearch refused a search: {_reason(response['error'])}")
    return list(response.get("hits", {}).get("hits", []))


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("reason") or error.get("type") or error)
    return str(error)


# -- the backend --------------------------------------------------------------------------


class ElasticsearchBackend:
    """A lookalike store in one Elasticsearch index (created with ``mapping`` if missing)."""

    def __init__(
        self,
        url: str,
        *,
        index: str = "images",
        knn: int = 500,
        words: int = 1000,
        stage: str = "knn",
        refresh: str = "wait_for",
        timeout: float = 10.0,
        retries: int = 3,
        client: Any = None,
    ) -> None:
        if elasticsearch is None:
            raise ConfigError(
                "the Elasticsearch store needs: pip install 'lookalike[elasticsearch]'"
            )
        if stage not in ("words", "knn"):
            raise ConfigError(f"unknown candidate stage {stage!r}: use words or knn")
        self.url = normalise_url(url)
        self.shown_url = redacted(self.url)  # for messages and stats: no credentials
        self.index = index
        self.knn = knn
        self.words = words
        self.stage = stage
        self.refresh = refresh
        self.retries = retries
        # Typed as Any: bodies are built as plain dicts and unpacked into the client's calls.
        self._es: Any = client or elasticsearch.Elasticsearch(
            self.url, request_timeout=timeout, max_retries=0, retry_on_timeout=False
        )
        self._legacy: bool | None = None

    # -- writes -------------------------------------------------------------------------

    def add(self, record: Record) -> None:
        self.add_many([record])

    def add_many(self, records: Iterable[Record], batch: int = 500) -> int:
        total = 0
        iterator = iter(records)
        while chunk := [r for _, r in zip(range(batch), iterator, strict=False)]:
            checked = [self._checked(r) for r in chunk]
            if self._is_legacy():
                for record in checked:
                    self._delete_legacy(record.filepath)
            self._bulk(self._upsert(r) for r in checked)
            total += len(checked)
        return total

    def delete(self, filepath: str) -> bool:
        check_filepath(filepath)
        if not self._exists():
            return False
        if self._is_legacy():
            return self._delete_legacy(filepath) > 0
        response = self._call(
            lambda: self._es.options(ignore_status=404).delete(
                index=self.index, id=document_id(filepath), refresh=self.refresh
            )
        )
        return bool(response.get("result") == "deleted")

    # -- reads --------------------------------------------------------------------------

    def get(self, filepath: str) -> Record | None:
        found = self._find(filepath)
        if found is None:
            return None
        source = found["_source"]
        signature = np.asarray(source["signature"], dtype=np.int8)
        return Record(source["path"], signature, source.get("metadata"))

    def count(self) -> int:
        if not self._exists():
            return 0
        return int(self._call(lambda: self._es.count(index=self.index))["count"])

    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        """Filepaths in insertion order, any depth: a point in time and ``search_after``."""
        if limit <= 0 or not self._exists():
            return []
        sort = (
            [{"timestamp": "asc"}, {"path.keyword": "asc"}]
            if self._is_legacy()
            else [
                {"added": "asc"},
                {"path": "asc"},
            ]
        )
        pit = self._call(lambda: self._es.open_point_in_time(index=self.index, keep_alive="1m"))
        out: builtins.list[str] = []
        after = None
        skip = offset
        try:
            while len(out) < limit:
                page = min(10_000, skip + limit - len(out))
                body: dict[str, Any] = {
                    "size": page,
                    "sort": sort,
                    "pit": {"id": pit["id"], "keep_alive": "1m"},
                    "_source": ["path"],
                }
                if after is not None:
                    body["search_after"] = after
                hits = hits_of(self._call(partial(self._es.search, **body)))
                if not hits:
                    break
                after = hits[-1]["sort"]
                taken = hits[skip:]
                skip = max(0, skip - len(hits))
                out.extend(h["_source"]["path"] for h in taken)
        finally:
            self._call(lambda: self._es.close_point_in_time(id=pit["id"]))
        return out[:limit]

    def search(
        self,
        queries: npt.NDArray[np.int8],
        *,
        limit: int,
        max_distance: float,
        where: Filter | None = None,
    ) -> builtins.list[Match]:
        where = check_filter(where)
        queries = check_queries(queries)
        if not self._exists() or limit <= 0:
            return []
        legacy = self._is_legacy()
        filters = filter_clauses(where, legacy)
        use_knn = self._uses_knn()
        searches: builtins.list[dict[str, Any]] = []
        for row in queries:
            body = (
                knn_body(row, self.knn, 2 * self.knn, filters)
                if use_knn
                else word_body(row, self.words, filters)
            )
            searches += [{"index": self.index}, body]
        response = self._call(lambda: self._es.msearch(searches=searches))
        candidates: dict[str, dict[str, Any]] = {}
        for item in response["responses"]:
            for hit in hits_of(item):
                candidates[hit["_id"]] = hit["_source"]
        return self._rank(list(candidates.values()), queries, limit, max_distance, where)

    def stats(self) -> dict[str, Any]:
        exists = self._exists()
        return {
            "backend": "elasticsearch",
            "url": self.shown_url,
            "index_name": self.index,
            "count": self.count(),
            "index": (
                f"kNN candidates (k={self.knn}, num_candidates={2 * self.knn})"
                if exists and self._uses_knn()
                else f"word candidates ({self.words} per orientation)"
            )
            + ", exact re-rank",
            "layout": ("legacy" if self._is_legacy() else "lookalike") if exists else "not created",
            "memory_bytes": 0,
        }

    def reindex(self) -> dict[str, Any]:
        """Elasticsearch maintains its own structures: nothing to rebuild here."""
        return self.stats()

    def migrate(
        self,
        target: str,
        *,
        swap: bool = False,
        batch: int = 500,
        progress: Callable[[int], object] | None = None,
    ) -> dict[str, Any]:
        """Copy this index into ``target`` in lookalike's layout (created if missing).

        Documents are read in path order; after each batch the last path reached is kept
        in the target's mapping ``_meta``, so a rerun continues where one stopped. Legacy
        duplicates of a path collapse into one document (the last read). With ``swap``,
        once both hold the same number of paths, one atomic ``_aliases`` request deletes
        this index and makes its name an alias of ``target``: clients keep their
        ``ELASTICSEARCH_INDEX``. ``progress`` is called with each batch's size."""
        if not self._exists():
            raise ConfigError(f"there is no index {self.index!r} to migrate")
        destination = ElasticsearchBackend(
            self.url, index=target, refresh="false", retries=self.retries, client=self._es
        )
        if destination._is_legacy():
            raise ConfigError(f"{target!r} exists and is not a lookalike index")
        answer = self._call(lambda: self._es.indices.get_mapping(index=target))
        meta = dict(next(iter(answer.values()))["mappings"].get("_meta") or {})
        after = meta.get("migrated_until")
        paths = int(meta.get("migrated_paths", 0))  # distinct paths copied, across runs
        last = after[0] if after else None
        key = "path.keyword" if self._is_legacy() else "path"
        copied = 0
        while True:
            body: dict[str, Any] = {"size": batch, "sort": [{key: "asc"}], "_source": _SOURCE}
            if after is not None:
                body["search_after"] = after
            hits = hits_of(self._call(partial(self._es.search, index=self.index, **body)))
            if not hits:
                break
            records = [
                destination._checked(
                    Record(
                        h["_source"]["path"],
                        np.asarray(h["_source"]["signature"]),
                        h["_source"].get("metadata"),
                    )
                )
                for h in hits
            ]
            destination._bulk(destination._upsert(r) for r in records)
            for record in records:  # in path order: a duplicate follows its first
                paths += record.filepath != last
                last = record.filepath
            after = hits[-1]["sort"]
            meta.update(lookalike=LAYOUT_VERSION, migrated_until=after, migrated_paths=paths)
            self._call(lambda: self._es.indices.put_mapping(index=target, meta=meta))
            copied += len(hits)
            if progress is not None:
                progress(len(hits))
        self._call(lambda: self._es.indices.refresh(index=target))
        facts = {"copied": copied, "source_paths": paths, "target_count": destination.count()}
        if swap:
            if facts["target_count"] != paths:
                raise BackendUnavailable(
                    f"not swapping: {target!r} holds {facts['target_count']} documents,"
                    f" {self.index!r} {paths} paths; run the migration again"
                )
            actions = [
                {"add": {"index": target, "alias": self.index}},
                {"remove_index": {"index": self.index}},
            ]
            self._call(lambda: self._es.indices.update_aliases(actions=actions))
            facts["swapped"] = True
        return facts

    def close(self) -> None:
        self._es.close()

    # -- internals ----------------------------------------------------------------------

    def _uses_knn(self) -> bool:
        """kNN where asked for and possible: legacy indices have no vectors."""
        return self.stage == "knn" and not self._is_legacy()

    def _rank(
        self,
        sources: builtins.list[dict[str, Any]],
        queries: npt.NDArray[np.int8],
        limit: int,
        max_distance: float,
        where: Filter | None,
    ) -> builtins.list[Match]:
        if where:
            sources = [s for s in sources if matches_filter(s.get("metadata"), where)]
        if not sources:
            return []
        stored = np.asarray([s["signature"] for s in sources], dtype=np.int8)
        table = np.stack([distances(stored, row) for row in queries], axis=1)
        best = table.argmin(axis=1)
        found = [
            Match(s["path"], float(table[i, best[i]]), ORIENTATIONS[best[i]], s.get("metadata"))
            for i, s in enumerate(sources)
            if table[i, best[i]] < max_distance
        ]
        found.sort(key=lambda m: (m.distance, m.filepath))
        return found[:limit]

    def _checked(self, record: Record) -> Record:
        signature = np.asarray(record.signature)
        if signature.shape != (LENGTH,):
            raise ValueError(f"a signature has {LENGTH} values, got shape {signature.shape}")
        return Record(
            check_filepath(record.filepath),
            signature.astype(np.int8),
            check_metadata(record.metadata),
        )

    def _upsert(self, record: Record) -> dict[str, Any]:
        document = source_of(record, time.time_ns())
        if not self._is_legacy():
            document["vector"] = document["signature"]
        return {
            "_op_type": "update",
            "_index": self.index,
            "_id": document_id(record.filepath),
            "script": {"source": _REPLACE, "lang": "painless", "params": {"doc": document}},
            "upsert": document,
            "retry_on_conflict": 3,
        }

    def _bulk(self, actions: Iterator[dict[str, Any]]) -> None:
        """Send the actions in one bulk request; failed items are reported, not half-kept
        silently (each item is an idempotent upsert, so a retry is safe)."""
        batch = list(actions)
        outcome: Any = self._call(
            lambda: helpers.bulk(self._es, batch, refresh=self.refresh, raise_on_error=False)
        )
        errors: builtins.list[dict[str, Any]] = outcome[1]
        if errors:
            first = next(iter(errors[0].values()))
            raise BackendUnavailable(
                f"Elasticsearch refused {len(errors)} documents: {_reason(first.get('error'))}"
            )

    def _find(self, filepath: str) -> dict[str, Any] | None:
        if not self._exists():
            return None
        if not self._is_legacy():
            found = self._call(
                lambda: self._es.options(ignore_status=404).get(
                    index=self.index, id=document_id(filepath), source_includes=_SOURCE
                )
            )
            return dict(found) if found.get("found") else None
        matches = self._legacy_ids(filepath)
        return matches[0] if matches else None

    def _legacy_ids(self, filepath: str) -> builtins.list[dict[str, Any]]:
        """Documents whose path is exactly ``filepath``, in an index of another layout."""
        body = {"query": {"match_phrase": {"path": filepath}}, "size": 100, "_source": _SOURCE}
        hits = hits_of(self._call(lambda: self._es.search(index=self.index, **body)))
        return [h for h in hits if h["_source"].get("path") == filepath]

    def _delete_legacy(self, filepath: str) -> int:
        gone = 0
        for hit in self._legacy_ids(filepath):
            remove = self._es.options(ignore_status=404).delete
            self._call(partial(remove, index=self.index, id=hit["_id"], refresh=self.refresh))
            gone += 1
        return gone

    def _exists(self) -> bool:
        if self._legacy is not None:
            return True
        return bool(self._call(lambda: self._es.indices.exists(index=self.index)))

    def _is_legacy(self) -> bool:
        if self._legacy is None:
            if not self._exists():
                self._create()
            answer = self._call(lambda: self._es.indices.get_mapping(index=self.index))
            found = next(iter(answer.values()))["mappings"]
            self._legacy = is_legacy(found)
        return self._legacy

    def _create(self) -> None:
        self._call(
            lambda: self._es.options(ignore_status=400).indices.create(
                index=self.index, mappings=mapping()
            )
        )

    def _call(self, request: Callable[[], T]) -> T:
        """Run a request, retrying transient failures with exponential backoff."""
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return request()
            except elasticsearch.ApiError as error:
                if error.status_code not in _TRANSIENT or attempt == self.retries:
                    body = error.body.get("error") if isinstance(error.body, dict) else error.body
                    raise BackendUnavailable(
                        f"Elasticsearch at {self.shown_url} answered {error.status_code}:"
                        f" {_reason(body)}"
                    ) from None
            except elasticsearch.TransportError as error:  # unreachable, timed out
                if attempt == self.retries:
                    raise BackendUnavailable(
                        f"Elasticsearch at {self.shown_url} is unreachable or too slow:"
                        f" {error.message}"
                    ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")
