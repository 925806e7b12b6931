"""The MongoDB store: lookalike's records in a collection of image-match's documents."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Self

import bson
import numpy as np
import numpy.typing as npt
import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from ...config import Settings
from ...errors import BackendUnavailable, NotFound
from ...records import Filter, Match, Metadata, Preview, Record, matches_filter
from ...signature import LENGTH
from ...vectors import EMBEDDING_DIMENSION, cosine_distances
from ..base import Backend, Search, Vectors, ranked, redacted, signature_distances
from .documents import (
    CREATED,
    EMBEDDING,
    METADATA_TEXT,
    PREVIEW,
    PREVIEW_SIZES,
    SIGNATURE_BYTES,
    created_of,
    document_of,
    embedding_of,
    metadata_of,
    parse_url,
    prefilter,
    preview_of,
    record_of,
    signature_of,
)

__all__ = ["MongoBackend"]

_BATCH = 500  # records taken from the iterable, checked, then written
_SCAN = 4096  # documents scored at once by a search
_TIMEOUT_MS = 10_000  # server selection, connection and each operation, unless the URL says
_CHANGES = "changes"


class MongoBackend(Backend):
    """Records in one collection (``collection``, a pymongo ``Collection``), searched by
    an exact scan. Distinct marks and the write counter live in two collections beside
    it, ``<name>.lookalike_distinct`` and ``<name>.lookalike_meta``."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> Self:
        client_url, database, name = parse_url(url)
        options: dict[str, Any] = {
            option: _TIMEOUT_MS
            for option in ("serverSelectionTimeoutMS", "connectTimeoutMS", "socketTimeoutMS")
            if option.lower() not in client_url.lower()
        }
        client: Any = pymongo.MongoClient(client_url, **options)
        try:
            return cls(client[database][name], owns_client=True, label=redacted(url))
        except BaseException:
            client.close()
            raise

    def __init__(self, collection: Any, *, owns_client: bool = False, label: str = "") -> None:
        self._records = collection
        self._distinct = collection.database[f"{collection.name}.lookalike_distinct"]
        self._meta = collection.database[f"{collection.name}.lookalike_meta"]
        self._owns_client = owns_client
        self._label = label or f"{collection.database.name}.{collection.name}"
        with self._reached():
            # indexes image-match's own never made: lookups by path, marks by either image
            self._records.create_index("path")
            self._distinct.create_index([("first", 1), ("second", 1)], unique=True)
            self._distinct.create_index("second")

    @contextlib.contextmanager
    def _reached(self) -> Iterator[None]:
        """MongoDB's failures as ``BackendUnavailable``, naming the store, never its
        password."""
        try:
            yield
        except (ConnectionFailure, OperationFailure) as error:
            raise BackendUnavailable(
                f"MongoDB store {self._label} cannot answer: {type(error).__name__}"
            ) from error
        except PyMongoError as error:
            raise BackendUnavailable(
                f"MongoDB store {self._label} failed: {type(error).__name__}"
            ) from error

    # -- writes ---------------------------------------------------------------------------

    def _add_trusted(self, records: Iterable[Record]) -> int:
        written, batches = 0, iter(records)
        while batch := builtins.list(islice(batches, _BATCH)):
            now = time.time()
            with self._reached():
                stored = self._first_copies([r.filepath for r in batch])
                for record in batch:
                    fields, absent = document_of(record, now)
                    known = stored.get(record.filepath)
                    if known is None:
                        inserted = self._records.insert_one({CREATED: now, **fields})
                        stored[record.filepath] = inserted.inserted_id
                        continue
                    update: dict[str, Any] = {"$set": fields}
                    if absent:
                        update["$unset"] = absent
                    self._records.update_one({"_id": known}, update)
                self._changed()
            written += len(batch)
        return written

    def _first_copies(self, paths: builtins.list[str]) -> dict[str, Any]:
        """The ``_id`` of each path's document, one query for a batch. image-match never
        deduplicated: of several documents with one path, the first is kept (an add
        replaces that one record) and the others are removed."""
        first: dict[str, Any] = {}
        extra = []
        found = self._records.find({"path": {"$in": paths}}, {"path": 1}).sort("_id", 1)
        for document in found:
            if document["path"] in first:
                extra.append(document["_id"])
            else:
                first[document["path"]] = document["_id"]
        if extra:
            self._records.delete_many({"_id": {"$in": extra}})
        return first

    def _delete_trusted(self, filepath: str) -> bool:
        with self._reached():
            deleted = self._records.delete_many({"path": filepath}).deleted_count
            if deleted:
                self._distinct.delete_many({"$or": [{"first": filepath}, {"second": filepath}]})
                self._changed()
        return bool(deleted)

    def _changed(self) -> None:
        self._meta.update_one({"_id": _CHANGES}, {"$inc": {"n": 1}}, upsert=True)

    def changes(self) -> int | None:
        with self._reached():
            counter = self._meta.find_one({"_id": _CHANGES})
        return int(counter["n"]) if counter else 0

    def _mark_distinct_trusted(self, first: str, second: str) -> None:
        with self._reached():
            for path in (first, second):
                if self._records.count_documents({"path": path}, limit=1) == 0:
                    raise NotFound(f"no image is stored under {path!r}")
            pair = {"first": first, "second": second}
            self._distinct.update_one(pair, {"$set": pair}, upsert=True)

    def _unmark_distinct_trusted(self, first: str, second: str) -> bool:
        with self._reached():
            deleted = self._distinct.delete_one({"first": first, "second": second})
        return bool(deleted.deleted_count)

    def _distinct_trusted(self) -> builtins.list[tuple[str, str]]:
        with self._reached():
            return [(d["first"], d["second"]) for d in self._distinct.find({}, {"_id": 0})]

    # -- reads ----------------------------------------------------------------------------

    def _get_trusted(self, filepath: str) -> Record | None:
        with self._reached():
            document = self._records.find_one({"path": filepath}, {PREVIEW: 0}, sort=[("_id", 1)])
        return record_of(document) if document else None

    def _previews_trusted(
        self, filepaths: builtins.list[str], thumbnails: bool
    ) -> dict[str, Preview]:
        fields = (
            ["path", PREVIEW]
            if thumbnails
            else ["path"] + [f"{PREVIEW}.{key}" for key in PREVIEW_SIZES]
        )
        query = {"path": {"$in": filepaths}, PREVIEW: {"$exists": True}}
        with self._reached():
            found = builtins.list(self._records.find(query, fields).sort("_id", -1))
        # of several documents with one path, the first (as ``get`` reads)
        return {d["path"]: preview_of(d[PREVIEW]) for d in found}

    def count(self) -> int:
        with self._reached():
            return int(self._records.count_documents({}))

    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        if limit <= 0:  # MongoDB reads a limit of 0 as none
            return []
        with self._reached():
            found = self._records.find({}, {"path": 1}).sort("_id", 1).skip(offset).limit(limit)
            return [d["path"] for d in found]

    def _scan(
        self, where: Filter | None, fields: builtins.list[str], extra: dict[str, Any] | None = None
    ) -> Iterator[builtins.list[dict[str, Any]]]:
        """The documents passing ``where`` (exactly: ``matches_filter``), ``_SCAN`` at a
        time, with ``fields``; ``"signature"`` reads lookalike's bytes, or image-match's
        list from the documents that lack them (a second pass, after the first)."""
        query = _all_of(prefilter(where), extra)
        projection = ["path", "metadata", METADATA_TEXT, *fields]
        passes = [(query, projection)]
        if "signature" in fields:
            has_bytes = {SIGNATURE_BYTES: {"$exists": True}}
            passes = [
                (_all_of(query, has_bytes), [*projection, SIGNATURE_BYTES]),
                (_all_of(query, {SIGNATURE_BYTES: {"$exists": False}}), projection),
            ]
            passes[0][1].remove("signature")
        batch: builtins.list[dict[str, Any]] = []
        with self._reached():
            for query, wanted in passes:
                cursor = self._records.find(query, wanted).sort("_id", 1).batch_size(_SCAN)
                for document in cursor:
                    if where and not matches_filter(metadata_of(document), where):
                        continue
                    batch.append(document)
                    if len(batch) == _SCAN:
                        yield batch
                        batch = []
            if batch:
                yield batch

    def _vectors_trusted(self, column: str, where: Filter | None) -> Vectors:
        signatures = column == "signature"
        fields, extra = (
            (["signature", CREATED], None)
            if signatures
            else ([EMBEDDING, CREATED], {EMBEDDING: {"$exists": True}})
        )
        documents = [d for batch in self._scan(where, fields, extra) for d in batch]
        documents.sort(key=lambda d: d["_id"])  # insertion order, across the scan's passes
        if signatures:
            matrix: npt.NDArray[Any] = np.array(
                [signature_of(d) for d in documents], dtype=np.int8
            ).reshape(-1, LENGTH)
        else:
            matrix = np.array([embedding_of(d) for d in documents], dtype=np.float32)
            matrix = matrix.reshape(-1, EMBEDDING_DIMENSION)
        created = np.array([created_of(d) or 0.0 for d in documents], dtype=np.float64)
        return Vectors([d["path"] for d in documents], created, matrix)

    def _search_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        found: builtins.list[Match] = []
        for batch in self._scan(where, ["signature"]):
            stored = np.array([signature_of(d) for d in batch], dtype=np.int8).reshape(-1, LENGTH)
            found += ranked(_candidates(batch), signature_distances(queries, stored), max_distance)
        return _best(found, limit)

    def _search_embedding_trusted(self, search: Search) -> builtins.list[Match]:
        queries, limit, max_distance, where = search
        found: builtins.list[Match] = []
        for batch in self._scan(where, [EMBEDDING], {EMBEDDING: {"$exists": True}}):
            rows = np.array([embedding_of(d) for d in batch], dtype=np.float32)
            distances = cosine_distances(queries, rows.reshape(-1, EMBEDDING_DIMENSION))
            found += ranked(_candidates(batch), distances, max_distance, "embedding")
        return _best(found, limit)

    def stats(self) -> dict[str, Any]:
        with self._reached():
            embeddings = self._records.count_documents({EMBEDDING: {"$exists": True}})
        return {
            "backend": "mongodb",
            "collection": self._label,
            "count": self.count(),
            "index": "exact scan",
            "embeddings": int(embeddings),
            "memory_bytes": 0,  # a search holds one batch of documents, nothing stays
            "index_shared_bytes": self._collection_bytes(),
        }

    def _collection_bytes(self) -> int:
        """The collection's size on the server, which every process shares: as the server
        counts it, or (where it cannot say, as mongomock) its documents' BSON sizes."""
        with contextlib.suppress(NotImplementedError, PyMongoError):
            return int(self._records.database.command({"collStats": self._records.name})["size"])
        with self._reached():
            return sum(len(bson.encode(d)) for d in self._records.find({}, {PREVIEW: 0}))

    def reindex(self) -> dict[str, Any]:
        return self.stats()

    def close(self) -> None:
        if self._owns_client:
            self._records.database.client.close()


def _all_of(query: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    if not extra:
        return query
    return {"$and": [query, extra]} if query else extra


def _candidates(batch: builtins.list[dict[str, Any]]) -> builtins.list[tuple[str, Metadata | None]]:
    return [(d["path"], metadata_of(d)) for d in batch]


def _best(found: builtins.list[Match], limit: int) -> builtins.list[Match]:
    """Matches best first, each filepath once (image-match may have stored one twice)."""
    found.sort(key=lambda m: (m.distance, m.filepath))
    seen: set[str] = set()
    unique = []
    for match in found:
        if match.filepath not in seen:
            seen.add(match.filepath)
            unique.append(match)
    return unique[:limit]
