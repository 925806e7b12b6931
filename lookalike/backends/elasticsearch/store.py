"""``ElasticsearchBackend``: a lookalike store in one Elasticsearch index, written in one of
the two layouts that ``queries.Layout`` tells apart (the package's docstring says how
documents are kept and searched), its distinct marks in a second (``index.DistinctMarks``);
requests go through ``index.Index``."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np

from ...config import Settings
from ...errors import BackendUnavailable, ConfigError, NotFound
from ...records import Match, Preview, Record
from ..base import Backend, Search, redacted
from .index import DistinctMarks, Index, check_installed, connect
from .migrate import copy_index
from .queries import (
    EMBEDDING,
    MAX_CANDIDATES,
    PREVIEW,
    PREVIEW_SIZES,
    SOURCE,
    document_id,
    embedding_knn_body,
    embedding_of,
    filter_clauses,
    hits_of,
    knn_body,
    normalise_url,
    preview_of,
    rank_embeddings,
    rank_signatures,
    word_body,
)

__all__ = ["ElasticsearchBackend"]

_MGET = 1000  # documents per _mget


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
        check_installed()
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
        self._es: Any = client or connect(self.url, timeout)
        self._remote = Index(
            self._es, index, shown_url=self.shown_url, refresh=refresh, retries=retries
        )
        self._marks = DistinctMarks(self._remote)

    # -- writes -------------------------------------------------------------------------

    def _add_trusted(self, records: Iterable[Record], batch: int = 500) -> int:
        total = 0
        iterator = iter(records)
        while checked := [r for _, r in zip(range(batch), iterator, strict=False)]:
            if self._is_legacy():
                for record in checked:
                    self._delete_legacy(record.filepath)
            if self._remote.no_embeddings and any(r.embedding is not None for r in checked):
                self._remote.warn_no_embeddings()
                checked = [dataclasses.replace(r, embedding=None) for r in checked]
            if self._remote.no_previews:  # (logged when the index was opened)
                checked = [dataclasses.replace(r, preview=None) for r in checked]
            self._remote.write(checked)
            total += len(checked)
        return total

    def _delete_trusted(self, filepath: str) -> bool:
        """Delete the record, then every distinct mark naming its filepath (even if the
        record was gone already: a mark left by a race or another program must not
        survive into an image added again under that path)."""
        if not self._remote.exists():
            return False
        if self._is_legacy():
            gone = self._delete_legacy(filepath) > 0
        else:
            response = self._remote.call(
                lambda: self._es.options(ignore_status=404).delete(
                    index=self.index, id=document_id(filepath), refresh=self.refresh
                )
            )
            gone = response.get("result") == "deleted"
        self._marks.forget(filepath)
        return gone

    def _mark_distinct_trusted(self, first: str, second: str) -> None:
        for path in (first, second):
            if self._find(path) is None:
                raise NotFound(f"no image is stored under {path!r}")
        self._marks.mark(first, second)

    def _unmark_distinct_trusted(self, first: str, second: str) -> bool:
        return self._marks.unmark(first, second)

    def _distinct_trusted(self) -> builtins.list[tuple[str, str]]:
        return self._marks.pairs()

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

    def _previews_trusted(
        self, filepaths: builtins.list[str], thumbnails: bool
    ) -> dict[str, Preview]:
        """One ``_mget`` of the documents' ``preview`` per thousand filepaths, the
        thumbnail left out of _source unless asked for. A legacy index keeps none."""
        if not filepaths or not self._remote.exists() or self._is_legacy():
            return {}
        if self._remote.no_previews:
            return {}
        includes = ["path", PREVIEW] if thumbnails else ["path", *PREVIEW_SIZES]
        paths = builtins.list(dict.fromkeys(filepaths))
        found: dict[str, Preview] = {}
        for start in range(0, len(paths), _MGET):
            ids = [document_id(path) for path in paths[start : start + _MGET]]
            answer = self._remote.call(
                partial(self._es.mget, index=self.index, ids=ids, source_includes=includes)
            )
            for doc in answer["docs"]:
                source = doc.get("_source") if doc.get("found") else None
                if source and (preview := preview_of(source)) is not None:
                    found[source["path"]] = preview
        return found

    def count(self) -> int:
        return self._remote.count()

    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        """Filepaths in insertion order, any depth: a point in time and ``search_after``."""
        if limit <= 0 or not self._remote.exists():
            return []
        sort = self._remote.layout().order
        pit = self._remote.call(
            lambda: self._es.open_point_in_time(index=self.index, keep_alive="1m")
        )
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
                hits = hits_of(self._remote.call(partial(self._es.search, **body)))
                if not hits:
                    break
                after = hits[-1]["sort"]
                taken = hits[skip:]
                skip = max(0, skip - len(hits))
                out.extend(h["_source"]["path"] for h in taken)
        finally:
            self._remote.call(lambda: self._es.close_point_in_time(id=pit["id"]))
        return out[:limit]

    def _search_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        if not self._remote.exists() or limit <= 0:
            return []
        filters = filter_clauses(where, self._is_legacy())
        use_knn = self._uses_knn()
        bodies = [
            knn_body(row, self.knn, 2 * self.knn, filters)
            if use_knn
            else word_body(row, self.words, filters)
            for row in queries
        ]
        sources = builtins.list(self._msearch(bodies).values())
        return rank_signatures(sources, queries, max_distance, where)[:limit]

    def _search_embedding_trusted(self, search: Search) -> builtins.list[Match]:
        """One kNN query per query row (orientation) in one ``_msearch``, the union of the
        hits re-ranked by the exact cosine distance of their stored embeddings."""
        queries, limit, max_distance, where = search
        if not self._remote.exists() or limit <= 0:
            return []
        if self._is_legacy() or self._remote.no_embeddings:
            self._remote.warn_no_embeddings()
            return []
        filters = filter_clauses(where, legacy=False)
        bodies = [
            embedding_knn_body(row, self.embedding_knn, filters)
            for row in queries
            if row.any()  # Elasticsearch refuses a zero vector; it is at 1 from everything
        ]
        if not bodies:
            return []
        candidates = []
        for source in self._msearch(bodies).values():
            vector = embedding_of(source)
            if vector is None:  # kNN only finds documents that have one
                raise BackendUnavailable(
                    f"Elasticsearch returned kNN hits of {self.index!r} without their"
                    f" {EMBEDDING!r} in _source, so they cannot be re-ranked"
                )
            candidates.append((source, vector))
        return rank_embeddings(candidates, queries, max_distance, where)[:limit]

    def stats(self) -> dict[str, Any]:
        exists = self._remote.exists()
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
            "layout": self._remote.layout().name if exists else "not created",
            "embeddings": self._remote.count_embeddings() if exists else 0,
            "embedding_index": (
                f"none: {self._remote.no_embeddings}"
                if exists and self._remote.no_embeddings
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
        destination = Index(
            self._es, target, shown_url=self.shown_url, refresh="false", retries=self.retries
        )
        return copy_index(self._remote, destination, swap=swap, batch=batch, progress=progress)

    def close(self) -> None:
        self._es.close()

    # -- internals ----------------------------------------------------------------------

    def _uses_knn(self) -> bool:
        """kNN where asked for and possible: legacy indices have no vectors."""
        return self.stage == "knn" and not self._is_legacy()

    def _msearch(self, bodies: builtins.list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The union of the hits of ``bodies`` (one per query row), sent in one
        ``_msearch``: each hit's _source by its id."""
        searches = [line for body in bodies for line in ({"index": self.index}, body)]
        response = self._remote.call(lambda: self._es.msearch(searches=searches))
        return {
            hit["_id"]: hit["_source"] for item in response["responses"] for hit in hits_of(item)
        }

    def _find(self, filepath: str) -> dict[str, Any] | None:
        if not self._remote.exists():
            return None
        if not self._is_legacy():
            found = self._remote.call(
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
        hits = hits_of(self._remote.call(lambda: self._es.search(index=self.index, **body)))
        return [h for h in hits if h["_source"].get("path") == filepath]

    def _delete_legacy(self, filepath: str) -> int:
        gone = 0
        for hit in self._legacy_ids(filepath):
            remove = self._es.options(ignore_status=404).delete
            self._remote.call(
                partial(remove, index=self.index, id=hit["_id"], refresh=self.refresh)
            )
            gone += 1
        return gone

    def _is_legacy(self) -> bool:
        """Whether the index has the legacy layout (read once; the index created if missing)."""
        return self._remote.layout().legacy
