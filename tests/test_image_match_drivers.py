"""image-match's database drivers on lookalike: ``SignatureES`` and ``SignatureMongo``.

No Elasticsearch or MongoDB server can be installed where lookalike is developed. So
``SignatureES`` talks, through the official 8.x client, over HTTP, to the loopback
stand-in of ``es_standin.py`` (it keeps documents and answers the driver's queries; it
scores a word query by the number of words shared, where a cluster uses BM25), and
``SignatureMongo`` to ``mongomock``, an in-process stand-in for pymongo. The same tests
run against real servers when ``LOOKALIKE_TEST_ES_URL`` or ``LOOKALIKE_TEST_MONGO_URL``
is set. What the stand-ins cannot show: a real cluster's scoring and refresh, and a real
server's query planner.

The first test is image-match's README, its examples rewritten on local files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from es_standin import DocumentIndex, FakeCluster
from es_standin import cluster as cluster  # the fixture

from lookalike import signature as sig
from lookalike.image_match.goldberg import ImageSignature
from lookalike.image_match.signature_database_base import SignatureDatabaseBase

elasticsearch = pytest.importorskip("elasticsearch", reason="install lookalike[elasticsearch]")
mongomock = pytest.importorskip("mongomock", reason="the dev group has mongomock")

IMAGES = Path(__file__).parent / "golden" / "images"
PICTURES = ["rocket.jpg", "rocket_progressive.jpg", "coffee.jpg", "chelsea.jpg"]


def path(name: str) -> str:
    return str(IMAGES / name)


@pytest.fixture(params=["elasticsearch", "mongodb"])
def driver(request: pytest.FixtureRequest, cluster: FakeCluster) -> Iterator[Any]:
    """A ``SignatureES`` or ``SignatureMongo`` on an empty index or collection of its own."""
    name = f"images-{uuid.uuid4().hex[:8]}"
    if request.param == "elasticsearch":
        from lookalike.image_match.elasticsearch_driver import SignatureES

        url = os.environ.get("LOOKALIKE_TEST_ES_URL")
        if url is None:
            cluster.respond = DocumentIndex(name)
        es = elasticsearch.Elasticsearch(url or cluster.url)
        yield SignatureES(es, index=name)
        if url is not None:
            es.options(ignore_status=404).indices.delete(index=name)
        es.close()
    else:
        from lookalike.image_match.mongodb_driver import SignatureMongo

        url = os.environ.get("LOOKALIKE_TEST_MONGO_URL")
        if url is None:
            client: Any = mongomock.MongoClient()
        else:
            import pymongo

            client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        yield SignatureMongo(client.lookalike_tests[name])
        client.lookalike_tests.drop_collection(name)
        client.close()


def add(driver: Any, name: str, **kwargs: Any) -> None:
    """``add_image`` made searchable at once (image-match's README waited a moment)."""
    if type(driver).__name__ == "SignatureES":
        kwargs["refresh_after"] = True
    driver.add_image(path(name), **kwargs)


def test_image_match_readme_examples_run_with_only_the_imports_changed(driver: Any) -> None:
    # "Image signatures": two copies of one picture are near, another picture is far
    gis = ImageSignature()
    a = gis.generate_signature(path("rocket.jpg"))
    b = gis.generate_signature(path("rocket_progressive.jpg"))
    assert gis.normalized_distance(a, b) == sig.distance(a, b) < 0.4
    assert gis.normalized_distance(a, gis.generate_signature(path("coffee.jpg"))) > 0.45
    # "Storing and searching the signatures"
    for name in PICTURES:
        add(driver, name)
    results = driver.search_image(path("rocket_progressive.jpg"))
    assert [r["path"] for r in results] == [path("rocket_progressive.jpg"), path("rocket.jpg")]
    assert results[0]["dist"] == 0.0 and results[1]["dist"] == sig.distance(a, b)
    assert {"id", "dist", "path", "metadata"} <= set(results[0])
    # searching by bytes, a turned copy with all_orientations, metadata kept
    turned = np.ascontiguousarray(np.rot90(sig_image("coffee.jpg")))
    add(driver, "chelsea_rgba.png", metadata={"source": "scan", "tags": ["cat"]})
    found = driver.search_image(
        (IMAGES / "chelsea.jpg").read_bytes(), bytestream=True, all_orientations=True
    )
    assert found[0]["path"] == path("chelsea.jpg")
    by_path = {r["path"]: r for r in found}
    assert by_path[path("chelsea_rgba.png")]["metadata"] == {"source": "scan", "tags": ["cat"]}
    assert driver.search_image(turned) == []
    assert [r["path"] for r in driver.search_image(turned, all_orientations=True)] == [
        path("coffee.jpg")
    ]


def sig_image(name: str) -> np.ndarray:
    return ImageSignature().pixels(path(name))


def test_documents_keep_image_matchs_layout(driver: Any) -> None:
    add(driver, "rocket.jpg", metadata={"k": 1})
    documents = stored_documents(driver)
    assert len(documents) == 1
    document = documents[0]
    expected = sig.signature(sig_image("rocket.jpg"))
    words = sig.words(expected).tolist()
    assert document["path"] == path("rocket.jpg")
    assert document["signature"] == expected.tolist()
    assert document["metadata"] == {"k": 1}
    assert [document[f"simple_word_{i}"] for i in range(63)] == words
    extra = set(document) - {"path", "signature", "metadata", "_id"}
    extra -= {f"simple_word_{i}" for i in range(63)}
    assert extra == ({"timestamp"} if type(driver).__name__ == "SignatureES" else set())
    if type(driver).__name__ == "SignatureMongo":  # one index per word, as image-match made
        indexes = driver.collection.index_information()
        assert sorted(k for k in indexes if k != "_id_") == sorted(
            f"simple_word_{i}_1" for i in range(63)
        )
        assert indexes["simple_word_7_1"]["key"] == [("simple_word_7", 1)]


def stored_documents(driver: Any) -> list[dict[str, Any]]:
    if type(driver).__name__ == "SignatureES":
        hits = driver.es.search(index=driver.index, query={"match_all": {}}, size=100)
        return [hit["_source"] for hit in hits["hits"]["hits"]]
    return list(driver.collection.find({}))


def test_an_index_written_by_image_match_is_searched_as_it_is(driver: Any) -> None:
    """Documents put in as image-match put them (not through this driver) are found."""
    base = SignatureDatabaseBase()
    from lookalike.image_match.signature_database_base import make_record

    for name in PICTURES:
        record = make_record(name, base.gis, base.k, base.N, img=path(name))
        if type(driver).__name__ == "SignatureES":
            driver.es.index(index=driver.index, document=record, refresh=True)
        else:
            driver.collection.insert_one(record)
    results = driver.search_image(path("rocket.jpg"))
    assert [r["path"] for r in results] == ["rocket.jpg", "rocket_progressive.jpg"]


def test_the_cutoff_and_word_rules_select_the_matches(driver: Any) -> None:
    for name in PICTURES:
        add(driver, name)
    driver.distance_cutoff = 0.01
    assert [r["path"] for r in driver.search_image(path("rocket.jpg"))] == [path("rocket.jpg")]
    if type(driver).__name__ == "SignatureMongo":
        # a word every stored picture shares says little: over maximum_matches, skipped
        record = dict(stored_documents(driver)[0])
        assert len(driver.search_single_record(dict(record))) == 1
        assert driver.search_single_record(dict(record), maximum_matches=0) == []
        assert driver.search_single_record(dict(record), word_limit=0) == []


def test_delete_duplicates_keeps_one_document_per_path(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.image_match import elasticsearch_driver
    from lookalike.image_match.elasticsearch_driver import SignatureES

    monkeypatch.setattr(elasticsearch_driver, "_DUPLICATES_PAGE", 2)  # pages are followed
    index = DocumentIndex("images")
    cluster.respond = index
    ses = SignatureES(elasticsearch.Elasticsearch(cluster.url))
    for _ in range(5):
        ses.add_image(path("rocket.jpg"))
    ses.add_image(path("coffee.jpg"))
    ses.delete_duplicates(path("rocket.jpg"))
    assert sorted(d["path"] for d in index.documents.values()) == [
        path("coffee.jpg"),
        path("rocket.jpg"),
    ]
    assert len(cluster.calls("DELETE", "/images/_doc/doc1")) == 1
    ses.es.close()
