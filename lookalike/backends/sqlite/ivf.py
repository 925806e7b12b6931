"""An inverted-file index over signatures, for collections too large to scan whole.

Rows are grouped by their nearest of ``nlist`` centroids (spherical k-means on the
signatures scaled to unit length, since the normalised distance is mostly a matter of
angle). A query probes, for each of its rows (orientations), the ``nprobe`` lists whose
centroids are nearest, and scores the union of those lists with all its rows at once —
exactly, with the arithmetic of ``scan``, so every distance returned is the true one and
only recall depends on ``nprobe``.

The rows are stored in list order, so a list is one contiguous slice, and the whole index
is a handful of flat arrays: saved as ``.npy`` files it is memory-mapped by every process
that opens it, and the operating system keeps one copy in RAM for all of them. A header
holds the CRC-32 of every file, checked on load: a damaged index is refused, never used.

Bytes per row: 648 (signature) + 4 (squared norm) + 8 (key) + 8 + 4 (keys sorted, with
their positions, to find a key's row). Centroids add ``nlist * 648 * 4`` in all.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...signature import LENGTH
from ..kmeans import FLAT_KMEANS_LISTS, nearest, train, unit_signatures
from ..scan import Hits, within
from .generations import write_header

__all__ = ["FLAT_KMEANS_LISTS", "GATHER_ROWS", "IvfIndex", "crc32", "default_nlist"]

_FILES = ("centroids", "offsets", "rows", "norms", "keys", "sorted_keys", "positions")
_FORMAT = 2
GATHER_ROWS = 8192  # candidate rows scored at once


@dataclass(frozen=True)
class IvfIndex:
    """Signatures grouped into lists; list ``i`` is ``rows[offsets[i]:offsets[i + 1]]``."""

    centroids: npt.NDArray[np.float32]  # (nlist, 648), unit length
    offsets: npt.NDArray[np.int64]  # (nlist + 1,)
    rows: npt.NDArray[np.int8]  # (n, 648), in list order
    norms: npt.NDArray[np.int32]  # (n,), squared norms of rows
    keys: npt.NDArray[np.int64]  # (n,), the caller's key of each row
    sorted_keys: npt.NDArray[np.int64]  # (n,), keys in ascending order
    positions: npt.NDArray[np.int32]  # (n,), the row of each of sorted_keys

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    @property
    def nbytes(self) -> int:
        return sum(int(getattr(self, name).nbytes) for name in _FILES)

    @classmethod
    def build(
        cls,
        signatures: npt.NDArray[np.int8],
        keys: npt.ArrayLike,
        *,
        nlist: int | None = None,
        iterations: int = 10,
        sample: int = 100_000,  # at least; 40 per list
        seed: int = 0,
    ) -> IvfIndex:
        """Cluster ``signatures`` (n, 648) and lay them out list by list."""
        signatures = np.asarray(signatures, dtype=np.int8).reshape(-1, LENGTH)
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) != len(signatures):
            raise ValueError("one key per signature")
        n = len(signatures)
        lists = max(1, min(nlist or default_nlist(n), n))
        rng = np.random.default_rng(seed)
        # k-means needs a few dozen points per centroid to place it well.
        size = min(n, max(sample, 40 * lists))
        training = unit_signatures(signatures[np.sort(rng.choice(n, size=size, replace=False))])
        centroids = train(training, lists, iterations, rng)
        lists = len(centroids)  # two-level training rounds each cell's share
        assignment = nearest(signatures, centroids)
        order = np.argsort(assignment, kind="stable")
        counts = np.bincount(assignment, minlength=lists)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = signatures[order]
        keys = keys[order]
        by_key = np.argsort(keys, kind="stable")
        return cls(
            centroids=centroids,
            offsets=offsets,
            rows=rows,
            norms=_squared_norms(rows),
            keys=keys,
            sorted_keys=keys[by_key],
            positions=by_key.astype(np.int32),
        )

    def position_of(self, keys: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The row holding each key, or -1 where the index has no such key."""
        wanted = np.asarray(keys, dtype=np.int64)
        rank = np.searchsorted(self.sorted_keys, wanted)
        inside = rank < len(self.sorted_keys)
        inside[inside] = self.sorted_keys[rank[inside]] == wanted[inside]
        out = np.full(len(wanted), -1, dtype=np.int64)
        out[inside] = self.positions[rank[inside]]
        return out

    def values(self, keys: npt.ArrayLike) -> npt.NDArray[np.int8]:
        """The signatures of these keys (all in the index)."""
        return np.asarray(self.rows[self.position_of(keys)])

    def candidates(self, queries: npt.NDArray[np.int8], nprobe: int) -> npt.NDArray[np.int64]:
        """Positions of the rows in the lists probed by any query row, in index order."""
        q = unit_signatures(np.asarray(queries, dtype=np.int8).reshape(-1, LENGTH))
        probe = min(max(nprobe, 1), self.nlist)
        similarity = q @ self.centroids.T
        probed = np.unique(np.argpartition(-similarity, probe - 1, axis=1)[:, :probe])
        starts, stops = self.offsets[probed], self.offsets[probed + 1]
        filled = stops > starts  # an empty list would break the arithmetic below
        starts, stops = starts[filled], stops[filled]
        sizes = stops - starts
        total = int(sizes.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        # Concatenated ranges start..stop for every probed list, without a Python loop.
        steps = np.ones(total, dtype=np.int64)
        firsts = np.cumsum(sizes)[:-1]
        steps[0] = starts[0]
        steps[firsts] = starts[1:] - stops[:-1] + 1
        return np.cumsum(steps)

    def search(
        self,
        queries: npt.NDArray[np.int8],
        max_distance: float,
        nprobe: int,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> Hits:
        """Probed rows (positions) whose best distance to a query row is < max_distance."""
        positions = self.candidates(queries, nprobe)
        if allowed is not None:
            positions = positions[allowed[positions]]
        # Gathered a block at a time: the candidates of one query can be tens of MB.
        found = []
        for start in range(0, len(positions), GATHER_ROWS):
            part = positions[start : start + GATHER_ROWS]
            hits = within(self.rows[part], self.norms[part], queries, max_distance)
            found.append(Hits(part[hits.slots], hits.distances, hits.orientations))
        if len(found) == 1:
            return found[0]
        return Hits(
            np.concatenate([h.slots for h in found] or [np.zeros(0, dtype=np.int64)]),
            np.concatenate([h.distances for h in found] or [np.zeros(0)]),
            np.concatenate([h.orientations for h in found] or [np.zeros(0, dtype=np.int64)]),
        )

    def save(self, directory: str | Path, **header: Any) -> None:
        """Write the arrays as .npy files, synced to disk, then a header with their CRCs
        (and the caller's ``header`` facts). Write into a fresh folder: nothing is atomic."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        checksums = {}
        for name in _FILES:
            path = folder / f"{name}.npy"
            with open(path, "wb") as file:
                np.save(file, getattr(self, name))
                file.flush()
                os.fsync(file.fileno())
            checksums[name] = crc32(path)
        facts = {"format": _FORMAT, "count": len(self), "nlist": self.nlist, **header}
        facts["crc32"] = checksums
        write_header(folder, facts)

    @classmethod
    def load(cls, directory: str | Path) -> tuple[IvfIndex, dict[str, Any]]:
        """Open a saved index (memory-mapped, read-only) and its header.

        Every file's CRC-32 and the arrays' shapes are checked; ValueError says what is
        wrong with an index that fails."""
        folder = Path(directory)
        try:
            header = json.loads((folder / "header.json").read_text())
            if header.get("format") != _FORMAT:
                raise ValueError(f"format {header.get('format')}, expected {_FORMAT}")
            for name in _FILES:
                if crc32(folder / f"{name}.npy") != header["crc32"][name]:
                    raise ValueError(f"{name}.npy does not match its checksum")
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _FILES}
            index = cls(**arrays)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"no usable index in {folder}: {error}") from None
        n = len(index.keys)
        consistent = (
            header.get("count") == n
            and index.rows.shape == (n, LENGTH)
            and index.centroids.shape == (index.nlist, LENGTH)
            and all(len(a) == n for a in (index.norms, index.sorted_keys, index.positions))
            and len(index.offsets) == index.nlist + 1
            and int(index.offsets[0]) == 0
            and int(index.offsets[-1]) == n
        )
        if not consistent:
            raise ValueError(f"the index in {folder} is inconsistent; rebuild it")
        return index, header


def _squared_norms(rows: npt.NDArray[np.int8], chunk: int = 1 << 16) -> npt.NDArray[np.int32]:
    """Squared norms, a block at a time: widening 10M rows at once would take 24 GB."""
    out = np.empty(len(rows), dtype=np.int32)
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk].astype(np.int32)
        out[start : start + chunk] = np.einsum("ij,ij->i", block, block)
    return out


def default_nlist(n: int) -> int:
    """Lists for ``n`` rows: about 4·√n, so lists hold ~√n/4 rows each."""
    return max(1, int(4 * np.sqrt(n)))


def crc32(path: Path, block: int = 1 << 20) -> int:
    """The CRC-32 of a file, as headers record it."""
    crc = 0
    with open(path, "rb") as file:
        while chunk := file.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc
