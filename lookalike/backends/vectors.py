"""Exhaustive cosine search over embeddings, and the exact distance every backend reports.

Stores keep embeddings as float16 — what ``check_embedding`` rounds them to, so nothing
is lost. In memory they are held as float32 (5,120 bytes each): NumPy converts float16
in software, at several nanoseconds a value, which made a scan of 20k embeddings take
hundreds of milliseconds; float32 holds the same values exactly. A search scores all
query rows (the orientations) in one pass of float32 products over cache-sized blocks;
rows that come near the cutoff are scored again by :func:`cosine_distances` in float64,
the one definition of the embedding distance that every backend, exact or approximate,
re-ranks with. So a distance does not depend on the store that found the record.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..records import EMBEDDING_DIMENSION, as_stored
from .scan import Hits, SlotMatrix

__all__ = ["EmbeddingMatrix", "cosine_distances"]

_BLOCK = 4096  # rows scored at once: a 20 MB block
_EXACT_BLOCK = 128  # rows scored exactly at once: 128 × 8 × 1280 float64 = 10 MB
_SLACK = 1e-3  # float32 first pass vs float64: far above its rounding error


def cosine_distances(
    queries: npt.NDArray[np.float32], rows: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """For each row, 1 − its best cosine similarity to any query row, and which row that was.

    ``queries`` are unit rows (``check_embedding_queries``); stored rows are divided by
    their own norm, as float16 rounding leaves it a little off 1. A zero row is at 1.
    Each value is summed on its own (not by BLAS, whose rounding depends on the batch),
    so a row's distance does not depend on which other rows it is scored with.
    """
    rows64 = np.asarray(rows, dtype=np.float64).reshape(-1, EMBEDDING_DIMENSION)
    q64 = queries.astype(np.float64)
    distances = np.empty(len(rows64), dtype=np.float64)
    best = np.empty(len(rows64), dtype=np.int64)
    for start in range(0, len(rows64), _EXACT_BLOCK):
        block = rows64[start : start + _EXACT_BLOCK]
        norms = np.sqrt(np.sum(block * block, axis=1))
        similarity = np.sum(block[:, None, :] * q64[None, :, :], axis=2)
        similarity /= np.maximum(norms, 1e-12)[:, None]
        pick = np.argmax(similarity, axis=1)
        best[start : start + len(block)] = pick
        distances[start : start + len(block)] = 1.0 - similarity[np.arange(len(block)), pick]
    return np.clip(distances, 0.0, 2.0), best


class EmbeddingMatrix(SlotMatrix):
    """Embeddings as float32 rows holding float16-exact values, with their inverse norms."""

    _WIDTH = EMBEDDING_DIMENSION
    _DTYPE = np.float32
    _NORM_DTYPE = np.float32

    def _stored(self, rows: npt.ArrayLike) -> npt.NDArray[Any]:
        return as_stored(rows).reshape(-1, EMBEDDING_DIMENSION)

    def _norms_of(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return _inverse_norms(rows)

    def sort_by_key(self) -> None:
        """Drop dead slots and put the live ones in key order (slots change)."""
        self.compact()
        order = np.argsort(self._keys[: self._used], kind="stable")
        for array in (self._rows, self._norms, self._keys):
            array[: self._used] = array[order]

    def search(
        self,
        queries: npt.NDArray[np.float32],
        max_distance: float,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> Hits:
        """Every live (and allowed) slot whose best distance to a query row is < max_distance."""
        q = np.ascontiguousarray(queries, dtype=np.float32).T
        floor = np.float32(1.0 - max_distance - _SLACK)
        found: list[npt.NDArray[np.int64]] = []
        for start, stop, live in self._live_blocks(_BLOCK, allowed):
            similarity = (self._rows[start:stop] @ q).max(axis=1)
            similarity *= self._norms[start:stop]
            found.append(start + np.flatnonzero(live & (similarity > floor)))
        slots = np.concatenate(found) if found else np.empty(0, np.int64)
        distances, best = cosine_distances(queries, self._rows[slots])
        keep = distances < max_distance
        return Hits(slots[keep], distances[keep], best[keep])


def _inverse_norms(block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(block.astype(np.float32), axis=1)
    inverse: npt.NDArray[np.float32] = 1.0 / np.maximum(norms, np.float32(1e-12))
    return inverse
