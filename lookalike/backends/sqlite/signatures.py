"""What a process keeps in memory to search a store's signatures: an exact scan, or an index.

Small stores hold every signature in a ``SignatureMatrix`` and scan it all. From
``index_min_rows`` rows on, an :class:`IvfIndex` of the signatures at some version is
built in the background (``python -m lookalike.backends.sqlite signatures DATABASE``),
saved beside the database in ``<database>.index/`` and memory-mapped by every process,
which then searches it plus an exact delta of the rows added or changed since; the rows
of the index deleted or changed since are masked out (``follower``). Every distance is
recomputed exactly, so only recall depends on ``nprobe``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...signature import LENGTH
from ..scan import SignatureMatrix
from .follower import Exact, Follower, Generation, RowHits
from .generations import Column, IndexFolder, Kind, read_values, snapshot
from .ivf import IvfIndex

__all__ = ["SIGNATURES", "IvfGeneration", "SignatureState", "build"]

Ids = npt.NDArray[np.int64]

SIGNATURE = Column("signature", "i1", LENGTH, nullable=False)


def build(database: str | Path, *, nlist: int | None = None) -> dict[str, Any]:
    """Build and publish a generation from the rows as they are now; returns its header.

    Waits for any other build to finish first. Reads the rows in one read transaction,
    so the index is exactly the database at the version it names."""

    def make() -> tuple[IvfIndex, dict[str, Any]]:
        with snapshot(Path(database)) as (db, facts):
            (count,) = db.execute("SELECT count(*) FROM images").fetchone()
            ids = np.empty(count, dtype=np.int64)
            signatures = np.empty((count, LENGTH), dtype=np.int8)
            done = 0
            for batch, values in read_values(db, SIGNATURE):
                ids[done : done + len(batch)] = batch
                signatures[done : done + len(batch)] = values
                done += len(batch)
        if not count:
            raise ValueError("the store is empty: there is nothing to index")
        return IvfIndex.build(signatures, ids, nlist=nlist), facts

    return IndexFolder(database, SIGNATURES).build(make)


SIGNATURES = Kind("signatures", ".index", SIGNATURE, IvfIndex.load, build)


class IvfGeneration(Generation[IvfIndex]):
    """An IVF index, with the liveness of each of its rows (by position)."""

    def __init__(self, index: IvfIndex, header: dict[str, Any]) -> None:
        super().__init__(index, header)
        self.alive = np.ones(len(index), dtype=bool)
        self._live = len(index)

    @property
    def hidden(self) -> int:
        return len(self.index) - self._live

    @property
    def nbytes(self) -> int:
        return self.alive.nbytes

    def hide(self, ids: Ids) -> None:
        positions = self.index.position_of(ids)
        positions = positions[positions >= 0]
        self._live -= int(self.alive[positions].sum())
        self.alive[positions] = False

    def ids(self) -> Ids:
        return np.asarray(self.index.sorted_keys[self.alive[self.index.positions]])


class SignatureState(Follower[IvfGeneration]):
    """The live signatures of a store: all in memory, or a shared IVF index and a delta.

    ``nprobe``: index lists probed per query orientation; ``min_rows``: from this many
    rows on, build an index in the background (0: only ``reindex`` builds one; one
    already published is still used)."""

    def __init__(
        self,
        database: str | Path,
        *,
        min_rows: int,
        nprobe: int,
        build_in_background: bool,
    ) -> None:
        self.nprobe = nprobe
        super().__init__(
            SIGNATURES, database, min_rows=min_rows, build_in_background=build_in_background
        )

    def _exact(self) -> Exact:
        return Exact(SignatureMatrix(capacity=0))

    def _generation(self, index: IvfIndex, header: dict[str, Any]) -> IvfGeneration:
        return IvfGeneration(index, header)

    def _search(
        self,
        generation: IvfGeneration,
        queries: npt.NDArray[np.int8],
        max_distance: float,
        allowed: Ids | None,
        limit: int,
    ) -> RowHits:
        index, mask = generation.index, generation.alive
        if allowed is not None:
            mask = np.zeros(len(index), dtype=bool)
            positions = index.position_of(allowed)
            mask[positions[positions >= 0]] = True
            mask &= generation.alive
        hits = index.search(queries, max_distance, self.nprobe, allowed=mask)
        return RowHits.of(hits, index.keys)

    def describe(self) -> dict[str, Any]:
        generation = self.generation
        if generation is None:
            return {"index": "exact scan"}
        return {
            "index": "ivf",
            "index_version": generation.version,
            "index_rows": len(generation.index),
            "index_lists": generation.index.nlist,
            "index_nprobe": self.nprobe,
            "index_shared_bytes": generation.index.nbytes,
            "changes_since_index": self.changes,
        }
