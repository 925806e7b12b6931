"""The reference backend: a dict in memory and a brute-force scan. Nothing persists.

It is the oracle every other backend is tested against, so it favours the obvious over
the fast: filtering is done record by record with ``base.matches_filter``.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import Settings
from ..errors import NotFound
from ..orientations import ORIENTATIONS
from ..records import Filter, Match, Preview, Record, matches_filter
from ..signature import LENGTH
from ..vectors import EMBEDDING_DIMENSION
from .base import Backend, Search, Vectors
from .scan import EmbeddingMatrix, Hits, SignatureMatrix, top

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Records in insertion order (a replaced record keeps its place), searched exhaustively."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> MemoryBackend:
        return cls()

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._previews: dict[str, Preview] = {}
        self._distinct: set[tuple[str, str]] = set()
        self._writes = 0
        self._slots: dict[str, int] = {}
        self._paths: builtins.list[str | None] = []
        self._matrix = SignatureMatrix()
        self._vectors = EmbeddingMatrix()
        self._vector_slots: dict[str, int] = {}
        self._vector_paths: builtins.list[str | None] = []
        self._lock = threading.RLock()

    def _add_trusted(self, records: Iterable[Record]) -> int:
        checked = list(records)
        with self._lock:
            self._writes += 1
            for record in checked:
                filepath, sig, embedding, preview = (
                    record.filepath,
                    record.signature,
                    record.embedding,
                    record.preview,
                )
                now = time.time()
                old = self._records.get(filepath)
                created = record.created
                if created is None:
                    created = old.created if old is not None else now
                self._records[filepath] = Record(
                    filepath,
                    sig,
                    record.metadata,
                    created,
                    now if record.updated is None else record.updated,
                    embedding=embedding,
                )
                slot = self._slots.get(filepath)
                if slot is None:
                    self._slots[filepath] = int(self._matrix.append(sig[None, :])[0])
                    self._paths.append(filepath)
                else:
                    self._matrix.replace(slot, sig)
                self._set_embedding(filepath, embedding)
                if preview is None:
                    self._previews.pop(filepath, None)
                else:
                    self._previews[filepath] = preview
        return len(checked)

    def _set_embedding(self, filepath: str, embedding: npt.NDArray[np.float32] | None) -> None:
        slot = self._vector_slots.get(filepath)
        if embedding is None:
            if slot is not None:
                self._vectors.kill(slot)
                self._vector_paths[slot] = None
                del self._vector_slots[filepath]
        elif slot is None:
            index = len(self._vector_paths)
            self._vector_slots[filepath] = int(self._vectors.append(embedding[None], [index])[0])
            self._vector_paths.append(filepath)
        else:
            self._vectors.replace(slot, embedding)

    def _delete_trusted(self, filepath: str) -> bool:
        with self._lock:
            if self._records.pop(filepath, None) is None:
                return False
            self._writes += 1
            slot = self._slots.pop(filepath)
            self._matrix.kill(slot)
            self._paths[slot] = None
            self._set_embedding(filepath, None)
            self._previews.pop(filepath, None)
            self._distinct = {pair for pair in self._distinct if filepath not in pair}
            return True

    def _get_trusted(self, filepath: str) -> Record | None:
        with self._lock:
            return self._records.get(filepath)

    def _previews_trusted(
        self, filepaths: builtins.list[str], thumbnails: bool
    ) -> dict[str, Preview]:
        with self._lock:
            found = {p: self._previews[p] for p in filepaths if p in self._previews}
        return found if thumbnails else {p: v.without_thumbnail() for p, v in found.items()}

    def _vectors_trusted(self, column: str, where: Filter | None) -> Vectors:
        with self._lock:
            records = [r for r in self._records.values() if matches_filter(r.metadata, where or {})]
        matrix: npt.NDArray[Any]
        if column == "signature":
            signatures = [r.signature for r in records]
            matrix = np.array(signatures, dtype=np.int8).reshape(-1, LENGTH)
        else:
            records = [r for r in records if r.embedding is not None]
            embeddings = [r.embedding for r in records]
            matrix = np.array(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_DIMENSION)
        created = np.array([r.created for r in records], dtype=np.float64)
        return Vectors([r.filepath for r in records], created, matrix)

    def changes(self) -> int | None:
        with self._lock:
            return self._writes

    def _mark_distinct_trusted(self, first: str, second: str) -> None:
        with self._lock:
            missing = [p for p in (first, second) if p not in self._records]
            if missing:
                raise NotFound(f"no image is stored under {missing[0]!r}")
            self._distinct.add((first, second))

    def _unmark_distinct_trusted(self, first: str, second: str) -> bool:
        with self._lock:
            if (first, second) not in self._distinct:
                return False
            self._distinct.remove((first, second))
            return True

    def _distinct_trusted(self) -> builtins.list[tuple[str, str]]:
        with self._lock:
            return builtins.list(self._distinct)

    def count(self) -> int:
        with self._lock:
            return len(self._records)

    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        with self._lock:
            paths = list(self._records)
        return paths[offset : offset + limit]

    def _search_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        with self._lock:
            allowed = self._allowed(self._paths, where)
            hits = self._matrix.search(queries, max_distance, allowed)
            return self._matches(hits, self._paths, limit, "signature")

    def _search_embedding_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        with self._lock:
            allowed = self._allowed(self._vector_paths, where)
            hits = self._vectors.search(queries, max_distance, allowed)
            return self._matches(hits, self._vector_paths, limit, "embedding")

    def _allowed(
        self, paths: builtins.list[str | None], where: Filter | None
    ) -> npt.NDArray[np.bool_] | None:
        if not where:
            return None
        return np.array(
            [p is not None and matches_filter(self._records[p].metadata, where) for p in paths],
            dtype=bool,
        )

    def _matches(
        self, hits: Hits, paths: builtins.list[str | None], limit: int, method: str
    ) -> builtins.list[Match]:
        chosen = top(hits, limit)
        matches = [
            Match(
                filepath=path,
                distance=float(hits.distances[i]),
                orientation=ORIENTATIONS[hits.orientations[i]],
                metadata=self._records[path].metadata,
                method=method,
            )
            for i in chosen
            if (path := paths[hits.slots[i]]) is not None
        ]
        matches.sort(key=lambda m: (m.distance, m.filepath))
        return matches[:limit]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": "memory",
                "count": len(self._records),
                "index": "exact scan",
                "embeddings": self._vectors.live,
                "memory_bytes": self._matrix.nbytes + self._vectors.nbytes,
            }

    def reindex(self) -> dict[str, Any]:
        return self.stats()

    def close(self) -> None:
        with self._lock:
            self._records.clear()
            self._previews.clear()
            self._distinct.clear()
            self._slots.clear()
            self._paths.clear()
            self._matrix = SignatureMatrix()
            self._vectors = EmbeddingMatrix()
            self._vector_slots.clear()
            self._vector_paths.clear()
