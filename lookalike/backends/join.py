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
lists by the spherical k-means the SQLite store's index uses (``kmeans.cluster``), each row
a member of its ``SPILL`` nearest lists (a copy and its original often fall on either side
of a border: at 1M rows and 16 probes, three lists a row find 0.996 of the pairs, two
0.985, one 0.953; one list and 32 probes, as much work as two lists, 0.977); each row,
turned each way, is then scored against the members of the ``nprobe`` lists nearest to
it, as a search would probe them, but a list at a time for every row that probes it. A
pair is kept from whichever side and list finds it: only recall depends on ``nprobe``.

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
from .kmeans import cluster

__all__ = ["INVERSE", "TURNS", "Pairs", "embedding_pairs", "signature_pairs"]

EXHAUSTIVE_ROWS = 20_000  # up to this many rows, every pair is scored
SPILL = 3  # lists each row is a member of, in a probed join
_BLOCK = 512  # query rows per block (times the orientations)
_STORED_BLOCK = 4096  # stored (or, probed, query) rows per block
_PROBE_CHUNK = 4096  # rows whose nearest lists are found at once
_SLACK = 1e-3  # float32 first pass for embeddings vs the exact distance
_PROBE_ROWS = 131_072  # query rows whose probes are found at once
_EXACT_CHUNK = 2048  # candidate pairs measured exactly at once
_BASIS_SAMPLE = 20_000  # rows whose second moments give the projected join's basis
_ENERGY = 0.95  # of the rows' energy the lists and probes keep (less: worse lists)
_FILTER_ENERGY = 0.90  # and the filter (less: more pairs to measure exactly, none lost)
_MIN_BASIS, _MAX_BASIS = 32, 256
_FOLD = 4_000_000  # pairs found (some more than once) held before duplicates are dropped

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
    nprobe: int = 16,
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
    return _unique(_projected(rows, norms, score, nprobe, turns, progress))


def embedding_pairs(
    rows: npt.NDArray[np.float32],
    max_distance: float,
    *,
    nprobe: int = 16,
    progress: Progress | None = None,
) -> Pairs:
    """Every pair of unit ``rows`` (n, 1280) whose cosine distance is below the cutoff."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    score = _EmbeddingScore(rows, max_distance)
    if len(rows) <= EXHAUSTIVE_ROWS:
        return _unique(_exhaustive(len(rows), score, range(1), progress))
    return _unique(_probed(rows, score, nprobe, progress))


_Ids = npt.NDArray[np.int64]
_Found = tuple[_Ids, _Ids, npt.NDArray[np.float64], _Ids]  # first, second, distance, turn
_Score = Callable[[_Ids, _Ids, range], _Found]  # (queries, stored, query orientations)


class _SignatureScore:
    """Pairs between query rows turned as asked and stored rows, by row number.

    A pair is within the cutoff r when ``‖a − b‖² < r² (‖a‖ + ‖b‖)²``, i.e. when
    ``a·b > (‖a‖² + ‖b‖²)/2 − r²(‖a‖ + ‖b‖)²/2``; as ``(‖a‖ + ‖b‖)² ≤ 2(‖a‖² + ‖b‖²)``,
    every such pair has ``a·b − c‖a‖² − c‖b‖² > 0`` with ``c = 1/2 − r²``. Each row carries
    two more columns so that one float32 matrix product gives that (its products are of
    small integers, exact; the margin of 1 covers the rounding of the ``c`` terms), and
    only the few rows that pass are measured exactly, from their integers."""

    def __init__(
        self, rows: npt.NDArray[np.int8], norms: npt.NDArray[np.int32], max_distance: float
    ) -> None:
        self.rows, self.norms, self.max_distance = rows, norms, max_distance
        self.c = np.float32(0.5 - (max_distance * (1.0 + 1e-6)) ** 2)
        self.wide = max_distance * (1.0 + 1e-3)  # the projected filter's cutoff

    def _extended(
        self, rows: npt.NDArray[np.int8], norms: npt.NDArray[np.int32], query: bool
    ) -> npt.NDArray[np.float32]:
        """Rows as float32 with the two columns: (−c‖a‖², 1) for queries, (1, −c‖b‖²)."""
        out = np.empty((len(rows), LENGTH + 2), dtype=np.float32)
        out[:, :LENGTH] = rows
        scaled = -self.c * norms.astype(np.float32)
        out[:, LENGTH], out[:, LENGTH + 1] = (scaled, 1.0) if query else (1.0, scaled)
        return out

    def projected_queries(
        self,
        rows: npt.NDArray[np.int8],
        basis: npt.NDArray[np.float32],
        lengths: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        """Query rows for the projected filter: ``(2Pa, 2R²‖a‖, R²‖a‖² − ‖Pa‖², 1)``.

        With the stored rows' ``(Pb, ‖b‖, 1, R²‖b‖² − ‖Pb‖²)``, a product is
        ``R²(‖a‖ + ‖b‖)² − ‖Pa − Pb‖²``: positive for every pair within R, as
        ``‖Pa − Pb‖ ≤ ‖a − b‖``. R is the cutoff widened by 1e-3 and the product compared
        with −1, so float32 rounding cannot drop a pair."""
        k, r2 = basis.shape[1], np.float32(self.wide**2)
        out = np.empty((len(rows), k + 3), dtype=np.float32)
        for start in range(0, len(rows), _STORED_BLOCK):
            part = out[start : start + _STORED_BLOCK]
            length = lengths[start : start + _STORED_BLOCK]
            np.matmul(rows[start : start + _STORED_BLOCK], basis, out=part[:, :k])
            part[:, -2] = r2 * length**2 - np.einsum("ij,ij->i", part[:, :k], part[:, :k])
            part[:, :k] *= 2
        out[:, -3] = 2 * r2 * lengths
        out[:, -1] = 1.0
        return out

    def projected_stored(
        self,
        rows: npt.NDArray[np.int8],
        basis: npt.NDArray[np.float32],
        turn: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        """Stored rows turned by ``turn`` for the projected filter (see
        ``projected_queries``)."""
        k, r2 = basis.shape[1], np.float32(self.wide**2)
        out = np.empty((len(rows), k + 3), dtype=np.float32)
        # x[turn] @ B = x @ B[argsort(turn)]: turn the basis, not the rows
        np.matmul(rows, basis[np.argsort(turn)], out=out[:, :k])
        out[:, -3] = lengths
        out[:, -2] = 1.0
        out[:, -1] = r2 * lengths**2 - np.einsum("ij,ij->i", out[:, :k], out[:, :k])
        return out

    def verified(
        self, queries: _Ids, stored: _Ids, o: int, product: npt.NDArray[np.float32]
    ) -> _Found:
        """The pairs the projected filter let through, measured exactly: query rows turned
        by ``o`` against stored rows (turned back, which is the same distance)."""
        i, j = _above(product, -1.0)
        parts = []
        for start in range(0, len(i), _EXACT_CHUNK):  # in chunks: each costs 2.6 kB a pair
            first, second = (
                queries[i[start : start + _EXACT_CHUNK]],
                stored[j[start : start + _EXACT_CHUNK]],
            )
            b = self.rows[second][:, TURNS[INVERSE[o]]]
            parts.append(self._exact(first, second, self.rows[first], b, o))
        return _concatenated(parts)

    def _exact(
        self, first: _Ids, second: _Ids, a: npt.NDArray[np.int8], b: npt.NDArray[np.int8], o: int
    ) -> _Found:
        diff = a.astype(np.int16) - b.astype(np.int16)
        squared = np.einsum("ij,ij->i", diff, diff, dtype=np.int64).astype(np.float64)
        denominator = np.sqrt(self.norms[first].astype(np.float64)) + np.sqrt(
            self.norms[second].astype(np.float64)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.minimum(np.sqrt(squared) / denominator, 1.0)
        d[denominator == 0] = 1.0
        keep = d < self.max_distance
        return first[keep], second[keep], d[keep], np.full(int(keep.sum()), o)

    def __call__(self, queries: _Ids, stored: _Ids, turns: range) -> _Found:
        a_rows, b_rows = self.rows[queries], self.rows[stored]
        fixed = self._extended(b_rows, self.norms[stored], query=False)
        parts = []
        for o in turns:
            a = a_rows[:, TURNS[o]]
            product = self._extended(a, self.norms[queries], query=True) @ fixed.T
            i, j = _above(product, -1.0)
            if len(i):
                parts.append(self._exact(queries[i], stored[j], a[i], b_rows[j], o))
        return _concatenated(parts)


class _EmbeddingScore:
    """Pairs of embedding rows, measured again exactly by ``cosine_distances``."""

    def __init__(self, rows: npt.NDArray[np.float32], max_distance: float) -> None:
        self.rows, self.max_distance = rows, max_distance
        self.floor = np.float32(1.0 - max_distance - _SLACK)

    def __call__(self, queries: _Ids, stored: _Ids, turns: range) -> _Found:
        similarity = self.rows[queries] @ self.rows[stored].T
        i, j = _above(similarity, self.floor)
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
    """Every block of stored rows against every block of query rows before its end (the
    query blocks, small, turned each way)."""
    for stored_start in range(0, n, _STORED_BLOCK):
        stop = min(stored_start + _STORED_BLOCK, n)
        stored = np.arange(stored_start, stop, dtype=np.int64)
        for start in range(0, stop, _BLOCK):
            queries = np.arange(start, min(start + _BLOCK, stop), dtype=np.int64)
            yield score(queries, stored, turns)
        if progress is not None:
            progress(stop * stop, n * n)


def _probed(
    rows: npt.NDArray[np.float32], score: _Score, nprobe: int, progress: Progress | None
) -> Iterator[_Found]:
    """Embedding rows grouped into k-means lists; each row is scored against the
    ``nprobe`` lists nearest to it — as a search probes them — a list at a time for all
    the rows that probe it (one matrix product per list)."""
    centroids, order, offsets = _lists(rows, _unit_rows)
    probe = min(max(nprobe, 1), len(centroids))
    for list_id, asking in _asking(rows, _unit_rows, centroids, probe, progress, 0, 1):
        stored = order[offsets[list_id] : offsets[list_id + 1]]
        for q in range(0, len(asking), _STORED_BLOCK):
            yield score(asking[q : q + _STORED_BLOCK], stored, range(1))


def _asking(
    rows: npt.NDArray[Any],
    unit: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]],
    centroids: npt.NDArray[np.float32],
    probe: int,
    progress: Progress | None,
    turn: int,
    turns: int,
) -> Iterator[tuple[int, _Ids]]:
    """Each list and the rows probing it, a list at a time. Every row's probes are held at
    once (four bytes each), found ``_PROBE_ROWS`` rows at a time, so that whatever a list
    costs to prepare is paid once. ``progress`` is told of the lists done, this being
    the ``turn``-th of ``turns`` passes."""
    blocks = []
    for start in range(0, len(rows), _PROBE_ROWS):
        probers, starts = _probes(rows[start : start + _PROBE_ROWS], unit, centroids, probe)
        blocks.append(((probers + start).astype(np.int32), starts))
    nlist = len(centroids)
    for list_id in range(nlist):
        asking = np.concatenate([p[s[list_id] : s[list_id + 1]] for p, s in blocks])
        if len(asking):
            yield list_id, asking.astype(np.int64)
        if progress is not None and (list_id % 64 == 63 or list_id == nlist - 1):
            progress(turn * nlist + list_id + 1, turns * nlist)


def _lists(
    rows: npt.NDArray[Any], unit: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]]
) -> tuple[npt.NDArray[np.float32], _Ids, _Ids]:
    """The rows' k-means lists (as ``unit`` makes the rows): the centroids, the members of
    each list (every row in its ``SPILL`` nearest) in list order, and where each list
    starts among them."""
    nlist = lists_for(len(rows))  # trained on 16 rows a list: enough to place them
    centroids, _ = cluster(rows, nlist, unit=unit, sample=max(10_000, 16 * nlist))
    members, starts = _probes(rows, unit, centroids, min(SPILL, len(centroids)))
    return centroids, members, starts


def _projected(
    rows: npt.NDArray[np.int8],
    norms: npt.NDArray[np.int32],
    score: _SignatureScore,
    nprobe: int,
    turns: range,
    progress: Progress | None,
) -> Iterator[_Found]:
    """The probed join of signatures, in the few dimensions that hold most of their
    energy: lists and probes are found there, and a pair is measured exactly only if its
    distance there, which never exceeds the whole one (an orthonormal projection), is
    within the cutoff. So the filter drops no pair, and each list costs a product of
    ~75 columns, not 648: many more lists can be probed for the same time."""
    basis, narrow = _basis(rows)  # lists and probes in the first, the filter in the second

    def unit(block: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
        return _unit_rows(block @ basis)

    lengths: npt.NDArray[np.float32] = np.sqrt(norms.astype(np.float32))
    queries = score.projected_queries(rows, narrow, lengths)
    centroids, order, offsets = _lists(rows, unit)
    probe = min(max(nprobe, 1), len(centroids))
    lifted = centroids @ basis.T  # the centroids back in the signatures' space
    for k, o in enumerate(turns):
        back = TURNS[INVERSE[o]]
        # a turned row's similarity to a centroid is the row's to the centroid turned back
        turned_centroids = _unit_rows(lifted[:, back] @ basis)
        probing = _asking(rows, unit, turned_centroids, probe, progress, k, len(turns))
        for list_id, asking in probing:
            members = order[offsets[list_id] : offsets[list_id + 1]]
            if not len(members):
                continue
            stored = score.projected_stored(rows[members], narrow, back, lengths[members])
            for q in range(0, len(asking), _STORED_BLOCK):
                block = asking[q : q + _STORED_BLOCK]
                yield score.verified(block, members, o, queries[block] @ stored.T)


def _probes(
    rows: npt.NDArray[Any],
    unit: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]],
    centroids: npt.NDArray[np.float32],
    probe: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The rows (positions in ``rows``) probing each list, grouped by list, and where each
    list's group starts: each row, as ``unit`` makes it, probes its ``probe`` most similar
    centroids."""
    lists_of, rows_of = [], []
    for start in range(0, len(rows), _PROBE_CHUNK):
        similarity = unit(rows[start : start + _PROBE_CHUNK]) @ centroids.T
        # the probe-th largest of each row (np.partition is far faster than argpartition)
        floor = np.partition(similarity, len(centroids) - probe, axis=1)[:, -probe]
        chunk_rows, lists = _above(similarity, floor[:, None], inclusive=True)
        lists_of.append(lists.astype(np.int32))
        rows_of.append(chunk_rows + start)
    lists = np.concatenate(lists_of)
    by_list = np.argsort(lists, kind="stable")
    probers = np.concatenate(rows_of)[by_list]
    return probers, np.searchsorted(lists[by_list], np.arange(len(centroids) + 1))


def _basis(
    rows: npt.NDArray[np.int8],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Two orthonormal bases (648 × k, the second the first's leading columns) of the
    directions holding ``_ENERGY`` and ``_FILTER_ENERGY`` of a sample of rows' energy:
    the leading eigenvectors of their second moments."""
    sample = rows[:: max(1, len(rows) // _BASIS_SAMPLE)]
    moments = np.zeros((rows.shape[1], rows.shape[1]))
    for start in range(0, len(sample), _STORED_BLOCK):  # small blocks: little memory
        block = sample[start : start + _STORED_BLOCK].astype(np.float64)
        moments += block.T @ block
    values, vectors = np.linalg.eigh(moments)
    values, vectors = values[::-1], vectors[:, ::-1]
    share = np.cumsum(values) / max(values.sum(), 1e-12)

    def width(energy: float) -> int:
        return int(np.clip(np.searchsorted(share, energy) + 1, _MIN_BASIS, _MAX_BASIS))

    basis = np.ascontiguousarray(vectors[:, : width(_ENERGY)], dtype=np.float32)
    narrow = np.ascontiguousarray(basis[:, : width(_FILTER_ENERGY)])
    return basis, narrow


def lists_for(n: int) -> int:
    """k-means lists of a self-join of ``n`` rows. (Twice as many, each row in three and
    24 probed, found 0.9925 of the pairs at 1M against 0.9887, on a sample of 530, but
    took 1.5 times as long at 300k: the probes' cost grows with the lists.)"""
    return max(1, int(2 * np.sqrt(n)))


def _above(
    matrix: npt.NDArray[np.float32], floor: Any, *, inclusive: bool = False
) -> tuple[_Ids, _Ids]:
    """Row and column of each entry above ``floor`` (or equal to it, if ``inclusive``),
    row by row: as ``np.nonzero(matrix > floor)``, through the flat positions (many
    times faster for the few entries a filter passes)."""
    flat = np.flatnonzero(matrix >= floor if inclusive else matrix > floor)
    rows, columns = np.divmod(flat, matrix.shape[1])
    return rows, columns


def _squared_norms(rows: npt.NDArray[np.int8]) -> npt.NDArray[np.int32]:
    wide = rows.astype(np.int32)
    norms: npt.NDArray[np.int32] = np.einsum("ij,ij->i", wide, wide)
    return norms


def _unit_rows(rows: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    unit: npt.NDArray[np.float32] = np.array(rows, dtype=np.float32)  # a copy, scaled in place
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    return unit


def _concatenated(parts: list[_Found]) -> _Found:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64), empty
    first, second, distances, orientations = (np.concatenate(p) for p in zip(*parts, strict=True))
    return first, second, distances, orientations


def _unique(found: Iterator[_Found]) -> Pairs:
    """Each unordered pair once (``first < second``), at its smallest distance (then its
    lowest orientation, seen from ``first``). A pair found several times (from either
    side, in several lists) is held once every ``_FOLD`` pairs, not until the end."""
    parts: list[_Found] = []
    held = 0
    for part in found:
        parts.append(part)
        held += len(part[0])
        if held > _FOLD:
            parts = [_fold(_concatenated(parts))]
            held = len(parts[0][0])
    first, second, distances, orientations = _fold(_concatenated(parts))
    return Pairs(first, second, distances, orientations)


def _fold(found: _Found) -> _Found:
    first, second, distances, orientations = found
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
    return first[new], second[new], distances[new], orientations[new]
