"""The self-join of a collection: every pair of rows closer than a cutoff, in one pass.

Signatures are compared as matrix products in float32 — every value is a small integer, so
squared distances come out exact — and each pair's distance is then computed in float64
from those integers, bit-identical to ``signature.distance``. Turned copies are found by
turning the stored signature itself: a signature is a 9×9 grid of 8 neighbour differences,
and a turn of the picture moves grid points and neighbours (``TURNS``). That equals the
signature of the turned picture when its crop is symmetric (square pictures, most
photographs turned by a transpose) and is close otherwise (within ~0.15 on
scikit-image's photos), so a turned pair's distance is that of the turned signature.

Small collections are joined exhaustively, in blocks. Large ones are first grouped into
lists by the spherical k-means of the SQLite store's index (``ivf.cluster``); each row,
turned each way, is then scored against the ``nprobe`` lists nearest to it, as a search
would probe them, but a list at a time for every row that probes it. A pair is kept from
whichever side finds it: only recall depends on ``nprobe``.

Embeddings are joined the same way by cosine similarity, and each pair found is measured
again with ``vectors.cosine_distances`` from the first image's embedding taken as a query,
as a search by that stored image measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..orientations import LAYOUTS
from ..signature import LENGTH
from ..vectors import cosine_distances
from .base import check_embedding_queries
from .sqlite.ivf import cluster

__all__ = ["INVERSE", "TURNS", "Pairs", "embedding_pairs", "signature_pairs"]

EXHAUSTIVE_ROWS = 20_000  # up to this many rows, every pair is scored
_BLOCK = 512  # query rows per block (times the orientations)
_STORED_BLOCK = 4096  # stored (or, probed, query) rows per block
_PROBE_CHUNK = 4096  # rows whose nearest lists are found at once
_SLACK = 1e-3  # float32 first pass for embeddings vs the exact distance

Progress = Callable[[int, int], object]  # (steps done, steps in all)


def _turn(layout: tuple[bool, bool, bool]) -> npt.NDArray[np.int64]:
    """Where each value of a turned picture's signature comes from in the original's."""
    transposed, flip_rows, flip_columns = layout
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    source = np.zeros(LENGTH, dtype=np.int64)
    for r in range(9):
        for c in range(9):
            for k, (dr, dc) in enumerate(offsets):
                r2, c2, dr2, dc2 = (c, r, dc, dr) if transposed else (r, c, dr, dc)
                if flip_rows:
                    r2, dr2 = 8 - r2, -dr2
                if flip_columns:
                    c2, dc2 = 8 - c2, -dc2
                source[(r2 * 9 + c2) * 8 + offsets.index((dr2, dc2))] = (r * 9 + c) * 8 + k
    return source


TURNS = tuple(_turn(layout) for layout in LAYOUTS)  # signature[TURNS[o]]: turned by o
# INVERSE[o]: the orientation that undoes o (a pair seen from its other side)
INVERSE = tuple(
    next(j for j, back in enumerate(TURNS) if np.array_equal(turn[back], np.arange(LENGTH)))
    for turn in TURNS
)


@dataclass(frozen=True)
class Pairs:
    """Pairs of rows ``first < second`` within the cutoff: the distance, and the
    orientation that turns ``first`` into the picture ``second`` is of."""

    first: npt.NDArray[np.int64]
    second: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    orientations: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.first)


def signature_pairs(
    rows: npt.NDArray[np.int8],
    max_distance: float,
    *,
    orientations: bool = True,
    nprobe: int = 8,
    progress: Progress | None = None,
) -> Pairs:
    """Every pair of ``rows`` (n, 648) closer than ``max_distance`` (at most 1)."""
    if not 0.0 <= max_distance <= 1.0:
        raise ValueError("a self-join's cutoff is from 0 to 1")
    rows = np.ascontiguousarray(rows, dtype=np.int8)
    norms = np.concatenate(
        [
            _squared_norms(rows[start : start + _PROBE_CHUNK])
            for start in range(0, len(rows), _PROBE_CHUNK)
        ]
        or [np.zeros(0, dtype=np.int32)]
    )
    score = _SignatureScore(rows, norms, max_distance)
    turns = range(len(TURNS) if orientations else 1)
    if len(rows) <= EXHAUSTIVE_ROWS:
        return _unique(_exhaustive(len(rows), score, turns, progress))
    return _unique(_probed(rows, _unit_signatures, score, nprobe, turns, progress))


def embedding_pairs(
    rows: npt.NDArray[np.float32],
    max_distance: float,
    *,
    nprobe: int = 8,
    progress: Progress | None = None,
) -> Pairs:
    """Every pair of unit ``rows`` (n, 1280) whose cosine distance is below the cutoff."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    score = _EmbeddingScore(rows, max_distance)
    if len(rows) <= EXHAUSTIVE_ROWS:
        return _unique(_exhaustive(len(rows), score, range(1), progress))
    return _unique(_probed(rows, _unit_rows, score, nprobe, range(1), progress))


_Ids = npt.NDArray[np.int64]
_Found = tuple[_Ids, _Ids, npt.NDArray[np.float64], _Ids]  # first, second, distance, turn
_Score = Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64], range], _Found]


class _SignatureScore:
    """Pairs between query rows (turned as asked) and stored rows, by row number."""

    def __init__(
        self, rows: npt.NDArray[np.int8], norms: npt.NDArray[np.int32], max_distance: float
    ) -> None:
        self.rows, self.norms, self.max_distance = rows, norms, max_distance
        self.reach = np.float32(max_distance * (1.0 + 1e-5))

    def __call__(
        self, queries: npt.NDArray[np.int64], stored: npt.NDArray[np.int64], turns: range
    ) -> _Found:
        b = self.rows[stored].astype(np.float32)
        nb = self.norms[stored].astype(np.float32)
        na = self.norms[queries].astype(np.float32)
        reach = (np.sqrt(na)[:, None] + np.sqrt(nb)[None, :]) * self.reach
        reach *= reach
        original = self.rows[queries]
        parts = []
        for o in turns:
            a = original[:, TURNS[o]].astype(np.float32)
            squared = na[:, None] + nb[None, :] - 2.0 * (a @ b.T)  # exact integers
            i, j = np.nonzero(squared < reach)
            if not len(i):
                continue
            sq = np.maximum(squared[i, j].astype(np.float64), 0.0)
            denominator = np.sqrt(na[i].astype(np.float64)) + np.sqrt(nb[j].astype(np.float64))
            with np.errstate(invalid="ignore", divide="ignore"):
                d = np.minimum(np.sqrt(sq) / denominator, 1.0)
            d[denominator == 0] = 1.0
            keep = d < self.max_distance
            kept = int(keep.sum())
            parts.append((queries[i[keep]], stored[j[keep]], d[keep], np.full(kept, o)))
        return _concatenated(parts)


class _EmbeddingScore:
    """Pairs of embedding rows, measured again exactly by ``cosine_distances``."""

    def __init__(self, rows: npt.NDArray[np.float32], max_distance: float) -> None:
        self.rows, self.max_distance = rows, max_distance
        self.floor = np.float32(1.0 - max_distance - _SLACK)

    def __call__(
        self, queries: npt.NDArray[np.int64], stored: npt.NDArray[np.int64], turns: range
    ) -> _Found:
        similarity = self.rows[queries] @ self.rows[stored].T
        i, j = np.nonzero(similarity > self.floor)
        first = np.minimum(queries[i], stored[j])
        second = np.maximum(queries[i], stored[j])
        exact = np.empty(len(i), dtype=np.float64)
        for k in range(len(i)):  # as a search by the first image's embedding reports it
            query = check_embedding_queries(self.rows[first[k]])
            exact[k] = cosine_distances(query, self.rows[second[k]][None])[0][0]
        keep = exact < self.max_distance
        zeros = np.zeros(int(keep.sum()), dtype=np.int64)
        return first[keep], second[keep], exact[keep], zeros


def _exhaustive(n: int, score: _Score, turns: range, progress: Progress | None) -> Iterator[_Found]:
    """Every block of query rows against every block of stored rows from its own on."""
    for start in range(0, n, _BLOCK):
        queries = np.arange(start, min(start + _BLOCK, n), dtype=np.int64)
        for stored_start in range(start, n, _STORED_BLOCK):
            stop = min(stored_start + _STORED_BLOCK, n)
            yield score(queries, np.arange(stored_start, stop, dtype=np.int64), turns)
        if progress is not None:
            progress(int(queries[-1]) + 1, n)


def _probed(
    rows: npt.NDArray[Any],
    unit: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]],
    score: _Score,
    nprobe: int,
    turns: range,
    progress: Progress | None,
) -> Iterator[_Found]:
    """Rows grouped into k-means lists; each row, turned each way, is scored against the
    ``nprobe`` lists nearest to it — as a search probes them — a list at a time for all
    the rows that probe it (one matrix product per list and orientation)."""
    n = len(rows)
    centroids, assignment = cluster(rows, lists_for(n), unit=unit, sample=40 * lists_for(n))
    order = np.argsort(assignment, kind="stable")
    counts = np.bincount(assignment, minlength=len(centroids))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    probe = min(max(nprobe, 1), len(centroids))
    steps, done = len(turns) * n, 0
    for o in turns:
        # each row's probed lists, turned by o: (row, list) pairs sorted by list
        probing = np.empty((n, probe), dtype=np.int32)
        for start in range(0, n, _PROBE_CHUNK):
            x = (
                unit(rows[start : start + _PROBE_CHUNK])[:, TURNS[o]]
                if o
                else unit(rows[start : start + _PROBE_CHUNK])
            )
            similarity = x @ centroids.T
            probing[start : start + len(x)] = np.argpartition(-similarity, probe - 1, axis=1)[
                :, :probe
            ]
        flat = probing.ravel()
        by_list = np.argsort(flat, kind="stable")
        starts = np.searchsorted(flat[by_list], np.arange(len(centroids) + 1))
        del probing
        for list_id in range(len(centroids)):
            stored = order[offsets[list_id] : offsets[list_id + 1]]
            queries = (by_list[starts[list_id] : starts[list_id + 1]] // probe).astype(np.int64)
            if len(stored) and len(queries):
                for q in range(0, len(queries), _STORED_BLOCK):
                    yield score(queries[q : q + _STORED_BLOCK], stored, range(o, o + 1))
        done += n
        if progress is not None:
            progress(done, steps)


def lists_for(n: int) -> int:
    """k-means lists of a self-join of ``n`` rows: fewer than a search index's, so that
    training them needs a smaller sample."""
    return max(1, int(2 * np.sqrt(n)))


def _squared_norms(rows: npt.NDArray[np.int8]) -> npt.NDArray[np.int32]:
    wide = rows.astype(np.int32)
    norms: npt.NDArray[np.int32] = np.einsum("ij,ij->i", wide, wide)
    return norms


def _unit_signatures(rows: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
    return _unit_rows(rows.astype(np.float32))


def _unit_rows(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x = np.asarray(rows, dtype=np.float32)
    lengths = np.linalg.norm(x, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = x / np.maximum(lengths, 1e-12)
    return unit


def _concatenated(parts: list[_Found]) -> _Found:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64), empty
    first, second, distances, orientations = (np.concatenate(p) for p in zip(*parts, strict=True))
    return first, second, distances, orientations


def _unique(found: Iterator[_Found]) -> Pairs:
    """Each unordered pair once (``first < second``), at its smallest distance (then its
    lowest orientation, seen from ``first``)."""
    first, second, distances, orientations = _concatenated(list(found))
    swap = first > second
    orientations = np.where(swap, np.asarray(INVERSE, dtype=np.int64)[orientations], orientations)
    first, second = np.where(swap, second, first), np.where(swap, first, second)
    distinct = first != second
    first, second = first[distinct], second[distinct]
    distances, orientations = distances[distinct], orientations[distinct]
    order = np.lexsort((orientations, distances, second, first))
    first, second = first[order], second[order]
    distances, orientations = distances[order], orientations[order]
    new = np.ones(len(first), dtype=bool)
    new[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return Pairs(first[new], second[new], distances[new], orientations[new])
