"""Every available store, opened empty for each test.

``STORES`` lists one factory per store: ``factory(tmp_path) -> Backend`` opens a fresh,
empty store. The contract suite (``test_contract.py``) runs once per entry. To add a
store that needs a server, append an entry whose marks skip it, visibly, when the server
is not configured, e.g.::

    pytest.param(open_elasticsearch, id="elasticsearch",
                 marks=needs_env("LOOKALIKE_TEST_ES_URL", "an Elasticsearch server"))

where ``open_elasticsearch`` opens a fresh index (a unique name per test) and its
``close`` drops it; a store that needs an optional client library takes
``marks=needs_module("pymilvus", "milvus")``.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.backends import Backend, open_backend
from lookalike.backends.base import Search, Vectors
from lookalike.backends.sqlite import SQLiteBackend
from lookalike.config import Settings
from lookalike.records import Filter, Match, Preview, Record

StoreFactory = Callable[[Path], Backend]


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite file at an absolute path: ``sqlite:////abs/path.db``."""
    assert path.is_absolute()
    return "sqlite:///" + str(path)


def needs_env(variable: str, what: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not os.environ.get(variable), reason=f"set {variable} to test against {what}"
    )


def needs_module(module: str, extra: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"install lookalike[{extra}] to test against {module}",
    )


def open_memory(tmp_path: Path) -> Backend:
    return open_backend("memory://")


def open_sqlite(tmp_path: Path) -> Backend:
    return open_backend(sqlite_url(tmp_path / "store.db"))


class TwoConnections(Backend):
    """One SQLite file seen through two backends: writes go to one, reads to the other.

    Running the contract suite on it checks that every write is seen by another
    connection (which catches up from the file) exactly as by the one that made it.
    """

    def __init__(self, path: Path) -> None:
        self.writer = SQLiteBackend(path)
        self.reader = SQLiteBackend(path)

    def _add_trusted(self, records: Iterable[Record]) -> int:
        return self.writer.add_many(records)

    def _delete_trusted(self, filepath: str) -> bool:
        return self.writer.delete(filepath)

    def _get_trusted(self, filepath: str) -> Record | None:
        return self.reader.get(filepath)

    def _previews_trusted(
        self, filepaths: builtins.list[str], thumbnails: bool
    ) -> dict[str, Preview]:
        return self.reader.previews(filepaths, thumbnails=thumbnails)

    def _vectors_trusted(self, column: str, where: Filter | None) -> Vectors:
        return self.reader.vectors(column, where)

    def _mark_distinct_trusted(self, first: str, second: str) -> None:
        self.writer.mark_distinct(first, second)

    def _unmark_distinct_trusted(self, first: str, second: str) -> bool:
        return self.writer.unmark_distinct(first, second)

    def _distinct_trusted(self) -> builtins.list[tuple[str, str]]:
        return self.reader.distinct()

    def count(self) -> int:
        return self.reader.count()

    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        return self.reader.list(offset, limit)

    def _search_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        return self.reader.search(queries, limit=limit, max_distance=max_distance, where=where)

    def _search_embedding_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        return self.reader.search_embedding(
            queries, limit=limit, max_distance=max_distance, where=where
        )

    def stats(self) -> dict[str, Any]:
        return self.reader.stats()

    def reindex(self) -> dict[str, Any]:
        self.writer.reindex()
        return self.reader.stats()

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


def open_sqlite_two_connections(tmp_path: Path) -> Backend:
    return TwoConnections(tmp_path / "shared.db")


class IndexedAfterEachBatch(SQLiteBackend):
    """A SQLite store that rebuilds its index after every ``add_many`` of several records,
    probing every list.

    So the contract suite runs on the indexed path: batches land in the index, single
    adds in the delta, deletes and replacements mask index rows. Probing every list makes
    the index exact, as the contract requires; recall with fewer probes is tested apart.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, nprobe=1_000_000, build_in_background=False)

    def add_many(self, records: Iterable[Record]) -> int:
        added = super().add_many(records)
        if added > 1:
            self.reindex()
            assert self.stats()["index"] == "ivf"
        return added


def open_sqlite_indexed(tmp_path: Path) -> Backend:
    return IndexedAfterEachBatch(tmp_path / "indexed.db")


class EmbeddingIndexedAfterEachBatch(SQLiteBackend):
    """A SQLite store that rebuilds its HNSW index of embeddings after every ``add_many``
    of several records and searches it for every embedding query, however small.

    So the contract suite's embedding cases run on the indexed path: batches land in the
    index, single adds in the delta, deletes and replacements mask index rows.
    """

    def __init__(self, path: Path) -> None:
        # reindex() builds the signature index too: probe all its lists, as above
        super().__init__(
            path, nprobe=1_000_000, build_in_background=False, embedding_index_min_rows=1
        )
        self._embeddings.exact_rows = 0  # never fall back to a scan of the index rows

    def add_many(self, records: Iterable[Record]) -> int:
        added = super().add_many(records)
        if added > 1:
            self.reindex()
            stats = self.stats()
            assert stats["embedding_index"] == "hnsw" or not stats["embeddings"]
        return added


def open_sqlite_embedding_indexed(tmp_path: Path) -> Backend:
    return EmbeddingIndexedAfterEachBatch(tmp_path / "embedding-indexed.db")


def milvus_url(path: Path) -> str:
    """The URL of a Milvus Lite file at an absolute path: ``milvus:////abs/path.db``."""
    assert path.is_absolute()
    return "milvus:///" + str(path)


def open_milvus(tmp_path: Path) -> Backend:
    """A fresh Milvus Lite file (Milvus Lite runs in this process, one server per file),
    searched with an HNSW breadth beyond the collections' sizes: exhaustive, so exact, as
    the contract requires (like ``sqlite-indexed`` probing every list). The default
    breadth's recall is measured in ``test_milvus.py``."""
    from lookalike.backends.milvus import MilvusBackend
    from lookalike.backends.milvus.queries import MAX_CANDIDATES

    return MilvusBackend(milvus_url(tmp_path / "milvus.db"), ef=MAX_CANDIDATES)


class ThrowawayIndex:
    """An Elasticsearch index of its own for one test, deleted by ``close`` with its
    marks index."""

    def __new__(cls, tmp_path: Path) -> Any:
        from lookalike.backends.elasticsearch import ElasticsearchBackend

        name = f"lookalike-test-{uuid.uuid4().hex[:12]}"
        backend = ElasticsearchBackend(os.environ["LOOKALIKE_TEST_ES_URL"], index=name)
        close = backend.close

        def drop_and_close() -> None:
            for index in (name, f"{name}-distinct"):
                backend._es.options(ignore_status=404).indices.delete(index=index)
            close()

        backend.close = drop_and_close  # type: ignore[method-assign]
        return backend


def open_mongomock(tmp_path: Path) -> Backend:
    """The MongoDB store on mongomock, an in-process stand-in for pymongo: no MongoDB
    server can be installed where lookalike is developed (``mongodb-server`` runs the
    same suite on a real one when ``LOOKALIKE_TEST_MONGO_URL`` is set)."""
    import mongomock

    from lookalike.backends.mongodb import MongoBackend

    return MongoBackend(mongomock.MongoClient().lookalike_tests.images)


class ThrowawayCollection:
    """A MongoDB collection of its own for one test, dropped by ``close``."""

    def __new__(cls, tmp_path: Path) -> Any:
        from lookalike.backends.mongodb import MongoBackend

        name = f"images_{uuid.uuid4().hex[:12]}"
        url = os.environ["LOOKALIKE_TEST_MONGO_URL"].rstrip("/")
        backend = MongoBackend.from_url(f"{url}/lookalike_tests.{name}", Settings())
        close = backend.close

        def drop_and_close() -> None:
            database = backend._records.database
            for collection in (name, f"{name}.lookalike_distinct", f"{name}.lookalike_meta"):
                database.drop_collection(collection)
            close()

        backend.close = drop_and_close  # type: ignore[method-assign]
        return backend


STORES = [
    pytest.param(open_memory, id="memory"),
    pytest.param(open_sqlite, id="sqlite"),
    pytest.param(open_sqlite_two_connections, id="sqlite-two-connections"),
    pytest.param(open_sqlite_indexed, id="sqlite-indexed"),
    pytest.param(open_sqlite_embedding_indexed, id="sqlite-embedding-indexed"),
    pytest.param(open_milvus, id="milvus", marks=needs_module("pymilvus", "milvus")),
    pytest.param(open_mongomock, id="mongodb", marks=needs_module("mongomock", "mongodb")),
    pytest.param(
        ThrowawayCollection,
        id="mongodb-server",
        marks=[
            needs_env("LOOKALIKE_TEST_MONGO_URL", "a MongoDB server"),
            needs_module("pymongo", "mongodb"),
        ],
    ),
    pytest.param(
        ThrowawayIndex,
        id="elasticsearch",
        marks=[
            needs_env("LOOKALIKE_TEST_ES_URL", "an Elasticsearch server"),
            needs_module("elasticsearch", "elasticsearch"),
        ],
    ),
]


@pytest.fixture(params=STORES)
def open_store(request: pytest.FixtureRequest) -> StoreFactory:
    """The factory of one store from ``STORES``."""
    factory: StoreFactory = request.param
    return factory


@pytest.fixture
def backend(open_store: StoreFactory, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty store of each kind, closed after the test."""
    store = open_store(tmp_path)
    yield store
    store.close()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded by the test's name: reproducible, different per test."""
    return np.random.default_rng(list(request.node.nodeid.encode()))
