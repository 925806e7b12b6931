"""The follower: how one process keeps the search state of one column current.

Every write transaction of the store stamps the rows it writes, and a tombstone for each
row it deletes, with the next number of a version counter. A follower holds what a
process needs to search one column of the rows (the signatures, or the embeddings) and,
before each read, catches up by applying the rows and tombstones newer than the version
it has seen. It holds either

* every value in memory, named by row id and scanned exactly (:class:`Exact`), or
* a published :class:`Generation` of the column's index — built from the rows at some
  version, shared by every process, memory-mapped, read-only — with a private mask of
  its rows deleted or changed since, and an :class:`Exact` delta of the rows added or
  changed since.

It adopts a newly published generation once ``generations.check`` says that it can serve
the database as it is (the catch-up then reads only the changes since its version),
falls back to the exact scan when one cannot, and asks for a background build when the
column has reached ``min_rows`` values, or the changes since the index a fraction of it.
Every distance is computed from the stored values, so only recall depends on an index.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from ..scan import EmbeddingMatrix, Hits, SignatureMatrix
from .generations import Index, IndexFolder, Kind, check

__all__ = ["BATCH", "REBUILD_FRACTION", "Exact", "Follower", "Generation", "RowHits"]

Ids = npt.NDArray[np.int64]

log = logging.getLogger(__name__)

BATCH = 5000  # rows read from the database at a time
REBUILD_FRACTION = 0.2  # rebuild an index once this share of its rows has changed


@dataclass(frozen=True, slots=True)
class RowHits:
    """Rows within a search's cutoff, named by row id, unsorted, with their best distance
    and the query row (orientation) it was reached with."""

    rows: Ids
    distances: npt.NDArray[np.float64]
    orientations: Ids

    @classmethod
    def of(cls, hits: Hits, keys: Ids) -> RowHits:
        """Hits by slot, named by the key (row id) of each slot."""
        return cls(keys[hits.slots], hits.distances, hits.orientations)

    @classmethod
    def joined(cls, parts: Sequence[RowHits]) -> RowHits:
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64))
        return cls(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.distances for p in parts]),
            np.concatenate([p.orientations for p in parts]),
        )


class Exact:
    """Values of one column in a slot matrix, named by row id and scanned exactly: every
    value of a small store, or the delta of an index.

    Row ids only grow, so values appended as they come keep the slots in id order, and
    a row is found by bisection. Once one comes out of order (a row of the index changed
    since it, now in the delta; an old row that gained an embedding) a dict from row id
    to slot finds them instead."""

    def __init__(self, matrix: SignatureMatrix | EmbeddingMatrix) -> None:
        self.matrix = matrix
        self._slot_of: dict[int, int] | None = None  # None while the slots are in id order

    @property
    def live(self) -> int:
        return self.matrix.live

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + 100 * len(self._slot_of or ())

    def reserve(self, extra: int) -> None:
        self.matrix.reserve(extra)

    def upsert(self, ids: Ids, values: npt.NDArray[Any]) -> None:
        """Insert or replace values; ``ids`` ascending."""
        slots = self._slots(ids)
        for i in np.flatnonzero(slots >= 0):
            self.matrix.replace(int(slots[i]), values[i])
        new = slots < 0
        keys = self.matrix.keys
        if self._slot_of is None and len(keys) and ids[new].min(initial=keys[-1] + 1) <= keys[-1]:
            self._slot_of = dict(zip(keys.tolist(), range(len(keys)), strict=True))
        added = self.matrix.append(values[new], ids[new])
        if self._slot_of is not None:
            self._slot_of.update(zip(ids[new].tolist(), added.tolist(), strict=True))

    def remove(self, ids: Ids) -> None:
        if not len(ids) or not self.matrix.live:
            return
        slots = self._slots(ids)
        for slot in slots[slots >= 0].tolist():
            self.matrix.kill(slot)
        if self.matrix.compact_if_sparse() and self._slot_of is not None:
            keys = self.matrix.keys.tolist()
            self._slot_of = dict(zip(keys, range(len(keys)), strict=True))

    def ids(self) -> Ids:
        """Live row ids, ascending."""
        ids: Ids = self.matrix.keys[self.matrix.alive]
        return ids if self._slot_of is None else np.sort(ids, kind="stable")

    def search(
        self, queries: npt.NDArray[Any], max_distance: float, allowed: Ids | None
    ) -> RowHits:
        """Live rows within ``max_distance`` (and among ``allowed`` ids)."""
        keys = self.matrix.keys
        mask = None if allowed is None else np.isin(keys, allowed)
        return RowHits.of(self.matrix.search(queries, max_distance, mask), keys)

    def _slots(self, ids: Ids) -> Ids:
        """The slot of each row id, or -1."""
        if self._slot_of is not None:
            slot_of = self._slot_of
            return np.array([slot_of.get(i, -1) for i in ids.tolist()], dtype=np.int64)
        keys = self.matrix.keys
        slots = np.searchsorted(keys, ids).astype(np.int64)
        found = slots < len(keys)
        found[found] = keys[slots[found]] == ids[found]
        return np.where(found, slots, -1)


IndexT = TypeVar("IndexT", bound=Index)


class Generation(ABC, Generic[IndexT]):
    """A published generation of an index, as one process follows it: the shared index
    of the rows at ``version``, and a private mask of its rows deleted or changed since."""

    def __init__(self, index: IndexT, header: dict[str, Any]) -> None:
        self.index = index
        self.version: int = header["version"]

    @property
    @abstractmethod
    def hidden(self) -> int:
        """Rows of the index masked."""

    @property
    def live(self) -> int:
        return len(self.index) - self.hidden

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Private to this process: the mask (the index is shared)."""

    @abstractmethod
    def hide(self, ids: Ids) -> None:
        """Mask these rows of the index (the ids it does not hold are ignored)."""

    @abstractmethod
    def ids(self) -> Ids:
        """Live row ids of the index, ascending."""


G = TypeVar("G", bound=Generation[Any])


class Follower(ABC, Generic[G]):
    """The search state of one column of a store, kept current from the store's log.

    ``database`` None: never an index; ``min_rows``: from this many values on, build one
    in the background (0: only on ``reindex``); ``build_in_background``: else only
    ``reindex`` builds one."""

    def __init__(
        self,
        kind: Kind,
        database: str | Path | None,
        *,
        min_rows: int,
        build_in_background: bool,
    ) -> None:
        self.kind = kind
        self.folder = None if database is None else IndexFolder(database, kind)
        self.min_rows = min_rows
        self.build_in_background = build_in_background
        self.exact = self._exact()  # every value, or the delta of the generation
        self.generation: G | None = None
        self.version = -1  # of the database, as this state has caught up with it
        self._adopted: str | None = None  # the generation last adopted or refused

    @abstractmethod
    def _exact(self) -> Exact:
        """An empty exact state."""

    @abstractmethod
    def _generation(self, index: Any, header: dict[str, Any]) -> G:
        """A generation, as ``folder.open`` loaded it, to follow."""

    @abstractmethod
    def _search(
        self,
        generation: G,
        queries: npt.NDArray[Any],
        max_distance: float,
        allowed: Ids | None,
        limit: int,
    ) -> RowHits:
        """Live rows of the generation within ``max_distance`` (and among ``allowed``)."""

    @property
    def live(self) -> int:
        return (0 if self.generation is None else self.generation.live) + self.exact.live

    @property
    def changes(self) -> int:
        """Index rows masked plus rows in the delta: what a rebuild would fold in (a
        changed row counts twice)."""
        return (0 if self.generation is None else self.generation.hidden) + self.exact.live

    @property
    def nbytes(self) -> int:
        """Private to this process (a shared index not counted)."""
        return self.exact.nbytes + (0 if self.generation is None else self.generation.nbytes)

    def building(self) -> bool:
        return self.folder is not None and self.folder.building()

    def ids(self) -> Ids:
        """Live row ids, ascending."""
        in_delta = self.exact.ids()
        if self.generation is None:
            return in_delta
        in_base = self.generation.ids()
        if not len(in_delta):
            return in_base
        return np.sort(np.concatenate([in_base, in_delta]), kind="stable")

    def search(
        self, queries: npt.NDArray[Any], max_distance: float, allowed: Ids | None, limit: int
    ) -> RowHits:
        """Live rows within ``max_distance`` (and among ``allowed`` ids); an index is
        asked for at least the ``limit`` best of each query row."""
        delta = self.exact.search(queries, max_distance, allowed)
        if self.generation is None:
            return delta
        base = self._search(self.generation, queries, max_distance, allowed, limit)
        return RowHits.joined([base, delta])

    def reindex(self) -> None:
        """Build and publish a generation of the values as they are now (none if there
        are none, or without a folder); the next catch-up adopts it."""
        if self.folder is not None:
            with contextlib.suppress(ValueError):  # nothing to index: the exact scan serves
                self.kind.build(self.folder.database)

    def stale(self) -> None:
        """Forget how far this state has caught up: the next catch-up starts afresh."""
        self.version = -1

    def catch_up(self, db: sqlite3.Connection, version: int, pruned: int) -> None:
        """Apply the rows and tombstones newer than ``self.version``; ``db`` is inside a
        read transaction that has seen ``version``, and keeps the tombstones from
        ``pruned`` on."""
        if self.version < pruned:  # never loaded, stale, or older than the tombstones kept
            self._reset()
            self._adopted = None  # the published generation may serve again
        if self.folder is not None and (name := self.folder.current()) != self._adopted:
            self._adopted = name
            self._adopt(db, name, version, pruned)
        if version == self.version:
            return
        self._apply(db, self.version)
        self.version = version
        self._maybe_build()

    def _apply(self, db: sqlite3.Connection, since: int) -> None:
        """Apply the tombstones and rows of the versions after ``since``.

        Rows are read in batches straight into the matrix, so a reload of millions of
        values never holds them all as Python objects."""
        dead = db.execute("SELECT id FROM tombstones WHERE version > ?", (since,))
        self._remove(np.array([row_id for (row_id,) in dead], dtype=np.int64))
        column = self.kind.column
        if not column.nullable:  # then every changed row brings a value: make room at once
            (changed,) = db.execute(
                "SELECT count(*) FROM images WHERE version > ?", (since,)
            ).fetchone()
            self.exact.reserve(changed)
        rows = db.execute(
            f"SELECT id, {column.name} FROM images WHERE version > ? ORDER BY id", (since,)
        )
        while batch := rows.fetchmany(BATCH):
            # Rows without a value (an embedding) may have replaced rows that had one.
            self._remove(np.array([i for i, blob in batch if blob is None], dtype=np.int64))
            present = [(i, blob) for i, blob in batch if blob is not None]
            if present:
                ids = np.fromiter((i for i, _ in present), dtype=np.int64, count=len(present))
                self._upsert(ids, column.decode(b"".join(blob for _, blob in present)))

    def _upsert(self, ids: Ids, values: npt.NDArray[Any]) -> None:
        if self.generation is not None:
            self.generation.hide(ids)
        self.exact.upsert(ids, values)

    def _remove(self, ids: Ids) -> None:
        """Rows gone or left without a value: out of the index's results, and of the
        exact values."""
        if len(ids) and self.live:
            if self.generation is not None:
                self.generation.hide(ids)
            self.exact.remove(ids)

    def _reset(self) -> None:
        """An empty exact state, to be loaded in full."""
        self.exact, self.generation, self.version = self._exact(), None, 0

    def _adopt(self, db: sqlite3.Connection, name: str | None, version: int, pruned: int) -> None:
        """Switch to the published generation ``name`` if it can serve the database as it
        is; the catch-up that follows applies the changes since its version."""
        if name is None or self.folder is None:
            return
        try:
            index, header = self.folder.open(name)
            problem = check(db, self.kind.column, index, header, version, pruned)
        except ValueError as error:
            problem = str(error)
        if problem is None:
            self.exact, self.generation = self._exact(), self._generation(index, header)
            self.version = header["version"]
            return
        log.warning(
            "not using the %s index %s of %s: %s", self.kind.name, name, self.folder.path, problem
        )
        if self.generation is not None:  # back to an exact scan, loaded in full
            self._reset()
        self._request_build()

    def _maybe_build(self) -> None:
        if self.generation is not None:
            if self.changes > REBUILD_FRACTION * len(self.generation.index):
                self._request_build()
        elif self.min_rows and self.live >= self.min_rows:
            self._request_build()

    def _request_build(self) -> None:
        if self.build_in_background and self.min_rows and self.folder is not None:
            self.folder.build_in_background()
