"""The Elasticsearch store, tested without an Elasticsearch server.

No server can be installed on the machines this project is built on. The contract suite
(``test_contract.py``) runs against a real cluster when ``LOOKALIKE_TEST_ES_URL`` is set.
Here, everything else runs for real: the request bodies are compared with bodies written
from Elasticsearch's documentation, and the backend talks HTTP, through the official
client, to a small server on 127.0.0.1 that answers with documentation-shaped responses
(or fails on purpose). What that does NOT prove is said in each test: mostly, that a real
cluster interprets the bodies as we expect (its scoring, refresh and mapping rules).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("elasticsearch", reason="install lookalike[elasticsearch]")

from es_standin import Answer, FakeCluster, Request, search_response
from es_standin import cluster as cluster  # the fixture

from lookalike import signature as sig
from lookalike.backends import open_backend
from lookalike.backends.elasticsearch import ElasticsearchBackend
from lookalike.backends.elasticsearch.queries import (
    DISTINCT_PAGE,
    distinct_delete_query,
    distinct_document,
    distinct_id,
    distinct_index,
    distinct_mapping,
    distinct_page_body,
    document_id,
    embedding_field_problem,
    embedding_knn_body,
    embedding_of,
    filter_clauses,
    is_legacy,
    knn_body,
    mapping,
    normalise_url,
    preview_field_problem,
    word_body,
)
from lookalike.config import Settings
from lookalike.errors import BackendUnavailable, ConfigError, NotFound
from lookalike.records import Preview, Record
from lookalike.signature import ORIENTATIONS
from lookalike.vectors import EMBEDDING_DIMENSION

from .support import exact_cosine_distance, near, perturb, random_signatures, unit_vectors

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "signatures.json").read_text())


def lookalike_index(then: Callable[[Request], Answer]) -> Callable[[Request], Answer]:
    """An existing index with lookalike's mapping; other requests go to ``then``."""

    def respond(request: Request) -> Answer:
        if request.method == "HEAD" and request.path == "/images":
            return 200, None
        if request.method == "GET" and request.path == "/images/_mapping":
            return 200, {"images": {"mappings": mapping()}}
        return then(request)

    return respond


def legacy_index(then: Callable[[Request], Answer]) -> Callable[[Request], Answer]:
    """An index of Match's or image-match's (dynamic mapping) that answers searches with
    no hits and takes bulk writes; other requests go to ``then``."""

    def respond(request: Request) -> Answer:
        if request.method == "HEAD" and request.path == "/images":
            return 200, None
        if request.path == "/images/_mapping" and request.method == "GET":
            return 200, {"images": {"mappings": {"properties": {"path": {"type": "text"}}}}}
        if request.path == "/images/_search":
            return 200, search_response([])
        if request.path == "/_bulk":
            return 200, {"took": 1, "errors": False, "items": [{"index": {"status": 201}}]}
        return then(request)

    return respond


def bulk_into(stored: dict[str, dict[str, Any]], request: Request) -> Answer:
    """A _bulk of upserts kept in ``stored`` by id, answered as the bulk page shows."""
    lines = request.ndjson()
    for action, body in zip(lines[0::2], lines[1::2], strict=True):
        stored[action["update"]["_id"]] = body["upsert"]
    items = [{"update": {"status": 201}}] * len(lines[0::2])
    return 200, {"took": 1, "errors": False, "items": items}


def store(cluster: FakeCluster, **options: Any) -> ElasticsearchBackend:
    return ElasticsearchBackend(cluster.url, **{"retries": 0, **options})


def hit(path: str, signature: np.ndarray, metadata: Any = None, score: float = 1.0) -> dict:
    source = {"path": path, "signature": signature.tolist()}
    if metadata is not None:
        source["metadata"] = metadata
    return {"_index": "images", "_id": document_id(path), "_score": score, "_source": source}


def embedding_hit(path: str, vector: np.ndarray, metadata: Any = None) -> dict:
    """A kNN hit as the kNN search page shows it, with the _source lookalike asks for and
    the _score a cosine field gives: (1 + cosine) / 2, here of the vector's own values."""
    source: dict[str, Any] = {"path": path, "embedding": vector.tolist()}
    if metadata is not None:
        source["metadata"] = metadata
    return {"_index": "images", "_id": document_id(path), "_score": 1.0, "_source": source}


def unit_rows(queries: np.ndarray) -> np.ndarray:
    """Query rows scaled to unit length in float32, as a search takes them."""
    return (queries / np.linalg.norm(queries, axis=-1, keepdims=True)).astype(np.float32)


def cosine_distance(query: np.ndarray, stored: np.ndarray) -> float:
    """1 − cosine of a query row and a stored vector: the distance the Backend protocol
    defines, written out in ``support`` rather than taken from lookalike."""
    return exact_cosine_distance(query, stored)


# -- request bodies -------------------------------------------------------------------------


def test_match_urls_and_the_setting_that_selects_elasticsearch() -> None:
    """Does not prove a cluster accepts the URL: only how lookalike reads it."""
    assert normalise_url("localhost:9200") == "http://localhost:9200"
    assert normalise_url(" https://es.example:9243 ") == "https://es.example:9243"
    settings = Settings.from_env({"ELASTICSEARCH_URL": "es:9200", "ELASTICSEARCH_INDEX": "pix"})
    assert settings.store == "http://es:9200"
    backend = open_backend(settings.store, settings)  # the client connects lazily
    assert isinstance(backend, ElasticsearchBackend) and backend.index == "pix"
    backend.close()
    assert Settings.from_env({}).store == Settings().backend


def test_document_ids_derive_from_the_filepath_alone() -> None:
    """Does not prove Elasticsearch's id limits; only that ids are stable, distinct, short."""
    long_path = "dir/" * 500 + "image.jpg"
    ids = {document_id(p) for p in ("a.jpg", "A.jpg", "a.jpg ", long_path, "日本/写真.png")}
    assert len(ids) == 5
    assert document_id("a.jpg") == document_id("a.jpg")
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in ids)


def test_mapping_is_the_documented_one() -> None:
    """Written from the dense_vector, flattened and mapping-parameter pages; does not prove a
    given Elasticsearch version accepts it (byte vectors need 8.6+)."""
    expected_vector = {
        "type": "dense_vector",
        "element_type": "byte",
        "dims": 648,
        "index": True,
        "similarity": "l2_norm",
        "index_options": {"type": "hnsw", "m": 16, "ef_construction": 100},
    }
    m = mapping()
    assert m["properties"]["vector"] == expected_vector
    assert m["properties"]["metadata"] == {"type": "flattened"}
    assert m["properties"]["path"] == {"type": "keyword"}
    assert m["properties"]["signature"] == {"type": "byte", "index": False, "doc_values": False}
    assert {f"simple_word_{i}" for i in range(63)} <= set(m["properties"])
    assert all(m["properties"][f"simple_word_{i}"] == {"type": "long"} for i in range(63))
    assert m["dynamic"] == "strict" and m["_source"] == {"excludes": ["vector"]}
    # the object page: enabled false keeps a field in _source, neither parsed nor indexed
    assert m["properties"]["preview"] == {"type": "object", "enabled": False}
    assert not is_legacy(m)


def test_legacy_mappings_are_recognised() -> None:
    """An image-match index has no explicit mapping: Elasticsearch's dynamic mapping gives
    the shape below (text + keyword for strings, long for integers). Does not prove every
    historical variant (e.g. Match's own index settings) looks exactly like it."""
    dynamic = {
        "properties": {
            "path": {
                "type": "text",
                "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
            },
            "signature": {"type": "long"},
            "simple_word_0": {"type": "long"},
            "timestamp": {"type": "date"},
        }
    }
    assert is_legacy(dynamic)
    assert is_legacy({})


@pytest.mark.parametrize("name", sorted(GOLDEN["images"])[:6])
def test_word_query_uses_image_matchs_own_words(name: str) -> None:
    """The terms are image-match's simple words (golden vectors made by image-match 1.1.2)
    in its should-of-terms query. Does not prove Elasticsearch scores it as image-match saw."""
    golden = GOLDEN["images"][name]
    row = np.array(golden["signature"], dtype=np.int8)
    body = word_body(row, 500, [])
    should = body["query"]["bool"]["should"]
    assert should == [{"term": {f"simple_word_{i}": w}} for i, w in enumerate(golden["words"])]
    assert body["size"] == 500 and body["query"]["bool"]["minimum_should_match"] == 1
    assert body["_source"] == ["path", "signature", "metadata"]


def test_knn_query_is_the_documented_shape(rng: np.random.Generator) -> None:
    """From the kNN search page: knn.field/query_vector/k/num_candidates/filter. Does not
    prove HNSW's recall; bench/candidates.py measures an emulation of it."""
    row = random_signatures(rng, 1)[0]
    filters = [{"terms": {"metadata.shop": ["north"]}}]
    body = knn_body(row, 100, 200, filters)
    assert body == {
        "knn": {
            "field": "vector",
            "query_vector": row.tolist(),
            "k": 100,
            "num_candidates": 200,
            "filter": filters,
        },
        "size": 100,
        "_source": ["path", "signature", "metadata"],
    }


def test_metadata_filters_cover_each_json_scalar() -> None:
    """Flattened fields keep leaf values as keywords; does not prove how a cluster spells
    a float it indexed (hence the exact filter applied again to the results)."""
    clauses = filter_clauses({"shop": "north", "n": 1, "x": 1.5, "ok": True}, legacy=False)
    assert clauses == [
        {"terms": {"metadata.shop": ["north"]}},
        {"terms": {"metadata.n": ["1", "1.0"]}},
        {"terms": {"metadata.x": ["1.5"]}},
        {"terms": {"metadata.ok": ["true"]}},
    ]
    assert filter_clauses({"shop": "north"}, legacy=True) == []
    assert filter_clauses(None, legacy=False) == []


# -- talking to a server ---------------------------------------------------------------------


def test_a_search_is_one_msearch_and_is_reranked_exactly(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """Eight bodies in one _msearch, candidates re-ranked by the exact distance, cutoff,
    limit, ties by filepath, the metadata filter applied exactly. Does not prove which
    candidates a real cluster returns."""
    original = random_signatures(rng, 1)[0]
    near, far = perturb(rng, original, 0.1), random_signatures(rng, 1)[0]
    queries = np.stack([original] + [perturb(rng, original, 0.5) for _ in range(7)])
    candidates = [
        hit("near", near, {"shop": "north"}),
        hit("far", far, {"shop": "north"}),
        hit("same", original, {"shop": "north", "n": 1}),
        hit("other-shop", original, {"shop": "south"}),
        hit("string-one", original, {"shop": "north", "n": "1"}),
    ]

    def respond(request: Request) -> Answer:
        if request.path == "/_msearch":
            return 200, {"took": 5, "responses": [search_response(candidates)] * 8}
        return 404, {"error": "unexpected"}

    cluster.respond = lookalike_index(respond)
    backend = store(cluster, stage="words")
    found = backend.search(queries, limit=10, max_distance=0.45, where={"shop": "north"})
    [msearch] = cluster.calls("POST", "/_msearch")
    lines = msearch.ndjson()
    assert lines[0::2] == [{"index": "images"}] * 8
    assert lines[1::2] == [
        word_body(row, 1000, [{"terms": {"metadata.shop": ["north"]}}]) for row in queries
    ]
    assert [m.filepath for m in found] == ["same", "string-one", "near"]
    assert found[0].distance == 0.0 and found[0].orientation == "identity"
    assert found[2].distance == sig.distance(near, original)
    only_one = backend.search(queries, limit=10, max_distance=0.45, where={"n": 1})
    assert [m.filepath for m in only_one] == ["same"]  # "1" is not 1


def test_knn_stage_sends_knn_bodies(cluster: FakeCluster, rng: np.random.Generator) -> None:
    """Does not prove a cluster's kNN answers; only what is asked."""
    cluster.respond = lookalike_index(
        lambda r: (200, {"took": 1, "responses": [search_response([])] * 8})
    )
    queries = random_signatures(rng, 8)
    assert store(cluster, knn=50).search(queries, limit=5, max_distance=0.45) == []
    lines = cluster.calls("POST", "/_msearch")[0].ndjson()
    assert lines[1::2] == [knn_body(row, 50, 100, []) for row in queries]


def test_an_add_is_a_scripted_upsert_keyed_by_the_filepath(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """The bulk update keeps the first insert time on replace and refreshes before it
    returns. Does not run the painless script: a real cluster does."""
    signature = random_signatures(rng, 1)[0]

    def respond(request: Request) -> Answer:
        if request.path == "/_bulk":
            return 200, {
                "took": 4,
                "errors": False,
                "items": [
                    {"update": {"_index": "images", "_id": document_id("a.jpg"), "status": 201}}
                ],
            }
        return 404, {"error": "unexpected"}

    cluster.respond = lookalike_index(respond)
    store(cluster).add(Record("a.jpg", signature, {"shop": "north"}))
    [bulk] = cluster.calls("PUT", "/_bulk") + cluster.calls("POST", "/_bulk")
    assert bulk.query["refresh"] == ["wait_for"]
    action, body = bulk.ndjson()
    assert action == {
        "update": {"_index": "images", "_id": document_id("a.jpg"), "retry_on_conflict": 3}
    }
    document = body["upsert"]
    assert document["path"] == "a.jpg" and document["metadata"] == {"shop": "north"}
    assert document["signature"] == document["vector"] == signature.tolist()
    assert [document[f"simple_word_{i}"] for i in range(63)] == sig.words(signature).tolist()
    assert body["script"]["params"]["doc"] == document
    assert "ctx._source.added = added" in body["script"]["source"]


def test_a_refused_bulk_item_is_reported(cluster: FakeCluster, rng: np.random.Generator) -> None:
    """Does not prove which items a real cluster refuses."""

    def respond(request: Request) -> Answer:
        if request.path == "/_bulk":
            error = {"type": "mapper_parsing_exception", "reason": "failed to parse [metadata]"}
            return 200, {
                "took": 4,
                "errors": True,
                "items": [
                    {"update": {"_index": "images", "_id": "x", "status": 400, "error": error}}
                ],
            }
        return 404, {"error": "unexpected"}

    cluster.respond = lookalike_index(respond)
    with pytest.raises(BackendUnavailable, match=r"refused 1 documents: failed to parse"):
        store(cluster).add(Record("a.jpg", random_signatures(rng, 1)[0]))


def test_in_a_legacy_index_only_the_exact_path_is_deleted(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """image-match matched paths with a text query and deleted what came back; here the
    phrase query only finds candidates and the exact path decides. Does not prove a
    cluster's text analysis."""
    signature = random_signatures(rng, 1)[0]

    def respond(request: Request) -> Answer:
        if request.method == "HEAD" and request.path == "/images":
            return 200, None
        if request.path == "/images/_mapping":
            return 200, {"images": {"mappings": {"properties": {"path": {"type": "text"}}}}}
        if request.path == "/images/_search":
            twins = [
                dict(hit(p, signature), _id=f"random-{i}")
                for i, p in enumerate(["a/b.jpg", "a/b.jpg.bak", "A/B.JPG", "a/b.jpg"])
            ]
            return 200, search_response(twins)
        if request.method == "DELETE":
            return 200, {"result": "deleted"}
        return 404, {"error": "unexpected"}

    cluster.respond = respond
    backend = store(cluster)  # asks for kNN, but a legacy index has no vectors
    assert backend.delete("a/b.jpg")
    assert not backend._uses_knn()
    deleted = [r.path for r in cluster.requests if r.method == "DELETE"]
    assert deleted == ["/images/_doc/random-0", "/images/_doc/random-3"]
    query = cluster.calls("POST", "/images/_search")[0].json()["query"]
    assert query == {"match_phrase": {"path": "a/b.jpg"}}


def test_list_pages_through_a_point_in_time(cluster: FakeCluster) -> None:
    """Sorted by insertion time then path, with search_after; does not prove a cluster's
    point-in-time semantics."""
    paths = [f"p{i}" for i in range(7)]

    def respond(request: Request) -> Answer:
        if request.path == "/images/_pit":
            return 200, {"id": "pit-1"}
        if request.path == "/_pit":
            return 200, {"succeeded": True, "num_freed": 1}
        if request.path == "/_search":
            body = request.json()
            start = body.get("search_after", [-1, ""])[0] + 1
            page = paths[start : start + body["size"]]
            return 200, search_response(
                [
                    {"_id": p, "_source": {"path": p}, "sort": [start + i, p]}
                    for i, p in enumerate(page)
                ]
            )
        return 404, {"error": "unexpected"}

    cluster.respond = lookalike_index(respond)
    assert store(cluster).list(offset=2, limit=3) == ["p2", "p3", "p4"]
    first = cluster.calls("POST", "/_search")[0].json()
    assert first["sort"] == [{"added": "asc"}, {"path": "asc"}]
    assert first["pit"]["id"] == "pit-1"
    assert len(cluster.calls("DELETE", "/_pit")) == 1
    assert store(cluster).list(offset=5, limit=10) == ["p5", "p6"]


# -- embeddings ------------------------------------------------------------------------------

EMBEDDING_FIELD = {  # written from the dense_vector page: "Automatically quantize vectors"
    "type": "dense_vector",
    "element_type": "float",
    "dims": 1280,
    "index": True,
    "similarity": "cosine",
    "index_options": {"type": "int8_hnsw"},
}


def test_the_embedding_field_is_the_documented_quantized_one() -> None:
    """The field as the dense_vector page writes a byte-quantized index; it stays in _source
    (the signature's vector is excluded, the embedding must come back for the re-rank).
    Does not prove a cluster accepts it: int8_hnsw needs Elasticsearch 8.12 or later."""
    m = mapping()
    assert m["properties"]["embedding"] == EMBEDDING_FIELD
    assert "embedding" not in m["_source"]["excludes"]
    assert embedding_field_problem(m) is None
    # what a cluster reports back, with the options it filled in, is still the field
    reported = {**EMBEDDING_FIELD, "index_options": {"type": "int8_hnsw", "m": 16}}
    assert embedding_field_problem({"properties": {"embedding": reported}}) is None
    other = {"type": "dense_vector", "dims": 768, "index": True, "similarity": "cosine"}
    assert "1280" in str(embedding_field_problem({"properties": {"embedding": other}}))


def test_embedding_knn_body_is_the_documented_shape(rng: np.random.Generator) -> None:
    """From the kNN search page (knn.field/query_vector/k/num_candidates/filter; num_candidates
    at most 10,000). Does not prove a cluster's recall over int8-quantized vectors."""
    row = unit_vectors(rng, 1)[0]
    filters = [{"terms": {"metadata.shop": ["north"]}}]
    assert embedding_knn_body(row, 100, filters) == {
        "knn": {
            "field": "embedding",
            "query_vector": row.tolist(),
            "k": 100,
            "num_candidates": 200,
            "filter": filters,
        },
        "size": 100,
        "_source": ["path", "metadata", "embedding"],
    }
    capped = embedding_knn_body(row, 8000, [])
    assert (capped["knn"]["k"], capped["knn"]["num_candidates"]) == (8000, 10_000)
    assert "filter" not in capped["knn"]


def test_the_embedding_setting_reaches_the_store() -> None:
    """Does not talk to a cluster: only how the setting is read and checked."""
    settings = Settings.from_env(
        {"ELASTICSEARCH_URL": "es:9200", "LOOKALIKE_ELASTICSEARCH_EMBEDDING_KNN": "40"}
    )
    backend = open_backend(settings.store, settings)
    assert isinstance(backend, ElasticsearchBackend) and backend.embedding_knn == 40
    backend.close()
    assert Settings().elasticsearch_embedding_knn == 100
    for bad in ("0", "10001"):
        with pytest.raises(ConfigError):
            Settings.from_env({"LOOKALIKE_ELASTICSEARCH_EMBEDDING_KNN": bad})


def old_lookalike_index(then: Callable[[Request], Answer]) -> Callable[[Request], Answer]:
    """A lookalike index made before embeddings: its mapping has no ``embedding`` field."""
    before = mapping()
    del before["properties"]["embedding"]

    def respond(request: Request) -> Answer:
        if request.method == "HEAD" and request.path == "/images":
            return 200, None
        if request.method == "GET" and request.path == "/images/_mapping":
            return 200, {"images": {"mappings": before}}
        return then(request)

    return respond


def test_an_index_without_the_field_gets_it_when_opened(cluster: FakeCluster) -> None:
    """One put_mapping adding just the field (the dense_vector page: a field can be added to
    an existing mapping), once per process; an index that has it gets none. Does not prove
    a cluster merges it into the strict mapping as documented."""
    cluster.respond = old_lookalike_index(
        lambda r: (200, {"acknowledged": True} if r.path == "/images/_mapping" else {"count": 3})
    )
    backend = store(cluster)
    facts = backend.stats()  # opens the index
    assert backend.stats() == facts
    assert facts["embeddings"] == 3 and facts["layout"] == "lookalike"
    assert facts["embedding_index"].startswith("int8_hnsw kNN candidates (k=100,")
    [put] = cluster.calls("PUT", "/images/_mapping")
    assert put.json() == {"properties": {"embedding": EMBEDDING_FIELD}}
    [count_embeddings, _] = [r for r in cluster.requests if r.path == "/images/_count" and r.body]
    assert count_embeddings.json() == {"query": {"exists": {"field": "embedding"}}}

    cluster.requests.clear()
    cluster.respond = lookalike_index(lambda r: (200, {"count": 3}))
    assert store(cluster).stats()["layout"] == "lookalike"
    assert cluster.calls("PUT", "/images/_mapping") == []


def test_a_refused_field_leaves_signatures_working(
    cluster: FakeCluster, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    """A cluster older than 8.12 refuses int8_hnsw (400, error shaped as the docs show):
    adds keep their signatures, embedding searches find nothing, one warning says why.
    Does not prove the exact wording an old cluster uses."""
    refusal = {
        "error": {
            "type": "mapper_parsing_exception",
            "reason": "Unknown vector index options type [int8_hnsw] for field [embedding]",
        },
        "status": 400,
    }

    def respond(request: Request) -> Answer:
        if request.path == "/images/_mapping":
            return 400, refusal
        if request.path == "/images/_count":
            return 200, {"count": 2}
        if request.path == "/_bulk":
            return 200, {"took": 1, "errors": False, "items": [{"update": {"status": 200}}]}
        return 404, {"error": "unexpected"}

    cluster.respond = old_lookalike_index(respond)
    backend = store(cluster)
    vector = unit_vectors(rng, 1)[0]
    with caplog.at_level(logging.WARNING, logger="lookalike.backends.elasticsearch"):
        backend.add(Record("a.jpg", random_signatures(rng, 1)[0], embedding=vector))
        backend.add(Record("b.jpg", random_signatures(rng, 1)[0], embedding=vector))
        assert backend.search_embedding(vector, limit=5, max_distance=0.5) == []
    [warning] = caplog.records
    assert "int8_hnsw" in warning.getMessage() and "only signatures" in warning.getMessage()
    documents = [b.ndjson()[1]["upsert"] for b in cluster.calls("PUT", "/_bulk")]
    assert len(documents) == 2 and not any("embedding" in d for d in documents)
    assert cluster.calls("POST", "/_msearch") == []
    assert backend.stats()["embedding_index"].startswith("none: Elasticsearch refused")


def test_an_embedding_field_of_another_shape_is_left_alone(
    cluster: FakeCluster, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    """An index whose ``embedding`` is some other vector (768 dims here) is not changed and
    not searched for embeddings; a warning says why. Does not prove how a cluster reports
    such a field beyond the documented mapping shape."""
    theirs = mapping()
    theirs["properties"]["embedding"] = {"type": "dense_vector", "dims": 768, "index": True}

    def respond(request: Request) -> Answer:
        if request.method == "HEAD":
            return 200, None
        if request.method == "GET" and request.path == "/images/_mapping":
            return 200, {"images": {"mappings": theirs}}
        return 404, {"error": "unexpected"}

    cluster.respond = respond
    with caplog.at_level(logging.WARNING, logger="lookalike.backends.elasticsearch"):
        found = store(cluster).search_embedding(unit_vectors(rng, 1), limit=5, max_distance=1)
    assert found == []
    assert {(r.method, r.path) for r in cluster.requests} == {
        ("HEAD", "/images"),
        ("GET", "/images/_mapping"),
    }
    [warning] = caplog.records
    assert "1280 dimensions" in warning.getMessage()


def test_an_add_stores_the_embedding_and_get_returns_it(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """The embedding goes in the document as float16-exact floats, nothing when there is
    none; get names the field in _source_includes (9.2+ leaves vectors out otherwise) and
    reads a documented _doc response back. Does not prove a 9.2 cluster honours the
    include, nor how a real cluster prints floats (values a float32 ulp off are tested
    below)."""
    vector = unit_vectors(rng, 1)[0]
    signature = random_signatures(rng, 1)[0]
    stored: dict[str, dict[str, Any]] = {}

    def respond(request: Request) -> Answer:
        if request.path == "/_bulk":
            return bulk_into(stored, request)
        if request.path.startswith("/images/_doc/"):
            doc_id = request.path.rsplit("/", 1)[1]
            wanted = request.query["_source_includes"][0].split(",")
            source = {k: v for k, v in stored[doc_id].items() if k in wanted}
            return 200, {"_index": "images", "_id": doc_id, "_version": 1, "_seq_no": 0,
                         "_primary_term": 1, "found": True, "_source": source}  # fmt: skip
        return 404, {"error": "unexpected"}

    cluster.respond = lookalike_index(respond)
    backend = store(cluster)
    backend.add_many([Record("with", signature, embedding=vector), Record("without", signature)])
    assert stored[document_id("with")]["embedding"] == vector.tolist()
    assert np.array_equal(np.float16(stored[document_id("with")]["embedding"]), vector)
    assert "embedding" not in stored[document_id("without")]
    got = backend.get("with")
    assert got is not None and got.embedding is not None and got.embedding.dtype == np.float32
    np.testing.assert_array_equal(got.embedding, vector)
    without = backend.get("without")
    assert without is not None and without.embedding is None
    request = cluster.calls("GET", f"/images/_doc/{document_id('with')}")[0]
    assert request.query["_source_includes"] == ["path,signature,metadata,embedding"]


def test_embeddings_read_back_a_float32_ulp_off_are_the_stored_ones(
    rng: np.random.Generator,
) -> None:
    """A 9.2+ cluster rebuilds vectors it keeps normalised; products of float32 may land an
    ulp away. Rounding to float16 again recovers the stored values. Does not prove how far
    off a real cluster's values are (an ulp is assumed)."""
    vector = unit_vectors(rng, 1)[0]
    off = np.nextafter(vector, np.float32(2.0))
    assert not np.array_equal(off, vector)
    np.testing.assert_array_equal(embedding_of({"embedding": off.tolist()}), vector)
    assert embedding_of({"path": "x"}) is None


def test_an_embedding_search_is_one_msearch_of_knn_per_orientation(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """Eight knn bodies (one per orientation) in one _msearch, with the metadata filter,
    k and num_candidates from the setting and only the re-rank's _source. Does not prove
    which candidates a real cluster returns."""
    cluster.respond = lookalike_index(
        lambda r: (200, {"took": 1, "responses": [search_response([])] * 8})
    )
    queries = unit_vectors(rng, 8)
    found = store(cluster, embedding_knn=30).search_embedding(
        queries, limit=10, max_distance=0.25, where={"shop": "north"}
    )
    assert found == []
    [msearch] = cluster.calls("POST", "/_msearch")
    lines = msearch.ndjson()
    assert lines[0::2] == [{"index": "images"}] * 8
    sent = [body["knn"].pop("query_vector") for body in lines[1::2]]
    np.testing.assert_allclose(sent, unit_rows(queries), rtol=1e-6)
    assert (
        lines[1::2]
        == [
            {
                "knn": {
                    "field": "embedding",
                    "k": 30,
                    "num_candidates": 60,
                    "filter": [{"terms": {"metadata.shop": ["north"]}}],
                },
                "size": 30,
                "_source": ["path", "metadata", "embedding"],
            }
        ]
        * 8
    )


def test_embedding_candidates_are_reranked_by_the_exact_distance(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """Two orientations' responses as the kNN page shows them, in Elasticsearch's _score
    order, which is deliberately wrong here (quantized scores may be): the union is ranked
    by the exact cosine distance of the stored floats, cut at max_distance, ties by
    filepath, limited; each match says which orientation found it best, and the metadata
    filter is applied exactly. Does not prove what a real cluster's scores or recall are."""
    queries = unit_vectors(rng, 2)
    vectors = {
        "nearest": near(rng, queries[0], 0.99),
        "near": near(rng, queries[0], 0.9),
        "twin-b": near(rng, queries[0], 0.85),
        "turned": near(rng, queries[1], 0.95),  # found by the second orientation only
        "beyond": near(rng, queries[0], 0.6),  # distance ~0.4: beyond the 0.25 cutoff
        "other-shop": near(rng, queries[0], 0.99),
        "string-one": near(rng, queries[0], 0.97),
    }
    vectors["twin-a"] = vectors["twin-b"]
    metadata = {path: {"shop": "north", "n": 1} for path in vectors}
    metadata["other-shop"] = {"shop": "south", "n": 1}
    metadata["string-one"] = {"shop": "north", "n": "1"}
    first = ["beyond", "twin-b", "near", "twin-a", "nearest", "other-shop", "string-one"]
    second = ["turned", "beyond", "nearest"]  # a candidate of both orientations too

    def respond(request: Request) -> Answer:
        if request.path == "/_msearch":
            answers = [
                search_response([embedding_hit(p, vectors[p], metadata[p]) for p in paths])
                for paths in (first, second)
            ]
            return 200, {"took": 4, "responses": answers}
        return 404, {"error": "unexpected"}

    cluster.respond = lookalike_index(respond)
    backend = store(cluster)
    where = {"shop": "north", "n": 1}
    found = backend.search_embedding(queries, limit=10, max_distance=0.25, where=where)
    truth = {
        p: min(cosine_distance(q, v) for q in queries)
        for p, v in vectors.items()
        if p not in ("other-shop", "string-one")
    }
    expected = sorted((p for p in truth if truth[p] < 0.25), key=lambda p: (truth[p], p))
    assert "beyond" not in expected and expected[-2:] == ["twin-a", "twin-b"]
    assert [m.filepath for m in found] == expected
    for m in found:
        assert m.distance == truth[m.filepath]
        assert m.method == "embedding" and m.metadata == metadata[m.filepath]
        expected_row = 1 if m.filepath == "turned" else 0
        assert m.orientation == ORIENTATIONS[expected_row]
    limited = backend.search_embedding(queries, limit=2, max_distance=0.25, where=where)
    assert [m.filepath for m in limited] == expected[:2]


def test_hits_without_their_embedding_are_an_error_not_an_empty_answer(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """If a cluster left the vectors out of _source (9.2+ does unless the field is named,
    as lookalike names it), the re-rank cannot run: say so rather than find nothing. Does
    not prove 9.2 returns them when named."""
    vector = unit_vectors(rng, 1)[0]
    bare = {"_index": "images", "_id": "x", "_score": 0.9, "_source": {"path": "a.jpg"}}
    cluster.respond = lookalike_index(
        lambda r: (200, {"took": 1, "responses": [search_response([bare])]})
    )
    with pytest.raises(BackendUnavailable, match="without their 'embedding'"):
        store(cluster).search_embedding(vector, limit=5, max_distance=0.5)


def test_a_legacy_index_holds_no_embeddings(
    cluster: FakeCluster, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    """Match's and image-match's indices: an embedding search finds nothing without asking
    the cluster, adds keep their signatures and drop the embedding, one warning points to
    `lookalike migrate`, and the mapping is left alone. Does not prove anything about
    a cluster's dynamic mapping (lookalike never sends it the field)."""
    vector = unit_vectors(rng, 1)[0]

    cluster.respond = legacy_index(
        lambda r: (200, {"count": 1}) if r.path == "/images/_count" else (404, {"error": "?"})
    )
    backend = store(cluster)
    with caplog.at_level(logging.WARNING, logger="lookalike.backends.elasticsearch"):
        assert backend.search_embedding(vector, limit=5, max_distance=2.0) == []
        backend.add(Record("a.jpg", random_signatures(rng, 1)[0], embedding=vector))
    [warning] = caplog.records
    assert "lookalike migrate" in warning.getMessage()
    [bulk] = cluster.calls("PUT", "/_bulk")
    document = bulk.ndjson()[1]["upsert"]
    assert document["path"] == "a.jpg" and "embedding" not in document
    assert cluster.calls("POST", "/_msearch") == []
    assert cluster.calls("PUT", "/images/_mapping") == []
    assert backend.stats()["embeddings"] == 0
    assert [r.body for r in cluster.requests if r.path == "/images/_count"] == [b""]
    with pytest.raises(ValueError, match="embedding"):  # still checked, though not kept
        backend.add(Record("b.jpg", random_signatures(rng, 1)[0], embedding=2 * vector))


# -- previews: sizes and thumbnails, read apart from searches ------------------------------

THUMBNAIL = b"\xff\xd8\xff\xe0 a jpeg's bytes \x00\x01"


def previews_cluster(stored: dict[str, dict[str, Any]]) -> Callable[[Request], Answer]:
    """A lookalike index that keeps bulk upserts in ``stored`` (by id) and answers _mget
    and _search as their pages show, honouring _source includes."""

    def included(source: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in wanted:
            top, _, sub = name.partition(".")
            if top in source:
                if sub:
                    if sub in source[top]:
                        out.setdefault(top, {})[sub] = source[top][sub]
                else:
                    out[top] = source[top]
        return out

    def respond(request: Request) -> Answer:
        if request.path == "/_bulk":
            return bulk_into(stored, request)
        if request.path == "/images/_mget":
            wanted = request.query["_source_includes"][0].split(",")
            docs = [
                {"_index": "images", "_id": i, "_version": 1, "found": True,
                 "_source": included(stored[i], wanted)}
                if i in stored
                else {"_index": "images", "_id": i, "found": False}
                for i in request.json()["ids"]
            ]  # fmt: skip
            return 200, {"docs": docs}
        if request.path == "/_msearch":
            searches = request.ndjson()[1::2]
            hits = [
                {"_index": "images", "_id": i, "_score": 1.0,
                 "_source": included(doc, searches[0]["_source"])}
                for i, doc in stored.items()
            ]  # fmt: skip
            return 200, {"took": 1, "responses": [search_response(hits)] * len(searches)}
        return 404, {"error": "unexpected"}

    return lookalike_index(respond)


def test_previews_are_kept_in_the_document_and_read_with_one_mget(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """A preview is the document's ``preview`` object (thumbnail in base64), written with
    the record and gone when it is re-added without one; ``previews`` is one _mget of the
    ids that names the fields it wants (the thumbnail only when asked), and a search never
    asks for it. Does not prove a cluster's source filtering of an unindexed object."""
    stored: dict[str, dict[str, Any]] = {}
    cluster.respond = previews_cluster(stored)
    backend = store(cluster)
    signature = random_signatures(rng, 1)[0]
    preview = Preview(640, 480, 51_234, THUMBNAIL, "image/jpeg")
    backend.add_many([Record("a.jpg", signature, preview=preview), Record("b.jpg", signature)])
    assert stored[document_id("a.jpg")]["preview"] == {
        "width": 640,
        "height": 480,
        "file_bytes": 51_234,
        "media_type": "image/jpeg",
        "thumbnail": "/9j/4CBhIGpwZWcncyBieXRlcyAAAQ==",
    }
    assert "preview" not in stored[document_id("b.jpg")]

    assert backend.previews(["a.jpg", "b.jpg", "missing.jpg", "a.jpg"]) == {"a.jpg": preview}
    assert backend.previews(["a.jpg"], thumbnails=False) == {"a.jpg": preview.without_thumbnail()}
    with_thumbnails, sizes_only = cluster.calls("POST", "/images/_mget")
    assert with_thumbnails.json() == {
        "ids": [document_id(p) for p in ("a.jpg", "b.jpg", "missing.jpg")]
    }
    assert with_thumbnails.query["_source_includes"] == ["path,preview"]
    assert sizes_only.query["_source_includes"] == [
        "path,preview.width,preview.height,preview.file_bytes,preview.media_type,"
        "preview.sha256,preview.modified"
    ]
    assert backend.previews([]) == {}
    assert len(cluster.calls("POST", "/images/_mget")) == 2  # none for no filepaths

    [match] = backend.search(signature, limit=5, max_distance=0.5)[:1]
    [search] = [r.ndjson()[1] for r in cluster.calls("POST", "/_msearch")]
    assert "preview" not in search["_source"] and match.filepath in ("a.jpg", "b.jpg")

    backend.add(Record("a.jpg", signature))  # re-added without a preview: it has none
    assert "preview" not in stored[document_id("a.jpg")]
    assert backend.previews(["a.jpg"]) == {}


def test_an_index_without_the_preview_field_gets_it_when_opened(cluster: FakeCluster) -> None:
    """A lookalike index made before previews gets the field by put_mapping (the object
    page: fields may be added to a mapping), and one made before embeddings gets both,
    each in its own request so that a refused one leaves the other."""
    before = mapping()
    del before["properties"]["preview"], before["properties"]["embedding"]

    def respond(request: Request) -> Answer:
        if request.method == "HEAD" and request.path == "/images":
            return 200, None
        if request.path == "/images/_mapping" and request.method == "GET":
            return 200, {"images": {"mappings": before}}
        if request.path == "/images/_mapping":  # PUT
            if "embedding" in request.json()["properties"]:
                return 400, {"error": {"type": "mapper_parsing_exception", "reason": "old"}}
            return 200, {"acknowledged": True}
        return 200, {"count": 0}

    cluster.respond = respond
    backend = store(cluster)
    facts = backend.stats()
    assert facts["embedding_index"].startswith("none: Elasticsearch refused")
    puts = [r.json() for r in cluster.calls("PUT", "/images/_mapping")]
    assert puts == [
        {"properties": {"embedding": EMBEDDING_FIELD}},
        {"properties": {"preview": {"type": "object", "enabled": False}}},
    ]
    assert backend._remote.no_previews is None


def test_a_preview_field_of_another_shape_is_left_alone() -> None:
    """An index whose ``preview`` field is indexed (someone's own mapping) keeps no
    previews rather than indexing thumbnails."""
    assert preview_field_problem(mapping()) is None
    assert preview_field_problem({"properties": {}}) is None
    indexed = {"properties": {"preview": {"properties": {"width": {"type": "long"}}}}}
    assert preview_field_problem(indexed) is not None
    assert preview_field_problem({"properties": {"preview": {"type": "keyword"}}}) is not None


def test_a_legacy_index_keeps_no_previews(cluster: FakeCluster, rng: np.random.Generator) -> None:
    """Match's and image-match's indices map fields dynamically, which would index a
    thumbnail as text: an add there drops the preview, and ``previews`` asks nothing."""

    cluster.respond = legacy_index(lambda r: (404, {"error": "unexpected"}))
    backend = store(cluster)
    backend.add(Record("a.jpg", random_signatures(rng, 1)[0], preview=Preview(2, 3, 4, THUMBNAIL)))
    [bulk] = cluster.calls("PUT", "/_bulk")
    document = bulk.ndjson()[1]["upsert"]
    assert document["path"] == "a.jpg" and "preview" not in document
    assert backend.previews(["a.jpg"]) == {}
    assert cluster.calls("POST", "/images/_mget") == []
    assert cluster.calls("PUT", "/images/_mapping") == []


def test_a_refused_index_creation_is_reported(cluster: FakeCluster) -> None:
    """A 400 from index creation is an error unless another process created the index
    first (resource_already_exists_exception, as the create-index page names it). Does not
    prove the exact reasons a cluster gives."""
    created = False

    def respond(request: Request) -> Answer:
        nonlocal created
        if request.method == "HEAD":
            return (200, None) if created else (404, None)
        if request.method == "PUT" and request.path == "/images":
            created = True
            error = {"type": "resource_already_exists_exception", "reason": "already exists"}
            return 400, {"error": error, "status": 400}
        if request.path == "/images/_mapping":
            return 200, {"images": {"mappings": mapping()}}
        if request.path == "/images/_count":
            return 200, {"count": 0}
        return 404, {"error": "unexpected"}

    cluster.respond = respond
    assert store(cluster).stats()["layout"] == "not created"
    store(cluster).add_many([])  # creates nothing: no records
    backend = store(cluster)
    assert backend.search_embedding(np.ones(EMBEDDING_DIMENSION), limit=1, max_distance=1) == []
    assert backend._is_legacy() is False  # opened despite the 400: the index is there

    created = False
    cluster.respond = lambda request: (
        (404, None)
        if request.method == "HEAD"
        else (400, {"error": {"type": "mapper_parsing_exception", "reason": "bad"}, "status": 400})
    )
    with pytest.raises(BackendUnavailable, match="refused to create 'images': bad"):
        store(cluster)._is_legacy()


# -- distinct marks: a second index beside the store's ----------------------------------------


class MarksCluster:
    """A lookalike-layout index ``images`` holding ``paths`` and, once created, the marks
    index ``images-distinct``, answering as the documentation pages show: get and delete
    by id, _bulk, and for the marks index create, index, delete by id, a search sorted on
    the fields its body names continued with ``search_after``, and _delete_by_query of a
    bool of should terms. It keeps no mapping rules: a mark indexed before its index is
    created is refused (a real cluster would create it with a dynamic mapping)."""

    def __init__(self, paths: list[str], marks: bool = False) -> None:
        self.images = {document_id(p): p for p in paths}
        self.marks: dict[str, dict[str, str]] | None = {} if marks else None
        self.answers: dict[str, Answer] = {}  # path -> answer, before anything else

    def __call__(self, request: Request) -> Answer:
        if request.path in self.answers:
            return self.answers[request.path]
        parts = request.path.strip("/").split("/")
        if parts[0] == "images-distinct":
            return self.distinct(request, parts[1:])
        if request.method == "HEAD" and parts == ["images"]:
            return 200, None
        if request.path == "/images/_mapping":
            return 200, {"images": {"mappings": mapping()}}
        if request.path == "/_bulk":
            for action in request.ndjson()[0::2]:
                self.images[action["update"]["_id"]] = "(replaced)"
            return bulk_into({}, request)
        if parts[:2] == ["images", "_doc"] and request.method == "GET":
            path = self.images.get(parts[2])
            if path is None:
                return 404, {"_index": "images", "_id": parts[2], "found": False}
            source = {"path": path, "signature": [0] * sig.LENGTH}
            return 200, {"_index": "images", "_id": parts[2], "found": True, "_source": source}
        if parts[:2] == ["images", "_doc"] and request.method == "DELETE":
            found = self.images.pop(parts[2], None) is not None
            return (200 if found else 404), {"result": "deleted" if found else "not_found"}
        return 404, {"error": "unexpected"}

    def distinct(self, request: Request, rest: list[str]) -> Answer:
        missing = {"error": {"type": "index_not_found_exception"}, "status": 404}
        if not rest:
            if request.method == "HEAD":
                return (404 if self.marks is None else 200), None
            if request.method == "PUT" and self.marks is None:
                self.marks = {}
                return 200, {"acknowledged": True, "index": "images-distinct"}
            exists = {"type": "resource_already_exists_exception", "reason": "exists"}
            return 400, {"error": exists, "status": 400}
        if self.marks is None:
            return 404, missing
        if rest[0] == "_doc" and request.method == "PUT":
            created = rest[1] not in self.marks
            self.marks[rest[1]] = request.json()
            return (201 if created else 200), {"result": "created" if created else "updated"}
        if rest[0] == "_doc" and request.method == "DELETE":
            found = self.marks.pop(rest[1], None) is not None
            return (200 if found else 404), {"result": "deleted" if found else "not_found"}
        if rest == ["_search"]:
            body = request.json()
            keys = [next(iter(rule)) for rule in body["sort"]]
            rows = sorted(([doc[k] for k in keys], doc) for doc in self.marks.values())
            after = body.get("search_after")
            rows = [row for row in rows if after is None or row[0] > after][: body["size"]]
            return 200, search_response(
                [{"_id": "", "_source": doc, "sort": values} for values, doc in rows]
            )
        if rest == ["_delete_by_query"]:
            terms = [clause["term"] for clause in request.json()["query"]["bool"]["should"]]
            gone = [
                key
                for key, doc in self.marks.items()
                if any(doc[name] == value for term in terms for name, value in term.items())
            ]
            for key in gone:
                del self.marks[key]
            return 200, {"took": 3, "timed_out": False, "deleted": len(gone), "failures": []}
        return 404, {"error": "unexpected"}


def marks_requests(cluster: FakeCluster) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in cluster.requests if r.path.startswith("/images-distinct")]


def test_the_marks_bodies_are_the_documented_shapes() -> None:
    """Written from the mapping (dynamic, keyword), index, term, bool, delete-by-query and
    search_after pages. Does not prove a cluster accepts them or applies them as we expect:
    the contract suite does, against a real one."""
    assert distinct_index("images") == "images-distinct"
    marks = distinct_mapping()
    assert marks["dynamic"] == "strict"
    assert marks["properties"] == {"first": {"type": "keyword"}, "second": {"type": "keyword"}}
    assert distinct_document("a.jpg", "b.jpg") == {"first": "a.jpg", "second": "b.jpg"}
    assert distinct_id("a.jpg", "b.jpg") == hashlib.sha256(b"a.jpg\0b.jpg").hexdigest()
    ids = {distinct_id(*pair) for pair in [("a", "bc"), ("ab", "c"), ("a", "b"), ("b", "a")]}
    assert len(ids) == 4
    assert distinct_delete_query("a.jpg") == {
        "query": {
            "bool": {
                "should": [{"term": {"first": "a.jpg"}}, {"term": {"second": "a.jpg"}}],
                "minimum_should_match": 1,
            }
        }
    }
    first = distinct_page_body(None, 100)
    assert first == {
        "size": 100,
        "query": {"match_all": {}},
        "sort": [{"first": "asc"}, {"second": "asc"}],
        "_source": ["first", "second"],
        "track_total_hits": False,
    }
    assert distinct_page_body(["a", "b"], 100) == {**first, "search_after": ["a", "b"]}
    assert DISTINCT_PAGE == 10_000  # index.max_result_window's default


def test_a_mark_creates_its_index_once_and_marking_twice_sends_the_same_id(
    cluster: FakeCluster,
) -> None:
    """The first mark creates ``images-distinct`` with the strict mapping, then each mark
    is indexed under the pair's id with the store's refresh. Does not prove a cluster
    overwrites a document indexed twice under one id (the index page says it does)."""
    state = MarksCluster(["a.jpg", "b.jpg", "c.jpg"])
    cluster.respond = state
    backend = store(cluster)
    backend.mark_distinct("b.jpg", "a.jpg")
    backend.mark_distinct("a.jpg", "b.jpg")
    [create] = cluster.calls("PUT", "/images-distinct")
    assert create.json() == {"mappings": distinct_mapping()}
    puts = cluster.calls("PUT", f"/images-distinct/_doc/{distinct_id('a.jpg', 'b.jpg')}")
    assert [put.json() for put in puts] == [{"first": "a.jpg", "second": "b.jpg"}] * 2
    assert all(put.query["refresh"] == ["wait_for"] for put in puts)
    assert len(cluster.calls("HEAD", "/images-distinct")) == 1  # seen: not asked again
    assert backend.distinct() == [("a.jpg", "b.jpg")]

    other = store(cluster, refresh="false")  # another process: finds the index
    other.mark_distinct("c.jpg", "a.jpg")
    assert len(cluster.calls("PUT", "/images-distinct")) == 1
    [put] = cluster.calls("PUT", f"/images-distinct/_doc/{distinct_id('a.jpg', 'c.jpg')}")
    assert put.query["refresh"] == ["false"]
    assert backend.distinct() == [("a.jpg", "b.jpg"), ("a.jpg", "c.jpg")]


@pytest.mark.parametrize("pair", [("a.jpg", "missing.jpg"), ("missing.jpg", "a.jpg")])
def test_marking_a_missing_image_raises_not_found_and_writes_nothing(
    cluster: FakeCluster, pair: tuple[str, str]
) -> None:
    """Either image missing (looked up by its document id, or in a legacy index by the
    path query): NotFound, and no request reaches the marks index. Does not prove a real
    cluster's get is realtime (its documentation says it is)."""
    cluster.respond = MarksCluster(["a.jpg"])
    with pytest.raises(NotFound, match=r"missing\.jpg"):
        store(cluster).mark_distinct(*pair)
    assert marks_requests(cluster) == []

    cluster.requests.clear()
    cluster.respond = legacy_index(lambda request: (404, {"error": "unexpected"}))
    with pytest.raises(NotFound):
        store(cluster).mark_distinct(*pair)
    assert cluster.calls("POST", "/images/_search")  # looked for by path
    assert marks_requests(cluster) == []


def test_deleting_an_image_deletes_its_marks_and_replacing_it_keeps_them(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """After the record's delete, one _delete_by_query into ``images-distinct`` for
    either field, refreshed, version conflicts let through; an add sends none. Does not
    prove a real cluster matches the terms as the stand-in does (exact keyword terms)."""
    state = MarksCluster(["a.jpg", "b.jpg", "c.jpg"])
    cluster.respond = state
    backend = store(cluster)
    for pair in [("a.jpg", "b.jpg"), ("a.jpg", "c.jpg"), ("b.jpg", "c.jpg")]:
        backend.mark_distinct(*pair)
    backend.add(Record("b.jpg", random_signatures(rng, 1)[0]))  # replaced: the same image
    assert cluster.calls("POST", "/images-distinct/_delete_by_query") == []
    assert len(backend.distinct()) == 3

    cluster.requests.clear()
    assert backend.delete("a.jpg")
    [delete, by_query] = [r for r in cluster.requests if r.method != "HEAD"]
    assert (delete.method, delete.path) == ("DELETE", f"/images/_doc/{document_id('a.jpg')}")
    assert (by_query.method, by_query.path) == ("POST", "/images-distinct/_delete_by_query")
    assert by_query.json() == {
        "query": {
            "bool": {
                "should": [{"term": {"first": "a.jpg"}}, {"term": {"second": "a.jpg"}}],
                "minimum_should_match": 1,
            }
        }
    }
    assert by_query.query["refresh"] == ["true"] and by_query.query["conflicts"] == ["proceed"]
    assert backend.distinct() == [("b.jpg", "c.jpg")]

    state.answers["/images-distinct/_delete_by_query"] = (
        200,
        {"deleted": 0, "failures": [{"cause": {"type": "x", "reason": "shard failed"}}]},
    )
    with pytest.raises(BackendUnavailable, match=r"distinct marks of 'b\.jpg'.*shard failed"):
        backend.delete("b.jpg")


def test_a_store_without_marks_sends_no_delete_by_query_nor_marks_search(
    cluster: FakeCluster,
) -> None:
    """No marks index: a delete asks once whether it exists (HEAD) and sends nothing else
    there, ``distinct`` is [] and unmark False, and nothing creates the index. Does not
    prove what a real cluster answers a HEAD with beyond the exists page's 200/404."""
    cluster.respond = MarksCluster(["a.jpg", "b.jpg"])
    backend = store(cluster)
    assert backend.delete("a.jpg")
    assert marks_requests(cluster) == [("HEAD", "/images-distinct")]
    assert backend.distinct() == []
    assert not backend.unmark_distinct("a.jpg", "b.jpg")
    assert all(method in ("HEAD", "DELETE") for method, _ in marks_requests(cluster))
    assert cluster.calls("POST", "/images-distinct/_delete_by_query") == []
    assert cluster.calls("PUT", "/images-distinct") == []


def test_distinct_pages_through_more_marks_than_one_page_holds(cluster: FakeCluster) -> None:
    """More than 10,000 marks (index.max_result_window's default): two sorted pages, the
    second after the first's last sort values. Does not prove a real cluster's keyword
    sort order (byte order of UTF-8, which equals Python's for these names)."""
    pairs = [(f"p{i:05d}", f"q{i % 7}") for i in range(DISTINCT_PAGE + 3)]
    state = MarksCluster([], marks=True)
    shuffled = pairs[:]
    random.Random(5).shuffle(shuffled)
    assert state.marks is not None
    state.marks.update({distinct_id(*pair): distinct_document(*pair) for pair in shuffled})
    cluster.respond = state
    assert store(cluster).distinct() == pairs
    first, second = [r.json() for r in cluster.calls("POST", "/images-distinct/_search")]
    assert first == distinct_page_body(None, DISTINCT_PAGE)
    assert second == distinct_page_body(list(pairs[DISTINCT_PAGE - 1]), DISTINCT_PAGE)


def test_unmark_answers_from_the_delete(cluster: FakeCluster) -> None:
    """True for a ``deleted`` answer, False for ``not_found`` or a missing index (both
    404s, as the delete page shows). Does not prove a cluster's refresh of the delete."""
    cluster.respond = MarksCluster(["a.jpg", "b.jpg"])
    backend = store(cluster)
    assert not backend.unmark_distinct("a.jpg", "b.jpg")  # no index yet
    backend.mark_distinct("a.jpg", "b.jpg")
    assert backend.unmark_distinct("b.jpg", "a.jpg")
    assert not backend.unmark_distinct("a.jpg", "b.jpg")
    deletes = cluster.calls("DELETE", f"/images-distinct/_doc/{distinct_id('a.jpg', 'b.jpg')}")
    assert len(deletes) == 3 and all(d.query["refresh"] == ["wait_for"] for d in deletes)
    assert backend.distinct() == []


# -- failures --------------------------------------------------------------------------------


def test_transient_errors_are_retried_with_growing_waits(cluster: FakeCluster) -> None:
    """503, 503, then an answer: three requests. Does not prove which statuses a real
    cluster sends under load."""
    answers = iter([(503, {"error": {"reason": "busy"}})] * 2 + [(200, {"count": 5})])
    cluster.respond = lookalike_index(lambda request: next(answers))
    assert store(cluster, retries=3).count() == 5
    assert (
        len(cluster.calls("GET", "/images/_count")) + len(cluster.calls("POST", "/images/_count"))
        == 3
    )


def test_a_persistent_failure_is_backend_unavailable(cluster: FakeCluster) -> None:
    """A 500 is not retried and becomes BackendUnavailable (HTTP 503) with the reason."""
    cluster.respond = lookalike_index(
        lambda request: (500, {"error": {"type": "x", "reason": "shard failure"}})
    )
    with pytest.raises(BackendUnavailable, match="answered 500: shard failure"):
        store(cluster, retries=3).count()
    assert len(cluster.requests) == 2  # HEAD, then one count


def test_an_unreachable_cluster_is_backend_unavailable() -> None:
    """Port 9 on loopback has no listener here."""
    backend = ElasticsearchBackend("127.0.0.1:9", retries=1)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        backend.count()


def test_a_slow_cluster_times_out(cluster: FakeCluster) -> None:
    """The request timeout of the settings applies; retries give up."""
    release = threading.Event()

    def slow(request: Request) -> Answer:
        release.wait(5)
        return 200, None

    cluster.respond = slow
    with pytest.raises(BackendUnavailable, match="unreachable"):
        store(cluster, timeout=0.2, retries=1).count()
    release.set()


def test_migrate_copies_in_path_order_resumably_then_swaps_an_alias(
    cluster: FakeCluster, rng: np.random.Generator
) -> None:
    """A legacy index of three documents (one path twice) read in two pages: each page is
    bulk-upserted into the new index and its position saved in the new index's _meta;
    then the counts agree and one _aliases request swaps. Does not prove a cluster
    applies the alias actions atomically (its documentation says it does)."""
    signatures = random_signatures(rng, 3)
    docs = [("a.jpg", 0), ("a.jpg", 1), ("b.jpg", 2)]
    embedding = unit_vectors(rng, 1)[0]  # b.jpg has one (as a lookalike index would)
    created: dict[str, Any] = {}

    def respond(request: Request) -> Answer:
        if request.method == "HEAD":
            return (200, None) if request.path == "/images" or created else (404, None)
        if request.path == "/images/_mapping":
            return 200, {"images": {"mappings": {"properties": {"path": {"type": "text"}}}}}
        if request.method == "PUT" and request.path == "/images-v2":
            created.update(request.json()["mappings"])
            return 200, {"acknowledged": True}
        if request.path == "/images-v2/_mapping":
            if request.method == "PUT":
                created["_meta"] = request.json()["_meta"]
                return 200, {"acknowledged": True}
            return 200, {"images-v2": {"mappings": created}}
        if request.path == "/images/_search":
            after = request.json().get("search_after")
            start = 0 if after is None else [p for p, _ in docs].index(after[0]) + 1
            if after == ["a.jpg"]:
                start = 2
            page = docs[start : start + 2]
            found = [dict(hit(p, signatures[i]), sort=[p]) for p, i in page]
            for h in found:
                if h["_source"]["path"] == "b.jpg":
                    h["_source"]["embedding"] = embedding.tolist()
            return 200, search_response(found)
        if request.path == "/_bulk":
            items = [{"update": {"_id": "x", "status": 201}}] * (len(request.ndjson()) // 2)
            return 200, {"took": 1, "errors": False, "items": items}
        if request.path == "/images-v2/_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if request.path == "/images-v2/_count":
            return 200, {"count": 2}
        if request.path == "/_aliases":
            return 200, {"acknowledged": True}
        return 404, {"error": "unexpected"}

    cluster.respond = respond
    steps: list[int] = []
    facts = store(cluster).migrate("images-v2", swap=True, batch=2, progress=steps.append)
    assert facts == {"copied": 3, "source_paths": 2, "target_count": 2, "swapped": True}
    assert steps == [2, 1]
    assert created["_meta"] == {"lookalike": 1, "migrated_until": ["b.jpg"], "migrated_paths": 2}
    searches = [r.json() for r in cluster.calls("POST", "/images/_search")]
    assert [s.get("search_after") for s in searches] == [None, ["a.jpg"], ["b.jpg"]]
    assert all(s["sort"] == [{"path.keyword": "asc"}] for s in searches)
    assert all(
        s["_source"] == ["path", "signature", "metadata", "embedding", "preview"] for s in searches
    )
    bulk = [line for b in cluster.calls("PUT", "/_bulk") for line in b.ndjson()]
    bulk_ids = [line["update"]["_id"] for line in bulk[0::2]]
    assert bulk_ids == [document_id("a.jpg"), document_id("a.jpg"), document_id("b.jpg")]
    copied = [line["upsert"] for line in bulk[1::2]]
    assert [("embedding" in doc) for doc in copied] == [False, False, True]
    assert copied[2]["embedding"] == embedding.tolist()
    [aliases] = cluster.calls("POST", "/_aliases")
    assert aliases.json() == {
        "actions": [
            {"add": {"index": "images-v2", "alias": "images"}},
            {"remove_index": {"index": "images"}},
        ]
    }


def test_credentials_in_the_url_stay_out_of_messages_and_stats() -> None:
    """The client sends them as Basic auth (elastic_transport parses the URL); lookalike
    never repeats the password."""
    backend = ElasticsearchBackend("http://lookalike:s3cret@127.0.0.1:9", retries=0)
    with pytest.raises(BackendUnavailable) as refused:
        backend.count()
    assert "s3cret" not in str(refused.value)
    assert "lookalike:***@127.0.0.1:9" in str(refused.value)
    assert backend.shown_url == "http://lookalike:***@127.0.0.1:9"
