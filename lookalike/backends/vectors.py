"""Exhaustive cosine search over embeddings, and the exact distance every backend reports.

Stores keep embeddings as float16 — what ``check_embedding`` rounds them to, so nothing
is lost. In memory they are held as float32 (5,120 bytes each): NumPy converts float16
in software, at several nanoseconds a value, which made a scan of 20k embeddings take
hundreds of milliseconds; float32 holds the same values exactly. A search scores all
query rows (the orientations) in one pass of float32 products over cache-sized blocks;
rows that come near the cutoff are scored again by :func:`cosine_distances`, exactly (in
integers), the one definition of the embedding distance that every backend, exact or
approximate, re-ranks with. So a distance does not depend on the store that found the
record, nor on what else was scored with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..records import EMBEDDING_DIMENSION, as_stored
from .scan import Hits, SlotMatrix

__all__ = ["EmbeddingMatrix", "cosine_distances"]

_BLOCK = 4096  # rows scored at once: a 20 MB block
_EXACT_BLOCK = 1024  # rows scored exactly at once: 1024 × 1280 int64 = 10 MB
_FIXED = 2.0**24  # every float16 value is an integer multiple of 2**-24
_SLACK = 1e-3  # float32 first pass vs the exact distance: far above their difference


def cosine_distances(
    queries: npt.NDArray[np.float32], rows: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """For each row, 1 − its best cosine similarity to any query row, and which row that was.

    The one definition of the embedding distance. Stored values are float16 (rows are
    rounded as stores keep them), so each is an integer multiple of 2**-24; query values
    are rounded to that grid. Dot products and squared norms of those integers are exact
    in int64 (values within ±2, 1280 of them: below 2**60), and only the last steps round:
    ``cos = dot / (sqrt(‖row‖²) · sqrt(‖query‖²))``, each term converted to float64 once.
    So a row's distance depends on that row and the query alone, never on which other
    rows share its batch, their order or the BLAS. A zero row (or query) is at 1.
    """
    q = _fixed(queries)
    q_norms = np.sqrt(np.einsum("ij,ij->i", q, q).astype(np.float64))
    rows16 = np.asarray(rows).reshape(-1, EMBEDDING_DIMENSION)
    distances = np.empty(len(rows16), dtype=np.float64)
    best = np.empty(len(rows16), dtype=np.int64)
    for start in range(0, len(rows16), _EXACT_BLOCK):
        block = _fixed(as_stored(rows16[start : start + _EXACT_BLOCK]))
        norms = np.sqrt(np.einsum("ij,ij->i", block, block).astype(np.float64))
        denominators = norms[:, None] * q_norms[None, :]
        dots = (block @ q.T).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.where(denominators > 0, dots / denominators, 0.0)
        pick = np.argmax(similarity, axis=1)
        best[start : start + len(block)] = pick
        distances[start : start + len(block)] = 1.0 - similarity[np.arange(len(block)), pick]
    return np.clip(distances, 0.0, 2.0), best


def _fixed(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Values as integer multiples of 2**-24 (exact for float16 values); at most 2 each,
    which keeps 1280 products of two of them summed within int64."""
    scaled = np.asarray(values, dtype=np.float64) * _FIXED
    if not np.all(np.abs(scaled) <= 2 * _FIXED):  # also refuses NaN
        raise ValueError("embedding values must be finite and at most 2 in magnitude")
    fixed: npt.NDArray[np.int64] = np.rint(scaled).astype(np.int64)
    return fixed


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
