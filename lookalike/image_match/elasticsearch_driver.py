"""image-match's Elasticsearch driver, ``SignatureES``, for the official 8.x client.

Documents keep image-match's layout, so an application keeps its index: ``path``,
``signature`` (a list), ``metadata`` when given, ``simple_word_0`` … and ``timestamp``. A
search asks for the documents sharing any word with the query (a ``bool`` of ``should``
``term`` queries), then measures each candidate exactly. Elasticsearch 8 has no document
types: ``doc_type`` is accepted, kept, and not sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from .signature_database_base import Record, SignatureDatabaseBase, normalized_distance

__all__ = ["SignatureES"]

_DUPLICATES_PAGE = 1000  # hits read at once by delete_duplicates


class SignatureES(SignatureDatabaseBase):
    """image-match's signatures in Elasticsearch: ``es`` is an ``elasticsearch.Elasticsearch``
    client; ``size``: candidates read per search; ``timeout``: each search's time limit.
    Other arguments go to ``SignatureDatabaseBase``."""

    def __init__(
        self,
        es: Any,
        index: str = "images",
        doc_type: str = "image",
        timeout: str = "10s",
        size: int = 100,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.es, self.index, self.doc_type = es, index, doc_type
        self.timeout, self.size = timeout, size
        super().__init__(*args, **kwargs)

    def search_single_record(self, rec: Record) -> list[Record]:
        """The documents within ``distance_cutoff`` of a record, among the ``size`` that
        share the most words with it: ``id``, ``score`` (Elasticsearch's), ``metadata``,
        ``path`` and ``dist``."""
        words = {key: value for key, value in rec.items() if key.startswith("simple_word_")}
        response = self.es.search(
            index=self.index,
            query={"bool": {"should": [{"term": {k: v}} for k, v in words.items()]}},
            source={"excludes": ["simple_word_*"]},
            size=self.size,
            timeout=self.timeout,
        )
        hits = response["hits"]["hits"]
        if not hits:
            return []
        stored = np.array([hit["_source"]["signature"] for hit in hits])
        distances = normalized_distance(stored, np.array(rec["signature"]))
        matches = []
        for hit, dist in zip(hits, distances, strict=True):
            if dist < self.distance_cutoff:
                source = hit["_source"]
                matches.append(
                    {
                        "id": hit["_id"],
                        "score": hit["_score"],
                        "metadata": source.get("metadata"),
                        "path": source.get("url", source.get("path")),
                        "dist": dist,
                    }
                )
        return matches

    def insert_single_record(self, rec: Record, refresh_after: bool = False) -> None:
        """Index one record, with the time it was added; ``refresh_after`` makes it
        searchable before this returns."""
        rec["timestamp"] = datetime.now()
        self.es.index(index=self.index, document=rec, refresh=refresh_after)

    def delete_duplicates(self, path: str) -> None:
        """Delete every document whose ``path`` is exactly ``path`` but one."""
        ids: list[str] = []
        after: list[Any] | None = None
        while True:  # every match, a page at a time (image-match only looked at 10)
            page = self.es.search(
                index=self.index,
                query={"match": {"path": path}},
                source=["path"],
                size=_DUPLICATES_PAGE,
                sort=["_doc"],
                **({"search_after": after} if after else {}),
            )["hits"]["hits"]
            ids += [hit["_id"] for hit in page if hit["_source"].get("path") == path]
            if len(page) < _DUPLICATES_PAGE:
                break
            after = page[-1]["sort"]
        for duplicate in ids[1:]:
            self.es.delete(index=self.index, id=duplicate)
