"""The MongoDB store, beyond the contract suite.

No MongoDB server can be installed where lookalike is developed: these tests run on
``mongomock``, an in-process stand-in for pymongo, and on a real server when
``LOOKALIKE_TEST_MONGO_URL`` is set. What mongomock cannot show: a real server's
timeouts, query plans and ``collStats``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymongo", reason="install lookalike[mongodb]")
pytest.importorskip("mongomock", reason="the dev group has mongomock")

import mongomock

from lookalike import signature as sig
from lookalike.backends import open_backend
from lookalike.backends.mongodb import MongoBackend
from lookalike.backends.mongodb.documents import WORDS, parse_url, prefilter
from lookalike.config import Settings
from lookalike.errors import BackendUnavailable, ConfigError
from lookalike.records import Record

from .support import perturb, random_signatures


@pytest.fixture(params=["mongomock", "server"])
def collection(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An empty collection: on mongomock, or on the server ``LOOKALIKE_TEST_MONGO_URL``."""
    if request.param == "mongomock":
        client: Any = mongomock.MongoClient()
    else:
        url = os.environ.get("LOOKALIKE_TEST_MONGO_URL")
        if not url:
            pytest.skip("set LOOKALIKE_TEST_MONGO_URL to test against a MongoDB server")
        import pymongo

        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    name = f"images_{uuid.uuid4().hex[:8]}"
    yield client.lookalike_tests[name]
    for suffix in ("", ".lookalike_distinct", ".lookalike_meta"):
        client.lookalike_tests.drop_collection(name + suffix)
    client.close()


def image_match_document(path: str, signature: np.ndarray, metadata: Any = None) -> dict:
    """A document as image-match's SignatureMongo inserted it."""
    document: dict[str, Any] = {"path": path, "signature": signature.tolist()}
    if metadata:
        document["metadata"] = metadata
    document.update(zip(WORDS, sig.words(signature).tolist(), strict=True))
    return document


def test_urls_name_a_database_and_a_collection() -> None:
    assert parse_url("mongodb://u:p@db.example:27017/photos.images.v2?tls=true") == (
        "mongodb://u:p@db.example:27017/photos?tls=true",
        "photos",
        "images.v2",
    )
    for bad in ("mongodb://host/photos", "mongodb://host/", "mongodb:///photos.images"):
        with pytest.raises(ConfigError, match=r"database\.collection"):
            open_backend(bad)


def test_a_collection_written_by_image_match_is_served_as_it_is(
    collection: Any, rng: np.random.Generator
) -> None:
    sigs = random_signatures(rng, 30)
    for i, s in enumerate(sigs):
        collection.insert_one(image_match_document(f"img/{i}.jpg", s, {"n": i} if i % 2 else None))
    store = MongoBackend(collection)
    assert store.count() == 30
    assert store.list(0, 3) == ["img/0.jpg", "img/1.jpg", "img/2.jpg"]
    record = store.get("img/3.jpg")
    assert record is not None and record.metadata == {"n": 3}
    assert record.signature.tolist() == sigs[3].tolist() and record.created is not None
    query = perturb(rng, sigs[7], 0.05)
    matches = store.search(query[None], limit=3, max_distance=0.6)
    assert matches[0].filepath == "img/7.jpg"
    assert matches[0].distance == sig.distance(query, sigs[7])
    assert [
        m.filepath for m in store.search(query[None], limit=5, max_distance=0.6, where={"n": 7})
    ] == ["img/7.jpg"]


def test_an_add_writes_image_matchs_fields_and_keeps_its_own_apart(
    collection: Any, rng: np.random.Generator
) -> None:
    store = MongoBackend(collection)
    signature = random_signatures(rng, 1)[0]
    store.add(Record("a.jpg", signature, {"k": "v"}))
    document = collection.find_one({"path": "a.jpg"})
    assert document["signature"] == signature.tolist()
    assert [document[w] for w in WORDS] == sig.words(signature).tolist()
    assert document["metadata"] == {"k": "v"}
    assert {k for k in document if k.startswith("lookalike_")} == {
        "lookalike_signature",
        "lookalike_created",
        "lookalike_updated",
    }
    assert bytes(document["lookalike_signature"]) == signature.astype(np.int8).tobytes()
    first_id, created = document["_id"], document["lookalike_created"]
    time.sleep(0.01)
    store.add(Record("a.jpg", signature))  # a replace: same document, created kept
    again = collection.find_one({"path": "a.jpg"})
    assert again["_id"] == first_id and again["lookalike_created"] == created
    assert "metadata" not in again and again["lookalike_updated"] > created
    assert "path_1" in collection.index_information()


def test_image_matchs_documents_and_lookalikes_are_searched_together(
    collection: Any, rng: np.random.Generator
) -> None:
    """A search reads lookalike's signature bytes, and image-match's lists from the
    documents that have no bytes: both kinds answer, at their exact distances."""
    sigs = random_signatures(rng, 6)
    for i in range(3):
        collection.insert_one(image_match_document(f"old/{i}", sigs[i], {"n": i}))
    store = MongoBackend(collection)
    store.add_many(Record(f"new/{i}", sigs[i], {"n": i}) for i in range(3, 6))
    collection.insert_one(image_match_document("old/6", sigs[0], {"n": 6}))
    for i in range(6):
        found = store.search(sigs[i][None], limit=1, max_distance=0.3)
        assert [(m.filepath, m.distance) for m in found] == [
            (f"{'old' if i < 3 else 'new'}/{i}", 0.0)
        ]
    assert [
        m.filepath for m in store.search(sigs[:6], limit=10, max_distance=0.3, where={"n": 4})
    ] == ["new/4"]
    vectors = store.vectors("signature")  # in insertion order, whichever kind
    assert vectors.filepaths == ["old/0", "old/1", "old/2", "new/3", "new/4", "new/5", "old/6"]
    for path, row in zip(vectors.filepaths, vectors.rows, strict=True):
        assert row.tolist() == sigs[int(path[-1]) % 6].tolist()


def test_several_documents_of_one_path_become_one_on_add(
    collection: Any, rng: np.random.Generator
) -> None:
    """image-match never deduplicated paths."""
    a, b = random_signatures(rng, 2)
    for s in (a, b, b):
        collection.insert_one(image_match_document("dup.jpg", s))
    store = MongoBackend(collection)
    found = store.search(b[None], limit=10, max_distance=0.9)
    assert [m.filepath for m in found] == ["dup.jpg"]  # each filepath once
    store.add(Record("dup.jpg", b))
    assert collection.count_documents({"path": "dup.jpg"}) == 1
    assert store.delete("dup.jpg") and store.count() == 0


INJECTIONS = [
    {"$where": "sleep(100) || true"},
    {"$gt": ""},
    {"a.b": 1},
    {"$ne": 1},
    {"n": {"$gt": 0}},
]


@pytest.mark.parametrize("where", INJECTIONS[:4], ids=["$where", "$gt", "dotted", "$ne"])
def test_filters_are_literal(collection: Any, rng: np.random.Generator, where: dict) -> None:
    """Operator and dotted keys are matched as the literal keys they are."""
    sigs = random_signatures(rng, 3)
    store = MongoBackend(collection)
    store.add(Record("plain.jpg", sigs[0], {"a": {"b": 1}, "n": 5}))
    store.add(Record("literal.jpg", sigs[1], dict(where)))  # a key that looks like one
    found = store.search(sigs[:2], limit=10, max_distance=1.0, where=where)
    assert [m.filepath for m in found] == ["literal.jpg"]
    assert store.get("literal.jpg").metadata == where  # stored by value, as text
    assert prefilter(where) == {}  # never put in a query


def test_an_operator_as_a_filter_value_is_refused(
    collection: Any, rng: np.random.Generator
) -> None:
    store = MongoBackend(collection)
    store.add(Record("a.jpg", random_signatures(rng, 1)[0], {"n": 5}))
    with pytest.raises(Exception, match="string, number or boolean"):
        store.search(random_signatures(rng, 1), limit=5, max_distance=1.0, where=INJECTIONS[4])
    assert prefilter({"n": 5}) == {
        "$or": [{"metadata.n": {"$eq": 5}}, {"lookalike_metadata": {"$exists": True}}]
    }


def test_an_unreachable_server_is_backend_unavailable_without_the_password() -> None:
    url = "mongodb://user:secret@127.0.0.1:9/photos.images?serverSelectionTimeoutMS=300"
    with pytest.raises(BackendUnavailable) as raised:
        open_backend(url, Settings())
    assert "secret" not in str(raised.value) and "photos.images" in str(raised.value)
