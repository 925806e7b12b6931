"""Exhaustive search over an in-memory matrix of signatures: the exact search path.

All query rows (the 8 orientations) are scored in one pass over the stored rows. The
products are computed in float32 by BLAS on cache-sized chunks converted from int8;
every value involved is a small integer, so they are exact, and distances come out
bit-identical to ``signature.distance``. Memory per stored signature: 648 bytes of int8,
4 bytes of squared norm and 1 byte of liveness.

This is the seam a faster index slots into: it answers ``(slots, distances, orientations)``
for a query block, and knows nothing of filepaths or storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..signature import LENGTH
from ..vectors import EMBEDDING_DIMENSION, as_stored, cosine_distances

__all__ = [
    "EmbeddingMatrix",
    "Hits",
    "Scored",
    "SignatureMatrix",
    "SlotMatrix",
    "top",
    "within",
]

_CHUNK_ROWS = 2048  # rows converted to float32 at once: 5 MB, within the caches
_BLOCK = 4096  # embedding rows scored at once: a 20 MB block
_SLACK = 1e-3  # float32 first pass vs the exact distance: far above their difference


@dataclass(frozen=True, slots=True)
class Hits:
    """Candidate slots within the cutoff, unsorted, with their best distance and orientation."""

    slots: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    orientations: npt.NDArray[np.int64]


class SlotMatrix:
    """A growable matrix of rows addressed by slot, each with a number derived from it
    (its norm, as a subclass defines it), a liveness flag and an integer key (a store's
    row id; slots appended in key order keep keys sorted). Subclasses set the row width
    and types, how rows are stored (``_stored``) and their norms (``_norms_of``), and search."""

    _WIDTH: int
    _DTYPE: type[np.generic]
    _NORM_DTYPE: type[np.generic]

    def __init__(self, capacity: int = 1024) -> None:
        size = max(capacity, 16)
        self._rows = np.zeros((size, self._WIDTH), dtype=self._DTYPE)
        self._norms = np.zeros(size, dtype=self._NORM_DTYPE)
        self._alive = np.zeros(size, dtype=bool)
        self._keys = np.zeros(size, dtype=np.int64)
        self._used = 0
        self._live = 0

    def _stored(self, rows: npt.ArrayLike) -> npt.NDArray[Any]:
        return np.asarray(rows, dtype=self._DTYPE).reshape(-1, self._WIDTH)

    def _norms_of(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        raise NotImplementedError

    @property
    def used(self) -> int:
        """Slots handed out so far, live or dead."""
        return self._used

    @property
    def live(self) -> int:
        return self._live

    @property
    def alive(self) -> npt.NDArray[np.bool_]:
        """Read-only view of the liveness of slots ``0 .. used-1``."""
        view = self._alive[: self._used]
        view.flags.writeable = False
        return view

    @property
    def keys(self) -> npt.NDArray[np.int64]:
        """Read-only view of the keys of slots ``0 .. used-1``."""
        view = self._keys[: self._used]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes + self._norms.nbytes + self._alive.nbytes + self._keys.nbytes

    def append(
        self, rows: npt.ArrayLike, keys: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.int64]:
        """Store rows (shape (n, width)) in new slots, with their keys; returns the slots."""
        block = self._stored(rows)
        n = len(block)
        self._reserve(self._used + n)
        slots = np.arange(self._used, self._used + n, dtype=np.int64)
        self._used += n
        self._rows[slots] = block
        self._norms[slots] = self._norms_of(block)
        self._alive[slots] = True
        if keys is not None:
            self._keys[slots] = keys
        self._live += n
        return slots

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more slots now: a big batch gets exactly its size."""
        self._reserve(self._used + extra)

    def replace(self, slot: int, row: npt.ArrayLike) -> None:
        if not self._alive[slot]:
            self._live += 1
        block = self._stored(row)
        self._rows[slot] = block[0]
        self._norms[slot] = self._norms_of(block)[0]
        self._alive[slot] = True

    def kill(self, slot: int) -> None:
        if self._alive[slot]:
            self._alive[slot] = False
            self._live -= 1

    def row(self, slot: int) -> npt.NDArray[Any]:
        row: npt.NDArray[Any] = self._rows[slot].copy()
        return row

    def compact(self) -> npt.NDArray[np.int64]:
        """Drop dead slots, keeping the order of the live ones; returns the old slot of
        each new slot."""
        keep = np.flatnonzero(self._alive[: self._used])
        n = len(keep)
        capacity = max(n + n // 16, 16)
        for name in ("_rows", "_norms", "_alive", "_keys"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[:n] = old[keep]
            setattr(self, name, new)
        self._used = self._live = n
        return keep.astype(np.int64)

    def compact_if_sparse(self) -> bool:
        """Compact once over a quarter of the slots (and over 1,024) are dead: scans then
        skip little, and compacting costs little per kill. True if it compacted."""
        if self._used - self._live <= max(1024, self._live // 4):
            return False
        self.compact()
        return True

    def _live_blocks(
        self, size: int, allowed: npt.NDArray[np.bool_] | None
    ) -> Iterator[tuple[int, int, npt.NDArray[np.bool_]]]:
        """(start, stop, mask) of each block of ``size`` slots that holds a live (and
        allowed) row: what every search walks."""
        for start in range(0, self._used, size):
            stop = min(start + size, self._used)
            live = self._alive[start:stop]
            if allowed is not None:
                live = live & allowed[start:stop]
            if live.any():
                yield start, stop, live

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._rows):
            return
        capacity = max(needed, int(len(self._rows) * 1.5))
        for name in ("_rows", "_norms", "_alive", "_keys"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self._used] = old[: self._used]
            setattr(self, name, new)


class SignatureMatrix(SlotMatrix):
    """Signatures as int8 rows, with their squared norms."""

    _WIDTH = LENGTH
    _DTYPE = np.int8
    _NORM_DTYPE = np.int32

    def _norms_of(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return _squared_norms(rows)

    def search(
        self,
        queries: npt.NDArray[np.int8],
        max_distance: float,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> Hits:
        """Every live (and allowed) slot whose best distance to a query row is < max_distance."""
        prepared = _Queries(queries, max_distance)
        found: list[tuple[npt.NDArray[Any], ...]] = []
        for start, stop, live in self._live_blocks(_CHUNK_ROWS, allowed):
            near, best, which = prepared.within(self._rows[start:stop], self._norms[start:stop])
            keep = live[near]
            if keep.any():
                found.append((near[keep] + start, best[keep], which[keep]))
        return _hits(found)


class _Queries:
    """Query rows prepared once for scoring many blocks of stored rows."""

    def __init__(self, queries: npt.NDArray[np.int8], max_distance: float) -> None:
        q = np.asarray(queries, dtype=np.int8).reshape(-1, LENGTH)
        self.columns = np.ascontiguousarray(q.T, dtype=np.float32)
        self.norms = _squared_norms(q).astype(np.float64)
        self.roots = np.sqrt(self.norms)
        self.max_distance = max_distance
        # The first pass compares squared distances in float32; scaling the reach by a
        # margin far above float32 rounding keeps every true match, and the exact pass
        # below drops the few extra rows it lets through.
        self._norms32 = self.norms.astype(np.float32)
        self._roots32 = self.roots.astype(np.float32)
        self._reach = np.float32(max_distance * (1.0 + 1e-5))

    def within(
        self, rows: npt.NDArray[np.int8], norms: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Indices of the rows whose smallest normalised distance to a query row is below
        the cutoff, with that distance (exact) and the query row it was reached with."""
        dots = rows.astype(np.float32) @ self.columns  # small integers: exact in float32
        if self.max_distance > 1.0:  # every distance is at most 1: all rows qualify
            near = np.arange(len(rows), dtype=np.int64)
        else:
            stored = norms.astype(np.float32)
            squared = stored[:, None] + self._norms32[None, :] - 2.0 * dots
            reach = (np.sqrt(stored)[:, None] + self._roots32[None, :]) * self._reach
            near = np.flatnonzero((squared < reach * reach).any(axis=1))
        best, which = self._exact(dots[near], norms[near])
        keep = best < self.max_distance
        return near[keep], best[keep], which[keep]

    def _exact(
        self, dots: npt.NDArray[np.float32], norms: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Smallest distance of each row and its query row, as ``signature.distance`` has it."""
        stored = norms.astype(np.float64)
        squared = stored[:, None] + self.norms[None, :] - 2.0 * dots.astype(np.float64)
        np.maximum(squared, 0.0, out=squared)
        denominator = np.sqrt(stored)[:, None] + self.roots[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.minimum(np.sqrt(squared) / denominator, 1.0)
        d[denominator == 0] = 1.0
        best = d.argmin(axis=1)
        return d[np.arange(len(d)), best], best.astype(np.int64)


def within(
    rows: npt.NDArray[np.int8],
    norms: npt.NDArray[np.int32],
    queries: npt.NDArray[np.int8],
    max_distance: float,
) -> Hits:
    """Rows (by index) whose best distance to a query row is below ``max_distance``."""
    prepared = _Queries(queries, max_distance)
    found = [
        (near + start, *rest)
        for start in range(0, len(rows), _CHUNK_ROWS)
        for near, *rest in [
            prepared.within(rows[start : start + _CHUNK_ROWS], norms[start : start + _CHUNK_ROWS])
        ]
    ]
    return _hits(found)


def _hits(found: list[tuple[npt.NDArray[Any], ...]]) -> Hits:
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return Hits(empty, np.zeros(0, dtype=np.float64), empty)
    slots, dists, orients = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return Hits(slots.astype(np.int64), dists.astype(np.float64), orients.astype(np.int64))


def _squared_norms(signatures: npt.NDArray[np.int8]) -> npt.NDArray[np.int32]:
    wide = signatures.astype(np.int32)
    result: npt.NDArray[np.int32] = np.einsum("ij,ij->i", wide, wide)
    return result


class Scored(Protocol):
    """Hits of any kind: by slot, or (in a store) by row id."""

    @property
    def distances(self) -> npt.NDArray[np.float64]: ...


def top(hits: Scored, limit: int) -> npt.NDArray[np.int64]:
    """Indices into ``hits`` of the best ``limit`` entries plus any tied with the last one."""
    if limit <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(hits.distances) <= limit:
        return np.arange(len(hits.distances), dtype=np.int64)
    kth = np.partition(hits.distances, limit - 1)[limit - 1]
    return np.flatnonzero(hits.distances <= kth).astype(np.int64)


class EmbeddingMatrix(SlotMatrix):
    """Embeddings as float32 rows holding float16-exact values, with their inverse norms."""

    _WIDTH = EMBEDDING_DIMENSION
    _DTYPE = np.float32
    _NORM_DTYPE = np.float32

    def _stored(self, rows: npt.ArrayLike) -> npt.NDArray[Any]:
        return as_stored(rows).reshape(-1, EMBEDDING_DIMENSION)

    def _norms_of(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return _inverse_norms(rows)

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
