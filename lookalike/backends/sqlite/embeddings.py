"""The embedding side of the SQLite store: what a process keeps to search embeddings.

Embeddings live in the ``images`` table's ``embedding`` column (float16, 2,560 bytes;
NULL when the image has none). Each process catches up from the version-stamped rows and
tombstones, on its own version counter, so that a search in any process sees an add that
returned in another.

A small store is held in memory (float16) and scanned exactly. From ``min_rows``
embeddings on, an HNSW index of the embeddings at some version is built in the
background (``hnsw``) and memory-mapped by every process, which then keeps
only the delta in memory: the embeddings added or changed since the index's version,
scanned exactly, and the ids of index rows deleted or changed since, masked out. Index
candidates are re-ranked with ``cosine_distances`` from the index's float16 vectors —
the stored values — so every distance equals the exact scan's; only recall is at stake.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...vectors import EMBEDDING_DIMENSION, cosine_distances
from ..scan import EmbeddingMatrix, Hits
from .hnsw import EmbeddingIndex, build, check, folder, index_available

__all__ = ["EmbeddingRows", "decode", "encode"]

Ids = npt.NDArray[np.int64]

log = logging.getLogger(__name__)

_BATCH = 5000
CANDIDATES = 256  # per query orientation (at least the limit): recall@10 0.99 at 1M
EXACT_ROWS = 4096  # at most this many index rows to search: scan them exactly
_MAX_CANDIDATES = 4096  # a filter so narrow it needs more: scan the allowed rows exactly
_SLACK = 0.01  # usearch's float16 distances vs exact: far above their rounding error
_REBUILD_FRACTION = 0.2  # rebuild an index once this share of its rows has changed


def encode(embedding: npt.NDArray[np.float32] | None) -> bytes | None:
    """The column value of an embedding (checked by ``base.check_embedding``)."""
    return None if embedding is None else embedding.astype("<f2").tobytes()


def decode(blob: bytes | None) -> npt.NDArray[np.float32] | None:
    if blob is None:
        return None
    vector: npt.NDArray[np.float32] = np.frombuffer(blob, dtype="<f2").astype(np.float32)
    return vector


class _Exact:
    """Embeddings in memory, keyed by row id (slots kept in id order), scanned exactly."""

    def __init__(self) -> None:
        self.matrix = EmbeddingMatrix(capacity=16)

    def search(
        self, queries: npt.NDArray[np.float32], max_distance: float, allowed: Ids | None
    ) -> Hits:
        mask = None if allowed is None else np.isin(self.matrix.keys, allowed)
        hits = self.matrix.search(queries, max_distance, mask)
        return Hits(self.matrix.keys[hits.slots], hits.distances, hits.orientations)

    def _slots(self, ids: Ids) -> npt.NDArray[np.int64]:
        """The slot of each id, or -1."""
        keys = self.matrix.keys
        slots = np.searchsorted(keys, ids).astype(np.int64)
        found = slots < len(keys)
        found[found] = keys[slots[found]] == ids[found]
        return np.where(found, slots, -1)

    def upsert(self, ids: Ids, vectors: npt.NDArray[np.float16]) -> None:
        slots = self._slots(ids)
        for i in np.flatnonzero(slots >= 0):
            self.matrix.replace(int(slots[i]), vectors[i])
        new = slots < 0
        keys = self.matrix.keys
        in_order = not len(keys) or ids[new].min(initial=keys[-1] + 1) > keys[-1]
        self.matrix.append(vectors[new], ids[new])
        if not in_order:  # an old row that gained an embedding: restore the id order
            self.matrix.sort_by_key()

    def remove(self, ids: Ids) -> None:
        if not len(ids) or not self.matrix.live:
            return
        slots = self._slots(ids)
        for slot in slots[slots >= 0].tolist():
            self.matrix.kill(slot)
        self.matrix.compact_if_sparse()


class EmbeddingRows:
    """The live embeddings of a store: all in memory, or a shared index and a delta."""

    def __init__(
        self,
        database: str | Path | None = None,
        *,
        min_rows: int = 20_000,
        build_in_background: bool = True,
    ) -> None:
        """``min_rows``: from this many embeddings on, build and search an HNSW index
        (0: never); ``database`` None: never (a store in memory only)."""
        self.min_rows = min_rows
        self.build_in_background = build_in_background
        # The index needs usearch (the cnn extra); without it every search is exact.
        indexable = min_rows > 0 and index_available()
        self._folder = folder(database) if database is not None and indexable else None
        self._exact = _Exact()  # every embedding, or the delta of an index
        self._index: EmbeddingIndex | None = None
        self._index_version = -1
        self._index_name: str | None = None  # the generation last adopted or refused
        self._masked: Ids = np.empty(0, dtype=np.int64)  # index rows deleted or changed
        self.version = -1
        self.exact_rows = EXACT_ROWS
        self.candidates = CANDIDATES

    @property
    def live(self) -> int:
        base = len(self._index) - len(self._masked) if self._index is not None else 0
        return base + self._exact.matrix.live

    @property
    def nbytes(self) -> int:
        """Private to this process (a shared index not counted)."""
        matrix = self._exact.matrix
        return (matrix.nbytes if matrix.live else 0) + self._masked.nbytes

    @property
    def changes(self) -> int:
        """Index rows masked plus rows in the delta: what a rebuild would fold in."""
        return len(self._masked) + self._exact.matrix.live

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "embedding_index": "exact scan" if self._index is None else "hnsw",
            "embedding_index_min_rows": self.min_rows,
        }
        if self._index is not None:
            facts |= {
                "embedding_index_rows": len(self._index),
                "embedding_index_version": self._index_version,
                "embedding_index_shared_bytes": self._index.nbytes,
                "embedding_changes_since_index": self.changes,
            }
        if self._folder is not None:
            facts["embedding_index_building"] = self._folder.building()
        return facts

    def reindex(self) -> None:
        """Build and publish an index of the embeddings as they are now (none if there
        are none, or if indexing is off); the next catch-up adopts it."""
        if self._folder is None:
            return
        with contextlib.suppress(ValueError):  # no embeddings: the exact scan serves them
            build(self._folder.database)

    def catch_up(self, db: sqlite3.Connection, version: int, pruned: int) -> None:
        """Apply the rows and tombstones newer than ``self.version``; ``db`` is inside a
        read transaction that has seen ``version``."""
        if self.version < pruned:  # never loaded, stale, or older than the tombstones kept
            self._exact = _Exact()
            self._index, self._index_name, self._masked = None, None, self._masked[:0]
            self.version = 0
        if self._folder is not None and (name := self._folder.current()) != self._index_name:
            self._index_name = name
            self._adopt(db, name, version, pruned)
        if version == self.version:
            return
        dead = db.execute("SELECT id FROM tombstones WHERE version > ?", (self.version,))
        self._forget(np.array([row_id for (row_id,) in dead], dtype=np.int64))
        rows = db.execute(
            "SELECT id, embedding FROM images WHERE version > ? ORDER BY id", (self.version,)
        )
        while batch := rows.fetchmany(_BATCH):
            # Rows without an embedding may have replaced rows that had one.
            self._forget(np.array([i for i, vector in batch if vector is None], dtype=np.int64))
            with_vectors = [(i, vector) for i, vector in batch if vector is not None]
            if not with_vectors:
                continue
            ids = np.array([i for i, _ in with_vectors], dtype=np.int64)
            blob = b"".join(vector for _, vector in with_vectors)
            self._mask(ids)
            self._exact.upsert(
                ids, np.frombuffer(blob, dtype="<f2").reshape(-1, EMBEDDING_DIMENSION)
            )
        self.version = version
        self._maybe_build()

    def _forget(self, ids: Ids) -> None:
        """Rows gone or left without an embedding: out of the index's results, and of
        the exact rows."""
        if len(ids) and self.live:
            self._mask(ids)
            self._exact.remove(ids)

    def search(
        self,
        queries: npt.NDArray[np.float32],
        max_distance: float,
        allowed: Ids | None,
        limit: int = 100,
    ) -> Hits:
        """Live rows within ``max_distance`` (and among ``allowed`` ids); ``slots`` are row
        ids. Exact without an index; with one, the ``limit`` best of each query row are
        found with recall ≥ 0.99 (``bench/embeddings_index.py``) and the rest may be."""
        delta = self._exact.search(queries, max_distance, allowed)
        if self._index is None:
            return delta
        base = self._search_index(self._index, queries, max_distance, allowed, limit)
        return Hits(
            np.concatenate([base.slots, delta.slots]),
            np.concatenate([base.distances, delta.distances]),
            np.concatenate([base.orientations, delta.orientations]),
        )

    # -- the index ------------------------------------------------------------------------

    def _search_index(
        self,
        index: EmbeddingIndex,
        queries: npt.NDArray[np.float32],
        max_distance: float,
        allowed: Ids | None,
        limit: int,
    ) -> Hits:
        if allowed is None:
            wanted = len(index) - len(self._masked)
        else:
            allowed = allowed[index.contains(allowed)]
            allowed = allowed[~np.isin(allowed, self._masked)]
            wanted = len(allowed)
        if wanted == 0:
            return _no_hits()
        # Masked and filtered-out rows take places among the candidates: ask for more.
        count = math.ceil(max(limit, self.candidates) * len(index) / wanted)
        if wanted <= self.exact_rows or count > _MAX_CANDIDATES:
            ids = allowed if allowed is not None else _without(index.keys(), self._masked)
            return self._scan(index, np.sort(ids), queries, max_distance)
        keys, approximate = index.search(queries, count)
        keys = np.unique(keys[approximate < max_distance + _SLACK])
        keys = keys[~np.isin(keys, self._masked)]
        if allowed is not None:
            keys = keys[np.isin(keys, allowed)]
        distances, best = cosine_distances(queries, index.vectors(keys))
        keep = distances < max_distance
        return Hits(keys[keep], distances[keep], best[keep])

    def _scan(
        self,
        index: EmbeddingIndex,
        ids: Ids,
        queries: npt.NDArray[np.float32],
        max_distance: float,
    ) -> Hits:
        """An exact scan of these index rows, as the in-memory scan computes it."""
        found = []
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            matrix = EmbeddingMatrix(capacity=len(chunk))
            matrix.append(index.vectors(chunk), chunk)
            hits = matrix.search(queries, max_distance)
            found.append(Hits(chunk[hits.slots], hits.distances, hits.orientations))
        if not found:
            return _no_hits()
        return Hits(
            np.concatenate([h.slots for h in found]),
            np.concatenate([h.distances for h in found]),
            np.concatenate([h.orientations for h in found]),
        )

    def _mask(self, ids: Ids) -> None:
        """Hide these rows of the index (deleted or changed since its version)."""
        if self._index is not None and len(ids):
            self._masked = np.union1d(self._masked, ids[self._index.contains(ids)])

    def _adopt(self, db: sqlite3.Connection, name: str | None, version: int, pruned: int) -> None:
        """Switch to the published generation ``name`` if it can serve the database as it
        is; the catch-up that follows applies the changes since its version."""
        if name is None or self._folder is None:
            return
        try:
            index, header = EmbeddingIndex.load(self._folder.path / name)
            problem = check(db, index, header, version, pruned)
        except ValueError as error:
            problem = str(error)
        if problem is None:
            self._index, self._index_version = index, header["version"]
            self._exact, self._masked = _Exact(), self._masked[:0]
            self.version = header["version"]
            return
        log.warning("not using the embedding index %s of %s: %s", name, self._folder.path, problem)
        if self._index is not None:  # back to an exact scan, loaded in full
            self._index, self._exact, self._masked = None, _Exact(), self._masked[:0]
            self.version = 0
        self._request_build()

    def _maybe_build(self) -> None:
        if self._index is not None:
            if self.changes > _REBUILD_FRACTION * len(self._index):
                self._request_build()
        elif self.min_rows and self.live >= self.min_rows:
            self._request_build()

    def _request_build(self) -> None:
        if self.build_in_background and self._folder is not None:
            self._folder.build_in_background()


def _without(ids: Ids, masked: Ids) -> Ids:
    return ids[~np.isin(ids, masked)] if len(masked) else ids


def _no_hits() -> Hits:
    return Hits(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64))
