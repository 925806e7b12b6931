"""``MilvusBackend``: a lookalike store in two Milvus collections, with pymilvus; the
package's docstring says how records are kept, searched and listed."""

from __future__ import annotations

import builtins
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ...config import Settings
from ...errors import BackendUnavailable, ConfigError
from ...records import Filter, Match, Record
from ...signature import LENGTH
from ...vectors import EMBEDDING_DIMENSION
from ..base import Backend
from .lite import Shared, next_seq, release, share
from .queries import (
    INDEXES,
    MAX_CANDIDATES,
    check_collection_name,
    embedding_bound,
    embedding_floor,
    filter_expression,
    in_expression,
    parse_url,
    signature_bound,
    signature_floor,
)
from .rows import (
    MAX_TEXT,
    RECORD,
    Checked,
    Row,
    check_lengths,
    embedding_of,
    metadata_of,
    rank_embeddings,
    rank_signatures,
    record_rows,
    signature_of,
)

try:
    import grpc
    from pymilvus import DataType, MilvusClient
    from pymilvus.exceptions import MilvusException
except ImportError:  # pragma: no cover - exercised where the extra is missing
    MilvusClient = None

__all__ = ["MilvusBackend"]

T = TypeVar("T")

_BATCH = 500  # records per upsert
_KEYS = 1000  # filepaths per `filepath in [...]` query, rows per iterator batch
_HNSW = {"M": 16, "efConstruction": 200}  # Milvus Lite's own defaults, said explicitly
_STRONG = {"consistency_level": "Strong"}  # a write is seen by the next read


@dataclass(frozen=True)
class _Space:
    """One kind of search: where its vectors are and how its distance relates to cosine."""

    collection: str
    field: str
    fields: list[str]  # what ``rank`` reads of each candidate
    queries: npt.NDArray[Any]  # every query row
    sent: list[int]  # the rows searched in Milvus (not all zero)
    constant: float  # distance of every record through an all-zero row (inf: none)
    floor: float  # similarity a candidate must pass to be fetched (-inf: all)
    bound: Callable[[float], float]
    rank: Callable[[list[Row]], list[Match]]  # exact matches among fetched rows, best first


# -- the backend --------------------------------------------------------------------------


class MilvusBackend(Backend):
    """A lookalike store in two Milvus collections (created if missing)."""

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
        if MilvusClient is None:
            raise ConfigError("the Milvus store needs: pip install 'lookalike[milvus]'")
        if index not in INDEXES:
            raise ConfigError(f"unknown Milvus index {index!r}: use {', '.join(INDEXES)}")
        if not (1 <= candidates <= MAX_CANDIDATES and 1 <= ef <= MAX_CANDIDATES):
            raise ConfigError(f"Milvus candidates and ef must be from 1 to {MAX_CANDIDATES}")
        if timeout <= 0:
            raise ConfigError("the Milvus timeout must be positive")
        self.target = parse_url(url)
        self.name = check_collection_name(collection)
        self.vectors_name = f"{self.name}_embeddings"
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
        try:
            self._client: Any = self._connect(uri, token)
            self._prepare()
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
            found = self._fetch(self.name, [filepath], ["has_embedding"])
            if not found:
                return False
            self._remove(self.name, [filepath])
            if found[0]["has_embedding"]:
                self._remove(self.vectors_name, [filepath])
            if (order := self._shared.order(self.name)) is not None:
                order.remove(filepath)
            return True

    # -- reads --------------------------------------------------------------------------

    def _get_trusted(self, filepath: str) -> Record | None:
        fields = [*RECORD, "created", "updated", "version", "has_embedding"]
        found = self._fetch(self.name, [filepath], fields)
        if not found:
            return None
        row = found[0]
        embedding = None
        if row["has_embedding"]:
            vectors = self._fetch(self.vectors_name, [filepath], ["embedding", "version"])
            if vectors and vectors[0]["version"] == row["version"]:
                embedding = embedding_of(vectors[0])
        return Record(
            filepath,
            signature_of(row),
            metadata_of(row),
            float(row["created"]),
            float(row["updated"]),
            embedding=embedding,
        )

    def count(self) -> int:
        return self._count(self.name)

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

    def _search_trusted(
        self,
        queries: npt.NDArray[np.int8],
        limit: int,
        max_distance: float,
        where: Filter | None,
    ) -> builtins.list[Match]:
        zero = [not row.any() for row in queries]
        space = _Space(
            collection=self.name,
            field="signature",
            fields=RECORD,
            queries=queries,
            sent=[i for i in range(len(queries)) if not zero[i]],
            constant=1.0 if any(zero) else math.inf,
            floor=signature_floor(max_distance) if max_distance <= 1.0 else -math.inf,
            bound=signature_bound,
            rank=partial(rank_signatures, queries, max_distance, where),
        )
        return self._search(space, limit, max_distance, where)

    def _search_embedding_trusted(
        self,
        queries: npt.NDArray[np.float32],
        limit: int,
        max_distance: float,
        where: Filter | None,
    ) -> builtins.list[Match]:
        zero = [not row.any() for row in queries]
        space = _Space(
            collection=self.vectors_name,
            field="embedding",
            fields=["embedding", "version"],
            queries=queries,
            sent=[i for i in range(len(queries)) if not zero[i]],
            constant=1.0 if any(zero) else math.inf,
            floor=embedding_floor(max_distance) if max_distance <= 1.0 else -math.inf,
            bound=embedding_bound,
            rank=partial(self._rank_embeddings, queries, max_distance, where),
        )
        return self._search(space, limit, max_distance, where)

    def stats(self) -> dict[str, Any]:
        count = self.count()
        embeddings = self._count(self.vectors_name)
        described = self.index + (
            f" (M={_HNSW['M']}, ef {self.ef}+)" if self.index == "HNSW" else ""
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
                described = self._call(
                    partial(self._client.describe_index, name, vector, timeout=self.timeout)
                )
                if not int(described.get("pending_index_rows") or 0):
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
        self, space: _Space, limit: int, max_distance: float, where: Filter | None
    ) -> builtins.list[Match]:
        """Candidates from Milvus, more of them until the answer is provably complete."""
        if limit <= 0:
            return []
        expression = filter_expression(where)
        if not space.sent:  # every row is all zeros: every record is at distance 1
            if space.constant >= max_distance:
                return []
            return self._scan(space, expression, limit)
        vectors = [space.queries[i].astype(np.float32).tolist() for i in space.sent]
        k = self.candidates
        fetched: dict[str, Row] = {}  # a wider round fetches only the candidates it adds
        total: int | None = None
        while True:
            hits = self._nearest(space, vectors, k, expression)
            best: dict[str, float] = {}
            for row in hits:
                for path, similarity in row:
                    s = math.inf if math.isnan(similarity) else similarity
                    best[path] = max(best.get(path, -math.inf), s)
            wanted = [path for path, s in best.items() if s > space.floor]
            new = [path for path in wanted if path not in fetched]
            fetched.update(
                (got["filepath"], got) for got in self._fetch(space.collection, new, space.fields)
            )
            found = space.rank([fetched[path] for path in wanted if path in fetched])
            if _complete(space, hits, k, len(wanted) < len(best), found, limit, max_distance):
                return found[:limit]
            if k >= MAX_CANDIDATES:
                return self._scan(space, expression, limit)  # the last resort
            k = min(MAX_CANDIDATES, 4 * k)
            if total is None:
                total = self._count(space.collection)
            if len(vectors) * k >= total:
                return self._scan(space, expression, limit)  # as cheap as asking for k

    def _nearest(
        self, space: _Space, vectors: builtins.list[builtins.list[float]], k: int, expression: str
    ) -> builtins.list[builtins.list[tuple[str, float]]]:
        """Each row's ``k`` most similar records: (filepath, cosine), most similar first."""
        params: dict[str, Any] = {"metric_type": "COSINE", "params": {}}
        if self.index == "HNSW":
            params["params"] = {"ef": max(k, self.ef)}
        answer = self._call(
            partial(
                self._client.search,
                space.collection,
                data=vectors,
                anns_field=space.field,
                limit=k,
                filter=expression,
                search_params=params,
                timeout=self.timeout,
                **_STRONG,
            )
        )
        return [[(str(hit.id), float(hit.distance)) for hit in row] for row in answer]

    def _scan(self, space: _Space, expression: str, limit: int) -> builtins.list[Match]:
        """Every record (that passes the filter), ranked exactly."""
        found: builtins.list[Match] = []
        for rows in self._rows(space.collection, expression, space.fields):
            found += space.rank(rows)
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
        owners = {row["filepath"]: row for row in self._fetch(self.name, paths, fields)}
        return rank_embeddings(queries, max_distance, where, vectors, owners)

    # -- internals: writes and reads ------------------------------------------------------

    def _write(self, checked: builtins.list[Checked]) -> None:
        latest = {record[0]: record for record in checked}  # the last of each filepath
        with self._lock:
            fields = ["seq", "created", "has_embedding"]
            old = {row["filepath"]: row for row in self._fetch(self.name, [*latest], fields)}
            now = time.time()
            rows, vectors, dropped, added = [], [], [], []
            for filepath, record in latest.items():
                before = old.get(filepath)
                if before is None:
                    added.append(filepath)
                row, vector = record_rows(
                    record,
                    seq=int(before["seq"]) if before else next_seq(),
                    created=float(before["created"]) if before else now,
                    updated=now,
                    version=random.getrandbits(62),
                )
                rows.append(row)
                if vector is not None:
                    vectors.append(vector)
                elif before is not None and before["has_embedding"]:
                    dropped.append(filepath)
            if vectors:
                self._upsert(self.vectors_name, vectors)
            self._upsert(self.name, rows)
            if dropped:
                self._remove(self.vectors_name, dropped)
            if (order := self._shared.order(self.name)) is not None:
                for filepath in added:
                    order.add(filepath)

    def _upsert(self, collection: str, rows: builtins.list[Row]) -> None:
        self._call(partial(self._client.upsert, collection, rows, timeout=self.timeout))
        if self._lite_path is not None and self._shared.wrote(collection, len(rows)):
            self._flush(collection)

    def _remove(self, collection: str, paths: builtins.list[str]) -> None:
        where = in_expression("filepath", paths)
        self._call(partial(self._client.delete, collection, filter=where, timeout=self.timeout))

    def _flush(self, collection: str) -> None:
        self._call(partial(self._client.flush, collection, timeout=self.timeout))
        self._shared.unflushed[collection] = 0

    def _fetch(
        self, collection: str, paths: Sequence[str], fields: builtins.list[str]
    ) -> builtins.list[Row]:
        """The rows of these filepaths (those that exist), with ``fields``."""
        found: builtins.list[Row] = []
        for start in range(0, len(paths), _KEYS):
            where = in_expression("filepath", paths[start : start + _KEYS])
            found += self._query(collection, where, fields)
        return found

    def _query(self, collection: str, where: str, fields: builtins.list[str]) -> builtins.list[Row]:
        return list(
            self._call(
                partial(
                    self._client.query,
                    collection,
                    filter=where,
                    output_fields=fields,
                    timeout=self.timeout,
                    **_STRONG,
                )
            )
        )

    def _rows(
        self, collection: str, where: str, fields: builtins.list[str]
    ) -> Iterator[builtins.list[Row]]:
        """Every row (that passes ``where``), in batches: one unbounded query for Milvus
        Lite (quick there, where iterators sort every batch), a query iterator otherwise."""
        if self._exclusive:  # (Milvus wants a filter on an unbounded query: keys are never "")
            yield self._query(collection, where or 'filepath != ""', fields)
            return
        iterator = self._call(
            partial(
                self._client.query_iterator,
                collection,
                batch_size=_KEYS,
                filter=where,
                output_fields=fields,
                timeout=self.timeout,
            )
        )
        try:
            while batch := self._call(iterator.next):
                yield list(batch)
        finally:
            iterator.close()

    def _count(self, collection: str) -> int:
        return int(self._query(collection, "", ["count(*)"])[0]["count(*)"])

    def _seqs(self) -> builtins.list[tuple[int, str]]:
        """(seq, filepath) of every record."""
        return [
            (int(row["seq"]), row["filepath"])
            for rows in self._rows(self.name, "", ["seq"])
            for row in rows
        ]

    # -- internals: the connection --------------------------------------------------------

    def _connect(self, uri: str, token: str) -> Any:
        try:
            return MilvusClient(uri=uri, token=token, timeout=self.timeout)
        except (MilvusException, grpc.RpcError) as error:
            hint = (
                " (Milvus Lite serves one process at a time: is another one using it?"
                " Run `lookalike serve --workers 1`, or use a Milvus server)"
                if self._lite_path is not None
                else ""
            )
            raise BackendUnavailable(
                f"cannot open Milvus at {self.target.shown}: {_message(error)}{hint}"
            ) from None

    def _prepare(self) -> None:
        """Create both collections with their indices if missing, check them, load them."""
        for name, vector, records in (
            (self.name, "signature", True),
            (self.vectors_name, "embedding", False),
        ):
            if not self._call(partial(self._client.has_collection, name, timeout=self.timeout)):
                self._create(name, vector, records)
            described = self._call(
                partial(self._client.describe_collection, name, timeout=self.timeout)
            )
            have = {f["name"] for f in described.get("fields", [])}
            need = {f.name for f in _schema(records).fields}
            if not need <= have:
                raise ConfigError(
                    f"the Milvus collection {name!r} exists and is not a lookalike collection"
                    f" (it lacks {', '.join(sorted(need - have))})"
                )
            self._call(partial(self._client.load_collection, name, timeout=self.timeout))

    def _create(self, name: str, vector: str, records: bool) -> None:
        client = self._client
        try:
            client.create_collection(name, schema=_schema(records), timeout=self.timeout, **_STRONG)
            params = client.prepare_index_params()
            params.add_index(
                field_name=vector,
                index_type=self.index,
                metric_type="COSINE",
                params=dict(_HNSW) if self.index == "HNSW" else {},
            )
            client.create_index(name, params, timeout=self.timeout, sync=False)
        except (MilvusException, grpc.RpcError) as error:
            if not self._call(partial(client.has_collection, name, timeout=self.timeout)):
                raise BackendUnavailable(
                    f"Milvus at {self.target.shown} cannot create {name!r}: {_message(error)}"
                ) from None
            # another process created it meanwhile: theirs is as good

    def _call(self, request: Callable[[], T]) -> T:
        """Run one client request; failures become BackendUnavailable. pymilvus retries
        transient errors itself, within ``timeout``."""
        try:
            return request()
        except (MilvusException, grpc.RpcError) as error:
            raise BackendUnavailable(
                f"Milvus at {self.target.shown} failed: {_message(error)}"
            ) from None

    def _release(self) -> None:
        """Let go of this process's Milvus Lite server when its last user closes."""
        if self._lite_path is None:
            return
        path, self._lite_path = self._lite_path, None
        release(path, self._shared)


# -- pure helpers -------------------------------------------------------------------------


def _schema(records: bool) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("filepath", DataType.VARCHAR, is_primary=True, max_length=MAX_TEXT)
    if records:
        schema.add_field("signature", DataType.FLOAT_VECTOR, dim=LENGTH)
        schema.add_field("blank", DataType.BOOL)
        schema.add_field("metadata", DataType.VARCHAR, max_length=MAX_TEXT)  # JSON text
        schema.add_field("seq", DataType.INT64)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field("updated", DataType.DOUBLE)
        schema.add_field("version", DataType.INT64)
        schema.add_field("has_embedding", DataType.BOOL)
    else:
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSION)
        schema.add_field("version", DataType.INT64)
    return schema


def _complete(
    space: _Space,
    hits: list[list[tuple[str, float]]],
    k: int,
    pruned: bool,
    found: list[Match],
    limit: int,
    max_distance: float,
) -> bool:
    """Whether no record outside ``found`` can belong in the answer (see queries).

    A row that returned fewer than ``k`` hits has seen every record that passes the
    filter; a full row bounds the distance of every record it did not return; a record
    returned but not fetched (``pruned``) is beyond the cutoff through those rows."""
    full = [row for row in hits if len(row) >= k]
    if len(full) < len(hits) and not pruned:
        return True  # every record was fetched and ranked
    least = min([space.bound(row[-1][1]) for row in full] + [space.constant])
    if least >= max_distance:
        return True
    return len(found) >= limit and least > found[limit - 1].distance


def _message(error: BaseException) -> str:
    if isinstance(error, MilvusException):
        return str(error.message)
    if isinstance(error, grpc.RpcError):
        return f"{error.code()}: {error.details()}"
    return str(error)
