"""What a process keeps to search a store's embeddings: an exact scan, or an index.

Embeddings live in the ``images`` table's ``embedding`` column (float16, 2,560 bytes;
NULL when the image has none). Each process catches up from the version-stamped rows and
tombstones, on its own version counter, so that a search in any process sees an add that
returned in another.

A small store is held in memory (float16) and scanned exactly. From ``min_rows``
embeddings on, an HNSW index of the embeddings at some version (``hnsw``) is built in the
background (``python -m lookalike.backends.sqlite embeddings DATABASE``) into
``<database>.embeddings/`` and memory-mapped by every process, which then keeps only the
delta in memory: the embeddings added or changed since the index's version, scanned
exactly, and the ids of index rows deleted or changed since, masked out (``follower``).
Index candidates are re-ranked with ``cosine_distances`` from the index's float16
vectors — the stored values — so every distance equals the exact scan's; only recall is
at stake.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...vectors import EMBEDDING_DIMENSION, cosine_distances
from ..scan import EmbeddingMatrix
from .follower import Exact, Follower, Generation, RowHits
from .generations import Column, IndexFolder, Kind, read_values, snapshot
from .hnsw import HnswIndex, index_available

__all__ = [
    "CANDIDATES",
    "EMBEDDINGS",
    "EXACT_ROWS",
    "EmbeddingState",
    "HnswGeneration",
    "build",
    "decode",
    "encode",
]

Ids = npt.NDArray[np.int64]

CANDIDATES = 256  # per query orientation (at least the limit): recall@10 0.99 at 1M
EXACT_ROWS = 4096  # at most this many index rows to search: scan them exactly
_MAX_CANDIDATES = 4096  # a filter so narrow it needs more: scan the allowed rows exactly
_SLACK = 0.01  # usearch's float16 distances vs exact: far above their rounding error
_SCAN_ROWS = 5000  # index rows copied out at once for an exact scan

EMBEDDING = Column("embedding", "<f2", EMBEDDING_DIMENSION, nullable=True)


def encode(embedding: npt.NDArray[np.float32] | None) -> bytes | None:
    """The column value of an embedding (checked by ``base.check_embedding``)."""
    return None if embedding is None else EMBEDDING.encode(embedding)


def decode(blob: bytes | None) -> npt.NDArray[np.float32] | None:
    if blob is None:
        return None
    vector: npt.NDArray[np.float32] = np.frombuffer(blob, EMBEDDING.dtype).astype(np.float32)
    return vector


def build(database: str | Path) -> dict[str, Any]:
    """Build and publish a generation of every embedding as it is now; returns its header.

    Waits for any other build of this folder to finish. Reads the rows in one read
    transaction, so the index is exactly the database at the version it names."""

    def make() -> tuple[HnswIndex, dict[str, Any]]:
        index = HnswIndex.create()
        with snapshot(Path(database)) as (db, facts):
            for ids, vectors in read_values(db, EMBEDDING):
                index.add(ids, vectors)
        if not len(index):
            raise ValueError("the store has no embeddings: there is nothing to index")
        return index, facts

    return IndexFolder(database, EMBEDDINGS).build(make)


EMBEDDINGS = Kind("embeddings", ".embeddings", EMBEDDING, HnswIndex.load, build)


class HnswGeneration(Generation[HnswIndex]):
    """An HNSW index, with the sorted ids of its rows masked."""

    def __init__(self, index: HnswIndex, header: dict[str, Any]) -> None:
        super().__init__(index, header)
        self.masked: Ids = np.empty(0, dtype=np.int64)

    @property
    def hidden(self) -> int:
        return len(self.masked)

    @property
    def nbytes(self) -> int:
        return self.masked.nbytes

    def hide(self, ids: Ids) -> None:
        if len(ids):
            self.masked = np.union1d(self.masked, ids[self.index.contains(ids)])

    def ids(self) -> Ids:
        keys = self.index.keys
        return np.sort(keys[~np.isin(keys, self.masked)] if len(self.masked) else keys)


class EmbeddingState(Follower[HnswGeneration]):
    """The live embeddings of a store: all in memory, or a shared HNSW index and a delta.

    ``min_rows``: from this many embeddings on, build and search an HNSW index (0:
    never); ``exact_rows`` and ``candidates`` tune the index's search."""

    def __init__(self, database: str | Path, *, min_rows: int, build_in_background: bool) -> None:
        # The index needs usearch (the cnn extra); without it every search is exact.
        indexable = min_rows > 0 and index_available()
        super().__init__(
            EMBEDDINGS,
            database if indexable else None,
            min_rows=min_rows,
            build_in_background=build_in_background,
        )
        self.exact_rows = EXACT_ROWS
        self.candidates = CANDIDATES

    def _exact(self) -> Exact:
        return Exact(EmbeddingMatrix(capacity=0))

    def _generation(self, index: HnswIndex, header: dict[str, Any]) -> HnswGeneration:
        return HnswGeneration(index, header)

    def describe(self) -> dict[str, Any]:
        generation = self.generation
        facts: dict[str, Any] = {
            "embedding_index": "exact scan" if generation is None else "hnsw",
            "embedding_index_min_rows": self.min_rows,
        }
        if generation is not None:
            facts |= {
                "embedding_index_rows": len(generation.index),
                "embedding_index_version": generation.version,
                "embedding_index_shared_bytes": generation.index.nbytes,
                "embedding_changes_since_index": self.changes,
            }
        if self.folder is not None:
            facts["embedding_index_building"] = self.folder.building()
        return facts

    def _search(
        self,
        generation: HnswGeneration,
        queries: npt.NDArray[np.float32],
        max_distance: float,
        allowed: Ids | None,
        limit: int,
    ) -> RowHits:
        """The ``limit`` best of each query row are found with recall ≥ 0.99
        (``bench/embeddings_index.py``), and the rest within ``max_distance`` may be."""
        index, masked = generation.index, generation.masked
        if allowed is None:
            wanted = generation.live
        else:
            allowed = allowed[index.contains(allowed)]
            allowed = allowed[~np.isin(allowed, masked)]
            wanted = len(allowed)
        if wanted == 0:
            return RowHits.joined([])
        # Masked and filtered-out rows take places among the candidates: ask for more.
        count = math.ceil(max(limit, self.candidates) * len(index) / wanted)
        if wanted <= self.exact_rows or count > _MAX_CANDIDATES:
            ids = generation.ids() if allowed is None else np.sort(allowed)
            return _scan(index, ids, queries, max_distance)
        keys, approximate = index.search(queries, count)
        keys = np.unique(keys[approximate < max_distance + _SLACK])
        keys = keys[~np.isin(keys, masked)]
        if allowed is not None:
            keys = keys[np.isin(keys, allowed)]
        distances, best = cosine_distances(queries, index.values(keys))
        keep = distances < max_distance
        return RowHits(keys[keep], distances[keep], best[keep])


def _scan(
    index: HnswIndex, ids: Ids, queries: npt.NDArray[np.float32], max_distance: float
) -> RowHits:
    """An exact scan of these index rows, as the in-memory scan computes it."""
    found = []
    for start in range(0, len(ids), _SCAN_ROWS):
        chunk = ids[start : start + _SCAN_ROWS]
        matrix = EmbeddingMatrix(capacity=len(chunk))
        matrix.append(index.values(chunk), chunk)
        found.append(RowHits.of(matrix.search(queries, max_distance), chunk))
    return RowHits.joined(found)
