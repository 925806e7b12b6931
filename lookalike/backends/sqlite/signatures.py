"""What a process keeps in memory to search a store's rows: an exact scan, or an index.

Both states answer the same questions about the live rows, each named by its row id (an
integer that only grows): how many there are, their ids in order, and which lie within a
distance of a query. Both are kept current with ``upsert`` and ``remove``, which the store
calls with the rows and deletions it reads back from its own log.

* :class:`ExactState` holds every signature in a ``SignatureMatrix`` and scans it all.
* :class:`IndexedState` searches a memory-mapped :class:`IvfIndex` built from the rows as
  they were at some version, plus an exact ``SignatureMatrix`` of the rows added or
  changed since (the delta); rows deleted or changed since are masked out of the index.
  Every distance is recomputed exactly, so only recall depends on ``nprobe``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..scan import Hits, SignatureMatrix
from .ivf import IvfIndex

__all__ = ["ExactState", "IndexedState"]

Ids = npt.NDArray[np.int64]


class ExactState:
    """Every live signature in one matrix, slots in row-id order."""

    kind = "exact scan"

    def __init__(self, capacity: int = 1024) -> None:
        self._matrix = SignatureMatrix(capacity)

    @property
    def live(self) -> int:
        return self._matrix.live

    @property
    def memory_bytes(self) -> int:
        return self._matrix.nbytes

    def reserve(self, extra: int) -> None:
        self._matrix.reserve(extra)

    def upsert(self, ids: Ids, signatures: npt.NDArray[np.int8]) -> None:
        """Insert or replace rows; ``ids`` ascending."""
        keys = self._matrix.keys
        # Ids this state has not seen are above all it has (ids only grow), so appending
        # them in id order keeps the slots sorted by id.
        fresh = ids > (keys[-1] if len(keys) else -1)
        for i in np.flatnonzero(~fresh):
            if (slot := self._slot(int(ids[i]))) is not None:
                self._matrix.replace(slot, signatures[i])
        self._matrix.append(signatures[fresh], ids[fresh])

    def remove(self, ids: Ids) -> None:
        for row_id in ids.tolist():
            if (slot := self._slot(row_id)) is not None:
                self._matrix.kill(slot)
        self._matrix.compact_if_sparse()

    def ids(self) -> Ids:
        """Live row ids, ascending."""
        ids: Ids = self._matrix.keys[self._matrix.alive]
        return ids

    def search(
        self, queries: npt.NDArray[np.int8], max_distance: float, allowed: Ids | None
    ) -> Hits:
        """Live rows within ``max_distance`` (and among ``allowed`` ids); ``slots`` are row ids."""
        mask = None if allowed is None else np.isin(self._matrix.keys, allowed)
        hits = self._matrix.search(queries, max_distance, mask)
        return Hits(self._matrix.keys[hits.slots], hits.distances, hits.orientations)

    def describe(self) -> dict[str, Any]:
        return {"index": self.kind}

    def _slot(self, row_id: int) -> int | None:
        keys = self._matrix.keys
        slot = int(np.searchsorted(keys, row_id))
        if slot < len(keys) and keys[slot] == row_id:
            return slot
        return None


class IndexedState:
    """A shared, read-only index of the rows up to ``version``, and a private delta."""

    kind = "ivf"

    def __init__(self, index: IvfIndex, version: int, nprobe: int) -> None:
        self.index = index
        self.version = version
        self.nprobe = nprobe
        self._base_alive = np.ones(len(index), dtype=bool)
        self._base_live = len(index)
        self._delta = SignatureMatrix(capacity=256)
        self._delta_slots: dict[int, int] = {}

    @property
    def live(self) -> int:
        return self._base_live + self._delta.live

    @property
    def changes(self) -> int:
        """Index rows masked (deleted or changed since) plus rows in the delta (added or
        changed since): what a rebuild would fold in. A changed row counts twice."""
        return self._delta.used + len(self.index) - self._base_live

    @property
    def memory_bytes(self) -> int:
        """Private to this process: the liveness mask and the delta (the index is shared)."""
        return self._base_alive.nbytes + self._delta.nbytes + 100 * len(self._delta_slots)

    def reserve(self, extra: int) -> None:
        self._delta.reserve(extra)

    def upsert(self, ids: Ids, signatures: npt.NDArray[np.int8]) -> None:
        self._kill_in_base(ids)
        fresh = []
        for i, row_id in enumerate(ids.tolist()):
            if (slot := self._delta_slots.get(row_id)) is not None:
                self._delta.replace(slot, signatures[i])
            else:
                fresh.append(i)
        slots = self._delta.append(signatures[fresh], ids[fresh])
        self._delta_slots.update(zip(ids[fresh].tolist(), slots.tolist(), strict=True))

    def remove(self, ids: Ids) -> None:
        self._kill_in_base(ids)
        for row_id in ids.tolist():
            if (slot := self._delta_slots.pop(row_id, None)) is not None:
                self._delta.kill(slot)
        if self._delta.compact_if_sparse():
            keys = self._delta.keys.tolist()
            self._delta_slots = dict(zip(keys, range(len(keys)), strict=True))

    def ids(self) -> Ids:
        """Live row ids, ascending."""
        in_base = self.index.sorted_keys[self._base_alive[self.index.positions]]
        in_delta = self._delta.keys[self._delta.alive]
        if not len(in_delta):
            return np.asarray(in_base)
        return np.sort(np.concatenate([in_base, in_delta]), kind="stable")

    def search(
        self, queries: npt.NDArray[np.int8], max_distance: float, allowed: Ids | None
    ) -> Hits:
        """Live rows within ``max_distance`` (and among ``allowed`` ids); ``slots`` are row ids."""
        base_mask = self._base_alive
        delta_mask = None
        if allowed is not None:
            base_mask = np.zeros(len(self.index), dtype=bool)
            positions = self.index.position_of(allowed)
            base_mask[positions[positions >= 0]] = True
            base_mask &= self._base_alive
            delta_mask = np.isin(self._delta.keys, allowed)
        base = self.index.search(queries, max_distance, self.nprobe, allowed=base_mask)
        delta = self._delta.search(queries, max_distance, delta_mask)
        return Hits(
            np.concatenate([self.index.keys[base.slots], self._delta.keys[delta.slots]]),
            np.concatenate([base.distances, delta.distances]),
            np.concatenate([base.orientations, delta.orientations]),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.kind,
            "index_version": self.version,
            "index_rows": len(self.index),
            "index_lists": self.index.nlist,
            "index_nprobe": self.nprobe,
            "index_shared_bytes": self.index.nbytes,
            "changes_since_index": self.changes,
        }

    def _kill_in_base(self, ids: Ids) -> None:
        positions = self.index.position_of(ids)
        positions = positions[positions >= 0]
        self._base_live -= int(self._base_alive[positions].sum())
        self._base_alive[positions] = False
