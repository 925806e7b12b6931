"""A store in an Elasticsearch index, with the official client (``lookalike[elasticsearch]``).

Documents keep image-match's fields — ``path``, ``signature``, ``simple_word_0 … 62``,
``metadata`` — so an index written by Match or image-match is searched as it is (the
*legacy* layout: random ids, dynamic mapping). Indices lookalike creates (the *lookalike*
layout) add an explicit mapping (``queries.mapping``): the id is a hash of the
filepath, so an add replaces and a delete removes exactly that path; ``metadata`` is
``flattened``; the signature is also a ``dense_vector`` of bytes for HNSW k-nearest-neighbour
search; ``embedding``, when a record has one, is a ``dense_vector`` of 1280 floats indexed as
quantized HNSW (``int8_hnsw``); ``added`` (nanoseconds, kept on replace) orders ``list``.
A lookalike index created before embeddings existed gets the ``embedding`` field when it is
opened (adding a field to a mapping is allowed). Legacy indices hold no embeddings: an
embedding added there is dropped with a warning, and an embedding search finds nothing.

A search sends one body per query orientation in a single ``_msearch`` — image-match's
should-of-terms over the words, or a kNN query — takes the union of the candidates, and
re-ranks them exactly with the normalised distance, so scores equal brute force and only
the candidate stage can miss. Defaults come from bench/candidates.py (an
emulation of both stages at 1k–100k images): kNN k=500 loses nothing measurable; words
at 1,000 keep every original but lose a few matches of crops and padding. An embedding
search does the same with one kNN query per orientation over ``embedding`` and re-ranks
with ``vectors.cosine_distances``, the distance every backend reports. The request bodies
are built by the pure functions of ``queries``, so they can be checked
against Elasticsearch's documentation without a server.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ...config import Settings
from ...errors import BackendUnavailable, ConfigError
from ...records import Filter, Match, Record, matches_filter
from ...vectors import cosine_distances
from ..base import Backend, ranked, redacted, signature_distances
from .migrate import copy_index
from .queries import (
    EMBEDDING,
    MAX_CANDIDATES,
    SOURCE,
    document_id,
    embedding_field,
    embedding_field_problem,
    embedding_knn_body,
    embedding_of,
    error_reason,
    filter_clauses,
    hits_of,
    is_legacy,
    knn_body,
    mapping,
    normalise_url,
    source_of,
    word_body,
)

try:
    import elasticsearch
    from elasticsearch import helpers
except ImportError:  # pragma: no cover - exercised where the extra is missing
    elasticsearch = None  # type: ignore[assignment]

__all__ = ["ElasticsearchBackend"]

T = TypeVar("T")

log = logging.getLogger(__package__)  # the name it had as one module

_TRANSIENT = (429, 502, 503, 504)
# Keep the first insert time when a document is replaced, so that list order holds.
_REPLACE = (
    "def added = ctx._source.added; ctx._source.clear(); ctx._source.putAll(params.doc);"
    " if (added != null) { ctx._source.added = added; }"
)
_LEGACY_EMBEDDINGS = (
    "it was written by Match or image-match; `lookalike migrate` moves it to the new"
    " layout, which holds embeddings"
)


# -- the backend --------------------------------------------------------------------------


class ElasticsearchBackend(Backend):
    """A lookalike store in one Elasticsearch index (created with ``mapping`` if missing)."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> ElasticsearchBackend:
        """``http(s)://host:9200``, as ``ELASTICSEARCH_URL`` names it."""
        return cls(
            url,
            index=settings.elasticsearch_index,
            knn=settings.elasticsearch_knn,
            words=settings.elasticsearch_words,
            embedding_knn=settings.elasticsearch_embedding_knn,
            stage=settings.elasticsearch_stage,
            refresh=settings.elasticsearch_refresh,
            timeout=settings.elasticsearch_timeout,
        )

    def __init__(
        self,
        url: str,
        *,
        index: str = "images",
        knn: int = 500,
        words: int = 1000,
        embedding_knn: int = 100,
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
        self.embedding_knn = min(embedding_knn, MAX_CANDIDATES)
        self.stage = stage
        self.refresh = refresh
        self.retries = retries
        # Typed as Any: bodies are built as plain dicts and unpacked into the client's calls.
        self._es: Any = client or elasticsearch.Elasticsearch(
            self.url, request_timeout=timeout, max_retries=0, retry_on_timeout=False
        )
        self._legacy: bool | None = None
        # Why this index cannot hold embeddings (legacy layout, or the field was refused),
        # known once the index is opened; None if it can.
        self._no_embeddings: str | None = None
        self._warned = False

    # -- writes -------------------------------------------------------------------------

    def _add_trusted(self, records: Iterable[Record], batch: int = 500) -> int:
        total = 0
        iterator = iter(records)
        while checked := [r for _, r in zip(range(batch), iterator, strict=False)]:
            if self._is_legacy():
                for record in checked:
                    self._delete_legacy(record.filepath)
            if self._no_embeddings and any(r.embedding is not None for r in checked):
                self._warn_no_embeddings()
                checked = [_without_embedding(r) for r in checked]
            self._write(checked)
            total += len(checked)
        return total

    def _delete_trusted(self, filepath: str) -> bool:
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

    def _get_trusted(self, filepath: str) -> Record | None:
        found = self._find(filepath)
        if found is None:
            return None
        source = found["_source"]
        signature = np.asarray(source["signature"], dtype=np.int8)
        return Record(
            source["path"], signature, source.get("metadata"), embedding=embedding_of(source)
        )

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

    def _search_trusted(
        self,
        queries: npt.NDArray[np.int8],
        limit: int,
        max_distance: float,
        where: Filter | None,
    ) -> builtins.list[Match]:
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

    def _search_embedding_trusted(
        self,
        queries: npt.NDArray[np.float32],
        limit: int,
        max_distance: float,
        where: Filter | None,
    ) -> builtins.list[Match]:
        """One kNN query per query row (orientation) in one ``_msearch``, the union of the
        hits re-ranked by the exact cosine distance of their stored embeddings."""
        if not self._exists() or limit <= 0:
            return []
        if self._is_legacy() or self._no_embeddings:
            self._warn_no_embeddings()
            return []
        filters = filter_clauses(where, legacy=False)
        searches: builtins.list[dict[str, Any]] = []
        for row in queries:
            if row.any():  # Elasticsearch refuses a zero vector; it is at 1 from everything
                searches += [
                    {"index": self.index},
                    embedding_knn_body(row, self.embedding_knn, filters),
                ]
        if not searches:
            return []
        response = self._call(lambda: self._es.msearch(searches=searches))
        candidates: dict[str, tuple[dict[str, Any], npt.NDArray[np.float32]]] = {}
        for item in response["responses"]:
            for hit in hits_of(item):
                vector = embedding_of(hit["_source"])
                if vector is None:  # kNN only finds documents that have one
                    raise BackendUnavailable(
                        f"Elasticsearch returned kNN hits of {self.index!r} without their"
                        f" {EMBEDDING!r} in _source, so they cannot be re-ranked"
                    )
                candidates[hit["_id"]] = (hit["_source"], vector)
        return self._rank_embeddings(
            builtins.list(candidates.values()), queries, limit, max_distance, where
        )

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
            "embeddings": self._count_embeddings() if exists else 0,
            "embedding_index": (
                f"none: {self._no_embeddings}"
                if exists and self._no_embeddings
                else f"int8_hnsw kNN candidates (k={self.embedding_knn},"
                f" num_candidates={min(2 * self.embedding_knn, MAX_CANDIDATES)}), exact re-rank"
            ),
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
        """Copy this index into ``target`` in lookalike's layout (created if missing),
        resumably, then with ``swap`` make this index's name an alias of it: see
        ``migrate.copy_index``."""
        if not self._exists():
            raise ConfigError(f"there is no index {self.index!r} to migrate")
        destination = ElasticsearchBackend(
            self.url, index=target, refresh="false", retries=self.retries, client=self._es
        )
        return copy_index(self, destination, swap=swap, batch=batch, progress=progress)

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
        sources = [s for s in sources if matches_filter(s.get("metadata"), where or {})]
        if not sources:
            return []
        stored = np.asarray([s["signature"] for s in sources], dtype=np.int8)
        candidates = [(s["path"], s.get("metadata")) for s in sources]
        return ranked(candidates, signature_distances(queries, stored), max_distance)[:limit]

    def _rank_embeddings(
        self,
        candidates: builtins.list[tuple[dict[str, Any], npt.NDArray[np.float32]]],
        queries: npt.NDArray[np.float32],
        limit: int,
        max_distance: float,
        where: Filter | None,
    ) -> builtins.list[Match]:
        """The exact re-rank: ``cosine_distances`` over the stored embeddings (as every
        backend computes it), the cutoff, best first, ties by filepath, at most ``limit``.
        Elasticsearch's _score (from quantized vectors) is not used."""
        candidates = [c for c in candidates if matches_filter(c[0].get("metadata"), where or {})]
        if not candidates:
            return []
        stored = np.stack([vector for _, vector in candidates])
        found = cosine_distances(queries, stored)
        named = [(source["path"], source.get("metadata")) for source, _ in candidates]
        return ranked(named, found, max_distance, method="embedding")[:limit]

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

    def _write(self, records: builtins.list[Record]) -> None:
        """Upsert the records in one bulk request; failed items are reported, not half-kept
        silently (each item is an idempotent upsert, so a retry is safe)."""
        batch = [self._upsert(record) for record in records]
        outcome: Any = self._call(
            lambda: helpers.bulk(self._es, batch, refresh=self.refresh, raise_on_error=False)
        )
        errors: builtins.list[dict[str, Any]] = outcome[1]
        if errors:
            first = next(iter(errors[0].values()))
            raise BackendUnavailable(
                f"Elasticsearch refused {len(errors)} documents: {error_reason(first.get('error'))}"
            )

    def _find(self, filepath: str) -> dict[str, Any] | None:
        if not self._exists():
            return None
        if not self._is_legacy():
            found = self._call(
                lambda: self._es.options(ignore_status=404).get(
                    index=self.index,
                    id=document_id(filepath),
                    source_includes=[*SOURCE, EMBEDDING],  # named: 9.2+ omits vectors otherwise
                )
            )
            return dict(found) if found.get("found") else None
        matches = self._legacy_ids(filepath)
        return matches[0] if matches else None

    def _legacy_ids(self, filepath: str) -> builtins.list[dict[str, Any]]:
        """Documents whose path is exactly ``filepath``, in an index of another layout."""
        body = {"query": {"match_phrase": {"path": filepath}}, "size": 100, "_source": SOURCE}
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
            legacy = is_legacy(found)
            self._no_embeddings = _LEGACY_EMBEDDINGS if legacy else self._embedding_field(found)
            self._legacy = legacy
        return self._legacy

    def _embedding_field(self, index_mapping: dict[str, Any]) -> str | None:
        """Add the ``embedding`` field to a lookalike index made before embeddings existed;
        returns why the index cannot hold embeddings, or None. A refusal (an Elasticsearch
        older than 8.12, which lacks int8_hnsw, or a user without the manage privilege)
        leaves signatures working and is logged; unreachable clusters still raise."""
        problem = embedding_field_problem(index_mapping)
        if problem is None and EMBEDDING not in (index_mapping.get("properties") or {}):
            answer = self._call(
                lambda: self._es.options(ignore_status=(400, 403)).indices.put_mapping(
                    index=self.index, properties={EMBEDDING: embedding_field()}
                )
            )
            if answer.get("error") is not None:
                reason = error_reason(answer["error"])
                problem = f"Elasticsearch refused to add the {EMBEDDING!r} field: {reason}"
        if problem:
            self._warn_no_embeddings(problem)
        return problem

    def _warn_no_embeddings(self, reason: str | None = None) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "Elasticsearch index %r holds no embeddings, only signatures: %s",
                self.index,
                reason or self._no_embeddings,
            )

    def _count_embeddings(self) -> int:
        if self._is_legacy() or self._no_embeddings:
            return 0
        body = {"query": {"exists": {"field": EMBEDDING}}}
        return int(self._call(lambda: self._es.count(index=self.index, **body))["count"])

    def _create(self) -> None:
        """Create the index; another process creating it first is fine, a refused mapping
        (e.g. a cluster too old for it) is reported rather than found missing later."""
        answer = self._call(
            lambda: self._es.options(ignore_status=400).indices.create(
                index=self.index, mappings=mapping()
            )
        )
        error = answer.get("error")
        if error is not None and not (
            isinstance(error, dict) and error.get("type") == "resource_already_exists_exception"
        ):
            raise BackendUnavailable(
                f"Elasticsearch at {self.shown_url} refused to create {self.index!r}:"
                f" {error_reason(error)}"
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
                        f" {error_reason(body)}"
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


def _without_embedding(record: Record) -> Record:
    return Record(record.filepath, record.signature, record.metadata)
