"""An HNSW index (usearch) of a SQLite store's embeddings, shared by every process.

    lookalike.db.embeddings/      an ``IndexFolder`` (``generations``), as the IVF index's
        CURRENT, build.lock, build.log
        g<version>-<ns>/
            embeddings.usearch    the HNSW graph and the float16 vectors, keyed by row id
            header.json           version, identity, count, parameters and file size

A generation holds every embedding of the database at one version. The vectors are
stored as float16, exactly the values of the ``embedding`` column, so a candidate found
in the graph is re-ranked with :func:`vectors.cosine_distances` from the index itself
and its distance is the exact one. Every process memory-maps the file (``view=True``):
the ~2.7 KB per image live once in the page cache, not once per worker.

This module imports usearch only when an index is made or opened, and never the model
(``lookalike.embeddings``): a process that runs both must load onnxruntime first.
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...vectors import EMBEDDING_DIMENSION
from .generations import write_header

__all__ = ["HnswIndex", "index_available"]

Ids = npt.NDArray[np.int64]

# Graph degree and build beam: at 1M clustered embeddings (bench/embeddings_index.py),
# 16 / 64 left recall@10 at 0.84-0.94 whatever the candidates; 32 / 128 reach 0.99.
CONNECTIVITY = 32
EXPANSION_ADD = 128
EXPANSION_SEARCH = 64  # search-time beam (raised to the candidate count when larger)
SERIAL_ROWS = 100_000  # graphs up to this size are built by one thread: reproducible
_FORMAT = 1
_FILE = "embeddings.usearch"


class HnswIndex:
    """A read-only, memory-mapped usearch index whose keys are row ids."""

    def __init__(self, index: Any, nbytes: int) -> None:
        self._index = index
        self.nbytes = nbytes

    def __len__(self) -> int:
        return int(self._index.size)

    @classmethod
    def create(cls) -> HnswIndex:
        index = _usearch().Index(
            ndim=EMBEDDING_DIMENSION,
            metric="cos",
            dtype="f16",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        return cls(index, 0)

    def add(self, ids: Ids, vectors: npt.NDArray[np.float16]) -> None:
        # One thread inserts in a fixed order, so the same rows give the same graph and
        # the same answers; above SERIAL_ROWS, where a build takes minutes, all cores.
        threads = 1 if len(self) + len(ids) <= SERIAL_ROWS else 0
        self._index.add(ids.astype(np.uint64), vectors, threads=threads)

    def save(self, directory: str | Path, **header: Any) -> None:
        """Write the index and its header into a fresh folder, synced to disk."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self._index.save(str(path / _FILE))
        with open(path / _FILE, "rb+") as file:
            os.fsync(file.fileno())
        facts = {
            "format": _FORMAT,
            "count": len(self),
            "dtype": "f16",
            "connectivity": CONNECTIVITY,
            "expansion_add": EXPANSION_ADD,
            "bytes": (path / _FILE).stat().st_size,
            **header,
        }
        write_header(path, facts)

    @classmethod
    def load(cls, directory: str | Path) -> tuple[HnswIndex, dict[str, Any]]:
        """Memory-map a saved generation; ValueError says what is wrong with a bad one.

        The size is checked on every open; the contents where ``generations.check``
        samples rows."""
        path = Path(directory)
        try:
            header = json.loads((path / "header.json").read_text())
            if header.get("format") != _FORMAT:
                raise ValueError(f"format {header.get('format')}, expected {_FORMAT}")
            size = (path / _FILE).stat().st_size
            if size != header["bytes"]:
                raise ValueError(f"{_FILE} has {size} bytes, its header says {header['bytes']}")
            index = _usearch().Index.restore(str(path / _FILE), view=True)
        except (OSError, KeyError, json.JSONDecodeError, RuntimeError) as error:
            raise ValueError(f"cannot open the embedding index {path}: {error}") from None
        if index is None or index.size != header["count"] or index.ndim != EMBEDDING_DIMENSION:
            raise ValueError(f"the embedding index {path} does not match its header")
        return cls(index, size), header

    def contains(self, ids: Ids) -> npt.NDArray[np.bool_]:
        if not len(ids):
            return np.zeros(0, dtype=bool)
        found: npt.NDArray[np.bool_] = np.asarray(
            self._index.contains(ids.astype(np.uint64)), dtype=bool
        )
        return found.reshape(len(ids))

    def values(self, ids: Ids) -> npt.NDArray[np.float16]:
        """The stored float16 vectors of ``ids`` (all in the index), exactly."""
        if not len(ids):
            return np.empty((0, EMBEDDING_DIMENSION), dtype=np.float16)
        rows = self._index.get(ids.astype(np.uint64), dtype=np.float16)
        return np.asarray(rows, dtype=np.float16).reshape(len(ids), EMBEDDING_DIMENSION)

    @property
    def keys(self) -> Ids:
        return np.asarray(self._index.keys, dtype=np.int64)

    def search(
        self, queries: npt.NDArray[np.float32], count: int
    ) -> tuple[Ids, npt.NDArray[np.float32]]:
        """Up to ``count`` nearest keys per query row, with usearch's approximate
        distances (float16 products: within ~1e-3 of the exact ones)."""
        count = max(1, min(count, len(self)))
        self._index.expansion_search = max(EXPANSION_SEARCH, count)
        found = self._index.search(queries, count, threads=1)
        keys = np.asarray(found.keys)
        distances = np.asarray(found.distances, dtype=np.float32)
        if hasattr(found, "counts"):  # several query rows: padded rows, ``counts`` valid each
            valid = np.arange(keys.shape[1])[None, :] < np.asarray(found.counts)[:, None]
            keys, distances = keys[valid], distances[valid]
        return keys.reshape(-1).astype(np.int64), distances.reshape(-1)


def _usearch() -> Any:
    """usearch's index module. A process that also runs the model must load onnxruntime
    first (``embeddings.load_runtime``; the service does, before it opens its store)."""
    import usearch.index

    return usearch.index


def index_available() -> bool:
    """Whether usearch (the cnn extra) is installed: without it, searches stay exact."""
    return find_spec("usearch") is not None
