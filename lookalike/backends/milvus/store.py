"""``MilvusBackend``: a lookalike store in three (or four) Milvus collections, through
``client``; the package's docstring says how records are kept, searched and listed."""

from __future__ import annotations

import builtins
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt

from ...config import Settings
from ...errors import ConfigError, NotFound
from ...records import Filter, Match, Preview, Record
from ...signature import LENGTH
from ...vectors import EMBEDDING_DIMENSION
from ..base import Backend, Search
from .client import HNSW, Client, check_installed
from .lite import Shared, next_seq, release, share
from .queries import (
    INDEXES,
    MAX_CANDIDATES,
    check_collection_name,
    complete,
    embedding_bound,
    embedding_floor,
    filter_expression,
    literal,
    parse_url,
    signature_bound,
    signature_floor,
)
from .rows import (
    PLACEHOLDER_DIMENSION,
    PREVIEW,
    PREVIEW_SOURCE,
    RECORD,
    Checked,
    Row,
    check_lengths,
    embedding_of,
    metadata_of,
    preview_of,
    preview_row,
    rank_embeddings,
    rank_signatures,
    record_rows,
    signature_of,
)

__all__ = ["MilvusBackend"]

_BATCH = 500  # records per upsert
_VECTORS = ["embedding", "version"]  # what an embedding ranking reads


@dataclass(frozen=True)
class _Space:
    """One kind of search: where its vectors are and how its distance relates to cosine."""

    collection: str
    field: str
    fields: list[str]  # what ``rank`` reads of each candidate
    floor: Callable[[float], float]  # similarity a candidate must pass, for a cutoff
    bound: Callable[[float], float]  # least distance of what is at most a similarity
    # (queries, max_distance, where, rows) -> exact matches among the rows, best first
    rank: Callable[[Any, float, Filter | None, list[Row]], list[Match]]


class MilvusBackend(Backend):
    """A lookalike store in Milvus collections (created if missing)."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> MilvusBackend:
        """``milvus:///relative.db`` or ``milvus:////absolute.db`` (Milvus Lite),
        ``milvus://host:19530`` or ``milvus+https://host`` (a server, Zilliz Cloud)."""
        return cls(
            url,
            collection=settings.milvus_collection,
            index=settings.milvus_index,
            candidates=settings.milvus_candidates,
            ef=settings.milvus_ef,
            token=settings.milvus_token,
            timeout=settings.milvus_timeout,
        )

    def __init__(
        self,
        url: str,
        *,
        collection: str = "images",
        index: str = "HNSW",
        candidates: int = 32,
        token: str = "",
        timeout: float = 10.0,
        ef: int = 128,
        exclusive: bool | None = None,
    ) -> None:
        """``ef``: the least HNSW search breadth (at least the candidates asked for);
        ``exclusive``: whether this process alone uses the store, as with Milvus Lite (the
        default there; false for servers): it then keeps the insertion order in memory and
        reads a whole collection in one query, where a server is read with query iterators."""
        check_installed()
        if index not in INDEXES:
            raise ConfigError(f"unknown Milvus index {index!r}: use {', '.join(INDEXES)}")
        if not (1 <= candidates <= MAX_CANDIDATES and 1 <= ef <= MAX_CANDIDATES):
            raise ConfigError(f"Milvus candidates and ef must be from 1 to {MAX_CANDIDATES}")
        if timeout <= 0:
            raise ConfigError("the Milvus timeout must be positive")
        self.target = parse_url(url)
        self.name = check_collection_name(collection)
        self.vectors_name = f"{self.name}_embeddings"
        self.previews_name = f"{self.name}_previews"
        self.distinct_name = f"{self.name}_distinct"  # made by the first mark
        self._marks_made = False  # known to exist: collections are never dropped
        self.index = index
        self.candidates = candidates
        self.timeout = timeout
        self.ef = ef
        self._closed = False
        self._lite_path: str | None = None
        uri = self.target.uri
        if self.target.lite is None:
            self._shared = Shared()
        else:  # Milvus Lite runs in this process and locks its folder
            uri, self._shared = share(self.target.lite)
            self._lite_path = uri
            self.one_process = "Milvus Lite serves one process"
        self._exclusive = self._lite_path is not None if exclusive is None else exclusive
        self._lock = self._shared.lock
        hint = (
            " (Milvus Lite serves one process at a time: is another one using it?"
            " Run `lookalike serve --workers 1`, or use a Milvus server)"
            if self._lite_path is not None
            else ""
        )
        try:
            self._client = Client(uri, token, timeout=timeout, shown=self.target.shown, hint=hint)
            self._client.prepare(self.name, "records", index)
            self._client.prepare(self.vectors_name, "embeddings", index)
            # the content hash and file time are dynamic fields of the previews
            self._hashes = self._client.prepare(self.previews_name, "previews", index)
        except BaseException:
            self._release()
            raise

    # -- writes -------------------------------------------------------------------------

    def _add_trusted(self, records: Iterable[Record], batch: int = _BATCH) -> int:
        """Upsert in batches of ``batch``; each batch is checked whole before it is sent,
        so an invalid record raises before its batch is written (earlier ones stay)."""
        total = 0
        iterator = iter(records)
        while chunk := list(islice(iterator, batch)):
            checked = [check_lengths(record) for record in chunk]
            self._write(checked)
            total += len(checked)
        return total

    def _delete_trusted(self, filepath: str) -> bool:
        with self._lock:
            found = self._client.fetch(self.name, [filepath], ["has_embedding"])
            if not found:
                return False
            self._client.delete(self.name, [filepath])
            if found[0]["has_embedding"]:
                self._client.delete(self.vectors_name, [filepath])
            self._client.delete(self.previews_name, [filepath])
            if self._have_marks():
                either = f"first == {literal(filepath)} or second == {literal(filepath)}"
                self._client.delete_where(self.distinct_name, either)
            if (order := self._shared.order(self.name)) is not None:
                order.remove(filepath)
            return True

    def _mark_distinct_trusted(self, first: str, second: str) -> None:
        with self._lock:
            found = {row["filepath"] for row in self._client.fetch(self.name, [first, second], [])}
            for path in (first, second):
                if path not in found:
                    raise NotFound(f"no image is stored under {path!r}")
            if not self._have_marks():
                self._client.prepare(self.distinct_name, "distinct", self.index)
                self._marks_made = True
            row = {
                "filepath": _mark_key(first, second),
                "first": first,
                "second": second,
                "placeholder": [1.0] + [0.0] * (PLACEHOLDER_DIMENSION - 1),
            }
            self._upsert(self.distinct_name, [row])

    def _unmark_distinct_trusted(self, first: str, second: str) -> bool:
        with self._lock:
            if not self._have_marks():
                return False
            key = _mark_key(first, second)
            if not self._client.fetch(self.distinct_name, [key], []):
                return False
            self._client.delete(self.distinct_name, [key])
            return True

    def _distinct_trusted(self) -> builtins.list[tuple[str, str]]:
        if not self._have_marks():
            return []
        rows = self._client.rows(self.distinct_name, "", ["first", "second"], whole=self._exclusive)
        return [(row["first"], row["second"]) for batch in rows for row in batch]

    # -- reads --------------------------------------------------------------------------

    def _get_trusted(self, filepath: str) -> Record | None:
        return self._get_many_trusted([filepath]).get(filepath)

    def _get_many_trusted(self, filepaths: builtins.list[str]) -> dict[str, Record]:
        """Two queries per thousand filepaths: the records, then the embeddings of those
        that have one (an embedding of another version is half written: ignored)."""
        fields = [*RECORD, "created", "updated", "version", "has_embedding"]
        rows = self._client.fetch(self.name, filepaths, fields)
        embedded = [row["filepath"] for row in rows if row["has_embedding"]]
        vectors = (
            {
                v["filepath"]: v
                for v in self._client.fetch(self.vectors_name, embedded, ["filepath", *_VECTORS])
            }
            if embedded
            else {}
        )
        found = {}
        for row in rows:
            vector = vectors.get(row["filepath"])
            if vector is not None and vector["version"] != row["version"]:
                vector = None
            found[row["filepath"]] = Record(
                row["filepath"],
                signature_of(row),
                metadata_of(row),
                float(row["created"]),
                float(row["updated"]),
                embedding=None if vector is None else embedding_of(vector),
            )
        return found

    def _previews_trusted(
        self, filepaths: builtins.list[str], thumbnails: bool
    ) -> dict[str, Preview]:
        """Previews whose version is their record's (one left by a write that failed
        halfway is not)."""
        paths = list(dict.fromkeys(filepaths))
        if not paths:
            return {}
        fields = [*PREVIEW, *(PREVIEW_SOURCE if self._hashes else [])]
        if thumbnails:
            fields.append("thumbnail")
        rows = self._client.fetch(self.previews_name, paths, fields)
        if not rows:
            return {}
        owners = self._client.fetch(self.name, [row["filepath"] for row in rows], ["version"])
        versions = {owner["filepath"]: owner["version"] for owner in owners}
        return {
            row["filepath"]: preview_of(row)
            for row in rows
            if versions.get(row["filepath"]) == row["version"]
        }

    def count(self) -> int:
        return self._client.count(self.name)

    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        if limit <= 0:
            return []
        offset = max(offset, 0)
        if self._exclusive:
            with self._lock:
                order = self._shared.order(self.name, read=self._seqs)
                assert order is not None
                return order.page(offset, limit)
        pairs = self._seqs()
        pairs.sort()
        return [path for _, path in pairs[offset : offset + limit]]

    def _search_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        space = _Space(
            self.name, "signature", RECORD, signature_floor, signature_bound, rank_signatures
        )
        return self._search(space, queries, limit, max_distance, where)

    def _search_embedding_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        space = _Space(
            self.vectors_name,
            "embedding",
            _VECTORS,
            embedding_floor,
            embedding_bound,
            self._rank_embeddings,
        )
        return self._search(space, queries, limit, max_distance, where)

    def stats(self) -> dict[str, Any]:
        count = self.count()
        embeddings = self._client.count(self.vectors_name)
        described = self.index + (
            f" (M={HNSW['M']}, ef {self.ef}+)" if self.index == "HNSW" else ""
        )
        order = self._shared.order(self.name)
        facts: dict[str, Any] = {
            "backend": "milvus",
            "url": self.target.shown,
            "collection": self.name,
            "count": count,
            "embeddings": embeddings,
            "index": f"{described} on cosine, {self.candidates}+ candidates per orientation,"
            " exact re-rank",
            "memory_bytes": order.nbytes if order is not None else 0,
            "lite": self._lite_path is not None,
        }
        if self._lite_path is not None:
            # Milvus Lite runs in this process: its vectors are this process's memory.
            facts["memory_bytes"] += 4 * (count * LENGTH + embeddings * EMBEDDING_DIMENSION)
        return facts

    def reindex(self) -> dict[str, Any]:
        """Flush both collections, so that Milvus seals and indexes their segments, and
        wait until a server says every row is indexed (Milvus Lite builds its indexes in
        the background and searches unindexed segments exactly meanwhile)."""
        deadline = time.monotonic() + max(600.0, self.timeout)
        for name, vector in ((self.name, "signature"), (self.vectors_name, "embedding")):
            self._flush(name)
            while time.monotonic() < deadline:
                if not self._client.pending_index_rows(name, vector):
                    break
                time.sleep(0.5)
        return self.stats()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close()
        finally:
            self._release()

    # -- internals: the search ------------------------------------------------------------

    def _search(
        self,
        space: _Space,
        queries: npt.NDArray[Any],
        limit: int,
        max_distance: float,
        where: Filter | None,
    ) -> builtins.list[Match]:
        """Candidates from Milvus, more of them until the answer is provably complete."""
        if limit <= 0:
            return []
        zero = [not row.any() for row in queries]
        sent = [i for i in range(len(queries)) if not zero[i]]  # the rows searched in Milvus
        constant = 1.0 if any(zero) else math.inf  # every record's distance to a zero row
        floor = space.floor(max_distance) if max_distance <= 1.0 else -math.inf
        rank = partial(space.rank, queries, max_distance, where)
        expression = filter_expression(where)
        if not sent:  # every row is all zeros: every record is at distance 1
            if constant >= max_distance:
                return []
            return self._scan(space, rank, expression, limit)
        vectors = [queries[i].astype(np.float32).tolist() for i in sent]
        k = self.candidates
        fetched: dict[str, Row] = {}  # a wider round fetches only the candidates it adds
        total: int | None = None
        while True:
            ef = max(k, self.ef) if self.index == "HNSW" else None
            hits = self._client.nearest(space.collection, space.field, vectors, k, expression, ef)
            best: dict[str, float] = {}
            for row in hits:
                for path, similarity in row:
                    s = math.inf if math.isnan(similarity) else similarity
                    best[path] = max(best.get(path, -math.inf), s)
            wanted = [path for path, s in best.items() if s > floor]
            new = [path for path in wanted if path not in fetched]
            fetched.update(
                (got["filepath"], got)
                for got in self._client.fetch(space.collection, new, space.fields)
            )
            found = rank([fetched[path] for path in wanted if path in fetched])
            pruned = len(wanted) < len(best)
            if complete(hits, k, pruned, found, limit, max_distance, space.bound, constant):
                return found[:limit]
            if k >= MAX_CANDIDATES:
                return self._scan(space, rank, expression, limit)  # the last resort
            k = min(MAX_CANDIDATES, 4 * k)
            if total is None:
                total = self._client.count(space.collection)
            if len(vectors) * k >= total:
                return self._scan(space, rank, expression, limit)  # as cheap as asking for k

    def _scan(
        self,
        space: _Space,
        rank: Callable[[builtins.list[Row]], builtins.list[Match]],
        expression: str,
        limit: int,
    ) -> builtins.list[Match]:
        """Every record (that passes the filter), ranked exactly."""
        found: builtins.list[Match] = []
        for rows in self._client.rows(
            space.collection, expression, space.fields, whole=self._exclusive
        ):
            found += rank(rows)
        found.sort(key=lambda m: (m.distance, m.filepath))
        return found[:limit]

    def _rank_embeddings(
        self,
        queries: npt.NDArray[np.float32],
        max_distance: float,
        where: Filter | None,
        vectors: builtins.list[Row],
    ) -> builtins.list[Match]:
        """Exact matches among embedding rows whose record is current and passes ``where``."""
        paths = [vector["filepath"] for vector in vectors]
        fields = ["version", "metadata"]
        owners = {row["filepath"]: row for row in self._client.fetch(self.name, paths, fields)}
        return rank_embeddings(queries, max_distance, where, vectors, owners)

    # -- internals: writes and reads ------------------------------------------------------

    def _write(self, checked: builtins.list[Checked]) -> None:
        latest = {record[0]: record for record in checked}  # the last of each filepath
        with self._lock:
            fields = ["seq", "created", "has_embedding"]
            old = {row["filepath"]: row for row in self._client.fetch(self.name, [*latest], fields)}
            now = time.time()
            rows, vectors, previews, dropped, unpreviewed, added = [], [], [], [], [], []
            for filepath, record in latest.items():
                before = old.get(filepath)
                if before is None:
                    added.append(filepath)
                version = random.getrandbits(62)
                row, vector = record_rows(
                    record,
                    seq=int(before["seq"]) if before else next_seq(),
                    created=_given(record[5], float(before["created"]) if before else now),
                    updated=_given(record[6], now),
                    version=version,
                )
                rows.append(row)
                if vector is not None:
                    vectors.append(vector)
                elif before is not None and before["has_embedding"]:
                    dropped.append(filepath)
                if (preview := record[4]) is not None:
                    previews.append(preview_row(filepath, preview, version, self._hashes))
                elif before is not None:
                    unpreviewed.append(filepath)
            # the parts first, the record last: its new version makes them current
            if vectors:
                self._upsert(self.vectors_name, vectors)
            if previews:
                self._upsert(self.previews_name, previews)
            self._upsert(self.name, rows)
            if dropped:
                self._client.delete(self.vectors_name, dropped)
            if unpreviewed:
                self._client.delete(self.previews_name, unpreviewed)
            if (order := self._shared.order(self.name)) is not None:
                for filepath in added:
                    order.add(filepath)

    def _upsert(self, collection: str, rows: builtins.list[Row]) -> None:
        self._client.upsert(collection, rows)
        if self._lite_path is not None and self._shared.wrote(collection, len(rows)):
            self._flush(collection)

    def _flush(self, collection: str) -> None:
        self._client.flush(collection)
        self._shared.unflushed[collection] = 0

    def _have_marks(self) -> bool:
        """Whether the marks collection exists (loaded, once seen): one cheap request per
        call until a mark is made, by this process or another."""
        if not self._marks_made and self._client.exists(self.distinct_name):
            self._client.prepare(self.distinct_name, "distinct", self.index)
            self._marks_made = True
        return self._marks_made

    def _seqs(self) -> builtins.list[tuple[int, str]]:
        """(seq, filepath) of every record."""
        return [
            (int(row["seq"]), row["filepath"])
            for rows in self._client.rows(self.name, "", ["seq"], whole=self._exclusive)
            for row in rows
        ]

    def _release(self) -> None:
        """Let go of this process's Milvus Lite server when its last user closes."""
        if self._lite_path is None:
            return
        path, self._lite_path = self._lite_path, None
        release(path, self._shared)


def _mark_key(first: str, second: str) -> str:
    """The key of a mark: a hash of its sorted pair (NUL cannot be in a filepath)."""
    return hashlib.sha256(f"{first}\0{second}".encode()).hexdigest()


def _given(time: float | None, otherwise: float) -> float:
    """A record's own time (an import keeps it), else ``otherwise``."""
    return otherwise if time is None else time
