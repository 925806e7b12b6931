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

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..signature import LENGTH

__all__ = ["Hits", "SignatureMatrix", "top", "within"]

_CHUNK_ROWS = 2048  # rows converted to float32 at once: 5 MB, within the caches


@dataclass(frozen=True, slots=True)
class Hits:
    """Candidate slots within the cutoff, unsorted, with their best distance and orientation."""

    slots: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    orientations: npt.NDArray[np.int64]


class SignatureMatrix:
    """A growable int8 matrix of signatures addressed by slot, with a liveness mask and an
    integer key per slot (a store's row id; slots appended in key order keep keys sorted)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._rows = np.zeros((max(capacity, 16), LENGTH), dtype=np.int8)
        self._norms = np.zeros(len(self._rows), dtype=np.int32)
        self._alive = np.zeros(len(self._rows), dtype=bool)
        self._keys = np.zeros(len(self._rows), dtype=np.int64)
        self._used = 0
        self._live = 0

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
        self, signatures: npt.NDArray[np.int8], keys: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.int64]:
        """Store signatures (shape (n, 648)) in new slots, with their keys; returns the slots."""
        signatures = np.asarray(signatures, dtype=np.int8).reshape(-1, LENGTH)
        n = len(signatures)
        self._reserve(self._used + n)
        slots = np.arange(self._used, self._used + n, dtype=np.int64)
        self._used += n
        self._rows[slots] = signatures
        self._norms[slots] = _squared_norms(signatures)
        self._alive[slots] = True
        if keys is not None:
            self._keys[slots] = keys
        self._live += n
        return slots

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more slots now: a big batch gets exactly its size."""
        self._reserve(self._used + extra)

    def replace(self, slot: int, signature: npt.NDArray[np.int8]) -> None:
        if not self._alive[slot]:
            self._live += 1
        self._rows[slot] = signature
        self._norms[slot] = _squared_norms(signature.reshape(1, LENGTH))[0]
        self._alive[slot] = True

    def kill(self, slot: int) -> None:
        if self._alive[slot]:
            self._alive[slot] = False
            self._live -= 1

    def row(self, slot: int) -> npt.NDArray[np.int8]:
        row: npt.NDArray[np.int8] = self._rows[slot].copy()
        return row

    def search(
        self,
        queries: npt.NDArray[np.int8],
        max_distance: float,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> Hits:
        """Every live (and allowed) slot whose best distance to a query row is < max_distance."""
        prepared = _Queries(queries, max_distance)
        found: list[tuple[npt.NDArray[Any], ...]] = []
        for start in range(0, self._used, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, self._used)
            live = self._alive[start:stop]
            if allowed is not None:
                live = live & allowed[start:stop]
            if not live.any():
                continue
            near, best, which = prepared.within(self._rows[start:stop], self._norms[start:stop])
            keep = live[near]
            if keep.any():
                found.append((near[keep] + start, best[keep], which[keep]))
        return _hits(found)

    def compact(self) -> npt.NDArray[np.int64]:
        """Drop dead slots; returns the old slot of each new slot."""
        keep = np.flatnonzero(self._alive[: self._used])
        n = len(keep)
        rows = np.zeros((max(n + n // 16, 16), LENGTH), dtype=np.int8)
        rows[:n] = self._rows[keep]
        norms = np.zeros(len(rows), dtype=np.int32)
        norms[:n] = self._norms[keep]
        alive = np.zeros(len(rows), dtype=bool)
        alive[:n] = True
        keys = np.zeros(len(rows), dtype=np.int64)
        keys[:n] = self._keys[keep]
        self._rows, self._norms, self._alive, self._keys = rows, norms, alive, keys
        self._used = self._live = n
        return keep.astype(np.int64)

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._rows):
            return
        capacity = max(needed, int(len(self._rows) * 1.5))
        for name in ("_rows", "_norms", "_alive", "_keys"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self._used] = old[: self._used]
            setattr(self, name, new)


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
            d = np.sqrt(squared) / denominator
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


def top(hits: Hits, limit: int) -> npt.NDArray[np.int64]:
    """Indices into ``hits`` of the best ``limit`` entries plus any tied with the last one."""
    if limit <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(hits.distances) <= limit:
        return np.arange(len(hits.distances), dtype=np.int64)
    kth = np.partition(hits.distances, limit - 1)[limit - 1]
    return np.flatnonzero(hits.distances <= kth).astype(np.int64)
