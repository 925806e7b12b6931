"""An inverted-file index over signatures, for collections too large to scan whole.

Rows are grouped by their nearest of ``nlist`` centroids (spherical k-means on the
signatures scaled to unit length, since the normalised distance is mostly a matter of
angle). A query probes, for each of its rows (orientations), the ``nprobe`` lists whose
centroids are nearest, and scores the union of those lists with all its rows at once —
exactly, with the arithmetic of ``scan``, so every distance returned is the true one and
only recall depends on ``nprobe``.

The rows are stored in list order, so a list is one contiguous slice, and the whole index
is a handful of flat arrays: saved as ``.npy`` files it is memory-mapped by every process
that opens it, and the operating system keeps one copy in RAM for all of them.

Not yet wired into a store: the SQLite backend still scans exhaustively (issue 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..signature import LENGTH
from .scan import Hits, within

__all__ = ["IvfIndex"]

_FILES = ("centroids", "offsets", "rows", "norms", "keys")
_FORMAT = 1


@dataclass(frozen=True)
class IvfIndex:
    """Signatures grouped into lists; list ``i`` is ``rows[offsets[i]:offsets[i + 1]]``."""

    centroids: npt.NDArray[np.float32]  # (nlist, 648), unit length
    offsets: npt.NDArray[np.int64]  # (nlist + 1,)
    rows: npt.NDArray[np.int8]  # (n, 648), in list order
    norms: npt.NDArray[np.int32]  # (n,), squared norms of rows
    keys: npt.NDArray[np.int64]  # (n,), the caller's key of each row

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
        sample: int = 100_000,
        seed: int = 0,
    ) -> IvfIndex:
        """Cluster ``signatures`` (n, 648) and lay them out list by list."""
        signatures = np.asarray(signatures, dtype=np.int8).reshape(-1, LENGTH)
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) != len(signatures):
            raise ValueError("one key per signature")
        n = len(signatures)
        lists = max(1, min(nlist or int(4 * np.sqrt(n)), n))
        rng = np.random.default_rng(seed)
        training = _unit(signatures[rng.choice(n, size=min(n, max(sample, lists)), replace=False)])
        centroids = _kmeans(training, lists, iterations, rng)
        assignment = _nearest(signatures, centroids)
        order = np.argsort(assignment, kind="stable")
        counts = np.bincount(assignment, minlength=lists)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = signatures[order]
        wide = rows.astype(np.int32)
        return cls(
            centroids=centroids,
            offsets=offsets,
            rows=rows,
            norms=np.einsum("ij,ij->i", wide, wide).astype(np.int32),
            keys=keys[order],
        )

    def candidates(self, queries: npt.NDArray[np.int8], nprobe: int) -> npt.NDArray[np.int64]:
        """Positions of the rows in the lists probed by any query row, in index order."""
        q = _unit(np.asarray(queries, dtype=np.int8).reshape(-1, LENGTH))
        probe = min(max(nprobe, 1), self.nlist)
        similarity = q @ self.centroids.T
        probed = np.unique(np.argpartition(-similarity, probe - 1, axis=1)[:, :probe])
        starts, stops = self.offsets[probed], self.offsets[probed + 1]
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
        hits = within(self.rows[positions], self.norms[positions], queries, max_distance)
        return Hits(positions[hits.slots], hits.distances, hits.orientations)

    def save(self, directory: str | Path, **header: Any) -> None:
        """Write the arrays as .npy files and a header (with the caller's ``header`` facts)."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            np.save(folder / f"{name}.npy", getattr(self, name))
        facts = {"format": _FORMAT, "count": len(self), "nlist": self.nlist, **header}
        (folder / "header.json").write_text(json.dumps(facts))

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> tuple[IvfIndex, dict[str, Any]]:
        """Open a saved index (memory-mapped, read-only) and its header; ValueError if broken."""
        folder = Path(directory)
        try:
            header = json.loads((folder / "header.json").read_text())
            arrays = {
                name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None)
                for name in _FILES
            }
        except (OSError, ValueError) as error:
            raise ValueError(f"no usable index in {folder}: {error}") from None
        index = cls(**arrays)
        n = len(index.keys)
        consistent = (
            header.get("format") == _FORMAT
            and header.get("count") == n
            and index.rows.shape == (n, LENGTH)
            and len(index.norms) == n
            and len(index.offsets) == index.nlist + 1
            and int(index.offsets[-1]) == n
        )
        if not consistent:
            raise ValueError(f"the index in {folder} is inconsistent; rebuild it")
        return index, header


def _unit(signatures: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
    x = signatures.astype(np.float32)
    lengths = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(lengths, 1.0, out=lengths)
    unit: npt.NDArray[np.float32] = x / lengths
    return unit


def _kmeans(
    x: npt.NDArray[np.float32], k: int, iterations: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Spherical k-means (Lloyd); empty clusters are re-seeded from random points."""
    centroids = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iterations):
        assignment = np.argmax(x @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, x)
        empty = np.bincount(assignment, minlength=k) == 0
        sums[empty] = x[rng.choice(len(x), size=int(empty.sum()), replace=False)]
        lengths = np.linalg.norm(sums, axis=1, keepdims=True)
        np.maximum(lengths, 1e-12, out=lengths)
        centroids = (sums / lengths).astype(np.float32)
    return centroids


def _nearest(
    signatures: npt.NDArray[np.int8], centroids: npt.NDArray[np.float32], chunk: int = 16_384
) -> npt.NDArray[np.int64]:
    out = np.empty(len(signatures), dtype=np.int64)
    for start in range(0, len(signatures), chunk):
        block = _unit(signatures[start : start + chunk])
        out[start : start + chunk] = np.argmax(block @ centroids.T, axis=1)
    return out
