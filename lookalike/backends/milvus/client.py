"""pymilvus for one store: each request's failure as BackendUnavailable (``call``), the
store's collections created, checked and loaded (``prepare``, with their ``schema``), and
the few requests the store makes — upsert, delete, flush, queries by key or filter, every
row, counts, nearest neighbours."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from ...errors import BackendUnavailable, ConfigError
from ...signature import LENGTH
from ...vectors import EMBEDDING_DIMENSION
from .queries import in_expression
from .rows import MAX_MEDIA_TYPE, MAX_TEXT, PLACEHOLDER_DIMENSION, Row

try:
    import grpc
    from pymilvus import DataType, MilvusClient
    from pymilvus.exceptions import MilvusException
except ImportError:  # pragma: no cover - exercised where the extra is missing
    MilvusClient = None

__all__ = ["HNSW", "KINDS", "Client", "check_installed", "schema"]

T = TypeVar("T")

HNSW = {"M": 16, "efConstruction": 200}  # Milvus Lite's own defaults, said explicitly
KINDS = {
    "records": "signature",
    "embeddings": "embedding",
    "previews": "placeholder",
    "distinct": "placeholder",
}
_KEYS = 1000  # filepaths per `filepath in [...]` query, rows per iterator batch
_STRONG = {"consistency_level": "Strong"}  # a write is seen by the next read


def check_installed() -> None:
    """ConfigError where pymilvus is not installed."""
    if MilvusClient is None:
        raise ConfigError("the Milvus store needs: pip install 'lookalike[milvus]'")


class Client:
    """A connection to the Milvus at ``uri`` (``shown`` in messages); ``hint`` is added to
    the message of a connection that fails."""

    def __init__(self, uri: str, token: str, *, timeout: float, shown: str, hint: str) -> None:
        self.timeout = timeout
        self.shown = shown
        try:
            # A connection of its own, closed with the store: pymilvus keeps shared ones
            # open by address, and a later Milvus Lite server on a reused port would get
            # the stale channel ("Fail connecting to server").
            self.milvus: Any = MilvusClient(uri=uri, token=token, timeout=timeout, dedicated=True)
        except (MilvusException, grpc.RpcError) as error:
            raise BackendUnavailable(
                f"cannot open Milvus at {shown}: {_message(error)}{hint}"
            ) from None

    def call(self, request: Callable[[], T]) -> T:
        """Run one client request; failures become BackendUnavailable. pymilvus retries
        transient errors itself, within ``timeout``."""
        try:
            return request()
        except (MilvusException, grpc.RpcError) as error:
            raise BackendUnavailable(f"Milvus at {self.shown} failed: {_message(error)}") from None

    def request(self, method: Callable[..., Any], *args: Any, **options: Any) -> Any:
        """``method(*args, **options)`` of the pymilvus client, within ``timeout``, through
        ``call``."""
        return self.call(partial(method, *args, timeout=self.timeout, **options))

    def prepare(self, name: str, kind: str, index: str) -> bool:
        """Create a collection of ``kind`` (one of ``KINDS``) with its ``index`` if
        missing, check it, load it; whether it takes fields beyond its schema's (dynamic
        fields: previews collections made before content hashes were kept do not)."""
        if not self.request(self.milvus.has_collection, name):
            self._create(name, kind, index)
        described = self.request(self.milvus.describe_collection, name)
        have = {f["name"] for f in described.get("fields", [])}
        need = {f.name for f in schema(kind).fields}
        if not need <= have:
            raise ConfigError(
                f"the Milvus collection {name!r} exists and is not a lookalike collection"
                f" (it lacks {', '.join(sorted(need - have))})"
            )
        self.request(self.milvus.load_collection, name)
        return bool(described.get("enable_dynamic_field"))

    def exists(self, name: str) -> bool:
        return bool(self.request(self.milvus.has_collection, name))

    def upsert(self, collection: str, rows: builtins.list[Row]) -> None:
        self.request(self.milvus.upsert, collection, rows)

    def delete(self, collection: str, paths: builtins.list[str]) -> None:
        self.delete_where(collection, in_expression("filepath", paths))

    def delete_where(self, collection: str, where: str) -> None:
        self.request(self.milvus.delete, collection, filter=where)

    def flush(self, collection: str) -> None:
        self.request(self.milvus.flush, collection)

    def pending_index_rows(self, collection: str, vector: str) -> int:
        described = self.request(self.milvus.describe_index, collection, vector)
        return int(described.get("pending_index_rows") or 0)

    def fetch(
        self, collection: str, paths: Sequence[str], fields: builtins.list[str]
    ) -> builtins.list[Row]:
        """The rows of these filepaths (those that exist), with ``fields``."""
        found: builtins.list[Row] = []
        for start in range(0, len(paths), _KEYS):
            where = in_expression("filepath", paths[start : start + _KEYS])
            found += self.query(collection, where, fields)
        return found

    def query(self, collection: str, where: str, fields: builtins.list[str]) -> builtins.list[Row]:
        return list(
            self.request(
                self.milvus.query, collection, filter=where, output_fields=fields, **_STRONG
            )
        )

    def rows(
        self, collection: str, where: str, fields: builtins.list[str], *, whole: bool
    ) -> Iterator[builtins.list[Row]]:
        """Every row (that passes ``where``), in batches: with ``whole``, one unbounded query
        (quick on Milvus Lite, where iterators sort every batch), a query iterator otherwise."""
        if whole:  # (Milvus wants a filter on an unbounded query: keys are never "")
            yield self.query(collection, where or 'filepath != ""', fields)
            return
        iterator = self.request(
            self.milvus.query_iterator,
            collection,
            batch_size=_KEYS,
            filter=where,
            output_fields=fields,
        )
        try:
            while batch := self.call(iterator.next):
                yield list(batch)
        finally:
            iterator.close()

    def count(self, collection: str) -> int:
        return int(self.query(collection, "", ["count(*)"])[0]["count(*)"])

    def nearest(
        self,
        collection: str,
        field: str,
        vectors: builtins.list[builtins.list[float]],
        k: int,
        expression: str,
        ef: int | None,
    ) -> builtins.list[builtins.list[tuple[str, float]]]:
        """Each row's ``k`` most similar records: (filepath, cosine), most similar first;
        ``ef``, an HNSW index's search breadth."""
        params: dict[str, Any] = {"metric_type": "COSINE", "params": {}}
        if ef is not None:
            params["params"] = {"ef": ef}
        answer = self.request(
            self.milvus.search,
            collection,
            data=vectors,
            anns_field=field,
            limit=k,
            filter=expression,
            search_params=params,
            **_STRONG,
        )
        return [[(str(hit.id), float(hit.distance)) for hit in row] for row in answer]

    def close(self) -> None:
        self.milvus.close()

    def _create(self, name: str, kind: str, index: str) -> None:
        client = self.milvus
        vector = KINDS[kind]
        if KINDS[kind] == "placeholder":
            index = "FLAT"  # never searched: the least index that lets Milvus load it
        try:
            client.create_collection(name, schema=schema(kind), timeout=self.timeout, **_STRONG)
            params = client.prepare_index_params()
            params.add_index(
                field_name=vector,
                index_type=index,
                metric_type="COSINE",
                params=dict(HNSW) if index == "HNSW" else {},
            )
            client.create_index(name, params, timeout=self.timeout, sync=False)
        except (MilvusException, grpc.RpcError) as error:
            if not self.request(client.has_collection, name):
                raise BackendUnavailable(
                    f"Milvus at {self.shown} cannot create {name!r}: {_message(error)}"
                ) from None
            # another process created it meanwhile: theirs is as good


def schema(kind: str) -> Any:
    """The schema of a store's collection of ``kind``: records, embeddings, previews or
    distinct marks. Milvus wants a vector field in every collection: the previews' and the
    marks' is a constant. A mark's ``filepath`` (the key) is a hash of its pair."""
    built = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    built.add_field("filepath", DataType.VARCHAR, is_primary=True, max_length=MAX_TEXT)
    if kind == "distinct":
        built.add_field("placeholder", DataType.FLOAT_VECTOR, dim=PLACEHOLDER_DIMENSION)
        built.add_field("first", DataType.VARCHAR, max_length=MAX_TEXT)
        built.add_field("second", DataType.VARCHAR, max_length=MAX_TEXT)
    elif kind == "previews":
        built.add_field("placeholder", DataType.FLOAT_VECTOR, dim=PLACEHOLDER_DIMENSION)
        built.add_field("version", DataType.INT64)
        built.add_field("width", DataType.INT64)
        built.add_field("height", DataType.INT64)
        built.add_field("file_bytes", DataType.INT64)
        built.add_field("media_type", DataType.VARCHAR, max_length=MAX_MEDIA_TYPE)
        built.add_field("thumbnail", DataType.VARCHAR, max_length=MAX_TEXT)  # base64, or ""
    elif kind == "records":
        built.add_field("signature", DataType.FLOAT_VECTOR, dim=LENGTH)
        built.add_field("blank", DataType.BOOL)
        built.add_field("metadata", DataType.VARCHAR, max_length=MAX_TEXT)  # JSON text
        built.add_field("seq", DataType.INT64)
        built.add_field("created", DataType.DOUBLE)
        built.add_field("updated", DataType.DOUBLE)
        built.add_field("version", DataType.INT64)
        built.add_field("has_embedding", DataType.BOOL)
    else:
        built.add_field("embedding", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSION)
        built.add_field("version", DataType.INT64)
    return built


def _message(error: BaseException) -> str:
    if isinstance(error, MilvusException):
        return str(error.message)
    if isinstance(error, grpc.RpcError):
        return f"{error.code()}: {error.details()}"
    return str(error)
