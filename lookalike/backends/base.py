"""The Backend protocol: the one seam between the service and a store.

Think of a backend as a dict from filepath to :class:`~lookalike.records.Record`, with
nearest-neighbour lookup by signature. Every backend passes the same contract suite
(``tests/backends/test_contract.py``); ``memory`` is the reference it is checked against.

Rules every implementation keeps:

* ``add`` replaces a record with the same filepath atomically; once it returns, the
  write is durable (for persistent stores) and visible to every later ``search``,
  ``get``, ``count`` and ``list`` — from any process sharing the store.
* ``search`` takes the query as one or more signatures (one row per orientation) and
  scores each stored record by its smallest normalised distance to any row. It returns
  records with distance strictly below ``max_distance``, best first, ties broken by
  filepath, at most ``limit`` of them. Distances equal ``signature.distance`` exactly.
* ``search_embedding`` is the same for embeddings: queries are unit rows (one per
  orientation), the distance is 1 − cosine similarity computed from the stored values,
  and records stored without an embedding are never returned. An approximate index may
  miss a record (recall is measured against ``memory``); a distance it returns is exact.
* ``where`` keeps only records whose metadata has every given key equal to the given
  JSON scalar (strings, numbers, booleans; ``1 == 1.0``, ``True != 1``).
* Metadata is a JSON object stored by value. Strings with NUL characters, NaN and
  infinities are refused (``check_metadata``): SQL JSON functions cannot compare them.
* ``add_many`` checks each batch before writing it; if a record is invalid it raises
  ValueError, and batches written before it stay written.
* A record's ``preview`` (its sizes and thumbnail) is written with it, replaced with it
  (a record added without one then has none) and deleted with it; ``previews`` reads
  them, and a search never does: ``get`` leaves ``Record.preview`` None.
* ``pairs`` is the self-join: every pair of stored records (passing ``where``) closer
  than the cutoff, each once, with the distance a search would report; ``vectors``
  reads a whole column for it. Marks that two records are ``distinct`` are kept beside
  them and deleted with either.
* ``list`` returns filepaths in insertion order: a replaced record keeps its place, a
  deleted and re-added one moves to the end. New images never shift earlier pages.
* Backends never import the service, the HTTP API or the CLI.
"""

from __future__ import annotations

import builtins
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from ..config import Settings
from ..errors import ConfigError, InvalidRequest
from ..orientations import ORIENTATIONS
from ..records import (
    Filter,
    Match,
    Metadata,
    Preview,
    Record,
    check_filepath,
    check_filter,
    check_metadata,
    check_preview,
    matches_filter,
)
from ..signature import LENGTH, distances
from ..vectors import EMBEDDING_DIMENSION, as_stored

if TYPE_CHECKING:
    from .join import Pairs

__all__ = [
    "Backend",
    "Search",
    "Vectors",
    "check_embedding",
    "check_embedding_queries",
    "check_queries",
    "check_signature",
    "checked_record",
    "ranked",
    "redacted",
    "signature_distances",
]


class Search(NamedTuple):
    """A search as it crosses the seam, checked: query rows (one per orientation), at
    most ``limit`` results, distances below ``max_distance``, the metadata filter."""

    queries: npt.NDArray[Any]
    limit: int
    max_distance: float
    where: Filter | None


class Vectors(NamedTuple):
    """One column of the records that pass a filter: their filepaths, creation times and
    rows (signatures (n, 648) int8, or embeddings (n, 1280) float32 of those that have one)."""

    filepaths: builtins.list[str]
    created: npt.NDArray[np.float64]
    rows: npt.NDArray[Any]


class Backend(ABC):
    """A store of records keyed by filepath, with exact or approximate search.

    The one seam: its public methods check what crosses it (``checked_record``,
    ``check_queries``, ``check_filter``) and hand it to the ``_*_trusted`` methods that
    each store implements, which trust their arguments and never check them again.
    """

    files: Path | None = None
    """The store's own file, where it has one on this machine (what lives beside the
    store, as background jobs' state, goes next to it)."""

    one_process: str | None = None
    """Why the store can be open in one process at a time, if it can (an embedded
    server that locks its files): a service on it must then run one worker."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> Self:
        """Open the store a URL names (``open_backend`` picked this class by its scheme),
        tuned by ``settings``; ConfigError if the URL is malformed."""
        raise ConfigError(f"{cls.__name__} is not opened from a URL")

    def add(self, record: Record) -> None:
        """Insert or replace the record with this filepath."""
        self._add_trusted([checked_record(record)])

    def add_many(self, records: Iterable[Record]) -> int:
        """Insert or replace many records in few transactions; returns how many."""
        return self._add_trusted(checked_record(record) for record in records)

    def delete(self, filepath: str) -> bool:
        """Remove the record; True if it existed."""
        return self._delete_trusted(check_filepath(filepath))

    def get(self, filepath: str) -> Record | None:
        """The stored record, or None."""
        return self._get_trusted(check_filepath(filepath))

    def get_many(self, filepaths: Iterable[str]) -> dict[str, Record]:
        """The stored records of these filepaths, by filepath (those not stored left
        out): ``get`` for many, in few requests where the store can."""
        return self._get_many_trusted([check_filepath(path) for path in filepaths])

    def previews(self, filepaths: Iterable[str], *, thumbnails: bool = True) -> dict[str, Preview]:
        """The previews kept with these records, by filepath (records without one, and
        filepaths not stored, are left out); without ``thumbnails``, their sizes only."""
        return self._previews_trusted([check_filepath(path) for path in filepaths], thumbnails)

    def vectors(self, column: str, where: Filter | None = None) -> Vectors:
        """Every record's signature (``column`` "signature") or embedding ("embedding"),
        in insertion order."""
        if column not in ("signature", "embedding"):
            raise ValueError(f"no column {column!r}: signature or embedding")
        return self._vectors_trusted(column, check_filter(where))

    def pairs(
        self,
        column: str,
        max_distance: float,
        *,
        where: Filter | None = None,
        orientations: bool = True,
        nprobe: int = 16,
        progress: Callable[[int, int], object] | None = None,
    ) -> tuple[Vectors, Pairs]:
        """The self-join of a column: every pair closer than ``max_distance`` (of
        signatures, also turned each way with ``orientations``), by row of the vectors;
        ``nprobe``: lists each row is compared with, in a large collection."""
        from .join import embedding_pairs, signature_pairs  # NumPy work, loaded when asked

        vectors = self.vectors(column, where)
        if column == "signature":
            found = signature_pairs(
                vectors.rows,
                max_distance,
                orientations=orientations,
                nprobe=nprobe,
                progress=progress,
            )
        else:
            found = embedding_pairs(vectors.rows, max_distance, nprobe=nprobe, progress=progress)
        return vectors, found

    def changes(self) -> int | None:
        """A number that moves with every write, where the store keeps one (None: it
        does not), so that a long job can tell whether the store changed under it."""
        return None

    def mark_distinct(self, first: str, second: str) -> None:
        """Remember that two stored records are not copies of each other: NotFound if
        either is not stored, InvalidRequest if they are one."""
        a, b = sorted((check_filepath(first), check_filepath(second)))
        if a == b:
            raise InvalidRequest("an image is always a copy of itself: name two images")
        self._mark_distinct_trusted(a, b)

    def unmark_distinct(self, first: str, second: str) -> bool:
        """Forget a mark; True if there was one."""
        a, b = sorted((check_filepath(first), check_filepath(second)))
        return self._unmark_distinct_trusted(a, b)

    def distinct(self) -> builtins.list[tuple[str, str]]:
        """Every mark, each pair sorted, in filepath order."""
        return sorted(self._distinct_trusted())

    @abstractmethod
    def count(self) -> int:
        """How many records are stored."""

    @abstractmethod
    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        """Filepaths in insertion order, skipping the first ``offset``."""

    def search(
        self,
        queries: npt.ArrayLike,
        *,
        limit: int,
        max_distance: float,
        where: Filter | None = None,
    ) -> builtins.list[Match]:
        """Records nearest to any row of ``queries`` (shape (k, 648)), best first."""
        checked = Search(check_queries(queries), limit, max_distance, check_filter(where))
        return self._search_trusted(checked)

    def search_embedding(
        self,
        queries: npt.ArrayLike,
        *,
        limit: int,
        max_distance: float,
        where: Filter | None = None,
    ) -> builtins.list[Match]:
        """Records whose embedding is nearest to any row of ``queries`` (shape (k, 1280)),
        by cosine distance, best first; ``Match.method`` is "embedding"."""
        checked = Search(check_embedding_queries(queries), limit, max_distance, check_filter(where))
        return self._search_embedding_trusted(checked)

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Facts for operators: at least ``backend``, ``count``, ``index`` and
        ``memory_bytes`` (of the search state in this process)."""

    @abstractmethod
    def reindex(self) -> dict[str, Any]:
        """Rebuild whatever search structure is derived from the records (nothing for
        an exact scan) and wait for it; returns ``stats()`` afterwards."""

    def backup(self, destination: Path) -> dict[str, Any]:
        """Write a consistent copy of the store to ``destination`` while it keeps serving
        and writing, where the store is a file of its own; ConfigError otherwise."""
        raise ConfigError(
            f"{type(self).__name__} is backed up with its own tools (lookalike export"
            " copies any store)"
        )

    def migrate(
        self, target: str, *, swap: bool = False, progress: Callable[[int], object] | None = None
    ) -> dict[str, Any]:
        """Copy a collection written by an older system into this store's layout, where
        the store knows such a layout; ConfigError otherwise."""
        raise ConfigError(f"{type(self).__name__} has no older layout to migrate from")

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; the backend is unusable afterwards."""

    # -- what each store implements, trusting its arguments -------------------------------

    @abstractmethod
    def _add_trusted(self, records: Iterable[Record]) -> int:
        """Write checked records in batches, each batch taken whole from the iterable
        before it is written (so that a bad record stops the run between batches)."""

    @abstractmethod
    def _delete_trusted(self, filepath: str) -> bool: ...

    @abstractmethod
    def _get_trusted(self, filepath: str) -> Record | None: ...

    @abstractmethod
    def _previews_trusted(
        self, filepaths: builtins.list[str], thumbnails: bool
    ) -> dict[str, Preview]: ...

    def _vectors_trusted(self, column: str, where: Filter | None) -> Vectors:
        """Every record read through ``list`` and ``get``: right for any store, slow on
        a remote one (which may read its column faster)."""
        paths, created, rows = [], [], []
        offset, page = 0, 1000
        while filepaths := self.list(offset, page):
            offset += len(filepaths)
            for path in filepaths:
                record = self._get_trusted(path)
                if record is None or not matches_filter(record.metadata, where or {}):
                    continue
                row = record.signature if column == "signature" else record.embedding
                if row is not None:
                    paths.append(path)
                    created.append(record.created)
                    rows.append(row)
        width, dtype = (
            (LENGTH, np.int8) if column == "signature" else (EMBEDDING_DIMENSION, np.float32)
        )
        matrix = np.array(rows, dtype=dtype).reshape(-1, width)
        return Vectors(paths, np.array(created, dtype=np.float64), matrix)

    def _mark_distinct_trusted(self, first: str, second: str) -> None:
        raise ConfigError(f"{type(self).__name__} does not keep distinct marks yet")

    def _unmark_distinct_trusted(self, first: str, second: str) -> bool:
        raise ConfigError(f"{type(self).__name__} does not keep distinct marks yet")

    def _distinct_trusted(self) -> builtins.list[tuple[str, str]]:
        return []

    def _get_many_trusted(self, filepaths: builtins.list[str]) -> dict[str, Record]:
        found = {}
        for path in filepaths:
            if (record := self._get_trusted(path)) is not None:
                found[path] = record
        return found

    @abstractmethod
    def _search_trusted(self, search: Search) -> builtins.list[Match]:
        """``search`` with its queries (k, 648) int8 signatures."""

    @abstractmethod
    def _search_embedding_trusted(self, search: Search) -> builtins.list[Match]:
        """``search`` with its queries (k, 1280) float32 unit embeddings."""


def checked_record(record: Record) -> Record:
    """The record as stores keep it: filepath, signature, metadata, embedding and preview
    checked (ValueError or InvalidRequest otherwise), the arrays copied, the embedding
    rounded."""
    return Record(
        check_filepath(record.filepath),
        check_signature(record.signature),
        check_metadata(record.metadata),
        record.created,
        record.updated,
        check_embedding(record.embedding),
        check_preview(record.preview),
    )


def check_queries(queries: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Query signatures as a (k, 648) int8 array, 1 <= k <= 8; ValueError otherwise."""
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != LENGTH or not 1 <= q.shape[0] <= len(ORIENTATIONS):
        raise ValueError(f"queries are 1 to 8 signatures of {LENGTH} values, got {q.shape}")
    return q.astype(np.int8, copy=False)


def check_signature(signature: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """A stored signature: 648 values, as int8 (a copy); ValueError otherwise."""
    sig = np.asarray(signature)
    if sig.shape != (LENGTH,):
        raise ValueError(f"a signature has {LENGTH} values, got shape {sig.shape}")
    return sig.astype(np.int8, copy=True)


def check_embedding(embedding: npt.ArrayLike | None) -> npt.NDArray[np.float32] | None:
    """A stored embedding: 1280 finite values of unit length, rounded to float16 (so that
    every backend keeps them exactly); ValueError otherwise."""
    if embedding is None:
        return None
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.shape != (EMBEDDING_DIMENSION,):
        raise ValueError(f"an embedding has {EMBEDDING_DIMENSION} values, got {vector.shape}")
    norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else math.nan
    if not abs(norm - 1.0) < 1e-2:
        raise ValueError(f"an embedding must be a finite unit vector (its norm is {norm:.4g})")
    return as_stored(vector)


def check_embedding_queries(queries: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Query embeddings as a (k, 1280) float32 array of unit rows, 1 <= k <= 8."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != EMBEDDING_DIMENSION or not 1 <= len(q) <= len(ORIENTATIONS):
        raise ValueError(
            f"queries are 1 to 8 embeddings of {EMBEDDING_DIMENSION} values, got {q.shape}"
        )
    if not np.isfinite(q).all():
        raise ValueError("query embeddings must be finite")
    # Each norm is summed exactly (squares of float32 values are exact in float64), so a
    # query row scales the same whatever rows come with it.
    q64 = q.astype(np.float64)
    norms = np.array([math.sqrt(math.fsum(row * row)) for row in q64])
    unit: npt.NDArray[np.float32] = (q64 / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    return unit


def signature_distances(
    queries: npt.NDArray[np.int8], stored: npt.NDArray[np.int8]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Each stored signature's smallest distance to any query row, and which row."""
    table = np.stack([distances(stored, row) for row in queries], axis=1)
    best = table.argmin(axis=1)
    return table[np.arange(len(table)), best], best


def ranked(
    candidates: Sequence[tuple[str, Metadata | None]],
    found: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
    max_distance: float,
    method: str = "signature",
) -> builtins.list[Match]:
    """The exact re-rank that approximate stores end with: the candidates (filepath,
    metadata) whose distance (with the query row it was measured to, as ``found``
    gives them) is within ``max_distance``, best first, ties by filepath."""
    distance, best = found
    matches = [
        Match(path, float(distance[i]), ORIENTATIONS[best[i]], metadata, method=method)
        for i, (path, metadata) in enumerate(candidates)
        if distance[i] < max_distance
    ]
    matches.sort(key=lambda m: (m.distance, m.filepath))
    return matches


def redacted(url: str) -> str:
    """The URL without a password, as it may appear in messages and stats."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
