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

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

pytest.importorskip("elasticsearch", reason="install lookalike[elasticsearch]")

from lookalike import signature as sig
from lookalike.backends import open_backend
from lookalike.backends.elasticsearch import (
    ElasticsearchBackend,
    document_id,
    filter_clauses,
    is_legacy,
    knn_body,
    mapping,
    normalise_url,
    word_body,
)
from lookalike.config import Settings
from lookalike.errors import BackendUnavailable
from lookalike.records import Record

from .support import perturb, random_signatures

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "signatures.json").read_text())


# -- a loopback server that answers as Elasticsearch's documentation shows ----------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


Answer = tuple[int, Any]  # status and JSON body


@dataclass
class FakeCluster:
    """Answers each request with ``respond(request)``; records every request."""

    respond: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster(respond=lambda request: (404, {"error": "unexpected"}))

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            request = Request(
                self.command, parts.path, parse_qs(parts.query), self.rfile.read(length)
            )
            fake.requests.append(request)
            status, body = fake.respond(request)
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("X-Elastic-Product", "Elasticsearch")  # the client checks it
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def lookalike_index(then: Callable[[Request], Answer]) -> Callable[[Request], Answer]:
    """An existing index with lookalike's mapping; other requests go to ``then``."""

    def respond(request: Request) -> Answer:
        if request.method == "HEAD" and request.path == "/images":
            return 200, None
        if request.method == "GET" and request.path == "/images/_mapping":
            return 200, {"images": {"mappings": mapping()}}
        return then(request)

    return respond


def store(cluster: FakeCluster, **options: Any) -> ElasticsearchBackend:
    return ElasticsearchBackend(cluster.url, **{"retries": 0, **options})


def search_response(hits: list[dict[str, Any]]) -> dict[str, Any]:
    """One search response as the _search documentation shows it."""
    return {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0, "hits": hits},
    }


def hit(path: str, signature: np.ndarray, metadata: Any = None, score: float = 1.0) -> dict:
    source = {"path": path, "signature": signature.tolist()}
    if metadata is not None:
        source["metadata"] = metadata
    return {"_index": "images", "_id": document_id(path), "_score": score, "_source": source}


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
            return 200, search_response([dict(hit(p, signatures[i]), sort=[p]) for p, i in page])
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
    bulk_ids = [
        line["update"]["_id"] for b in cluster.calls("PUT", "/_bulk") for line in b.ndjson()[0::2]
    ]
    assert bulk_ids == [document_id("a.jpg"), document_id("a.jpg"), document_id("b.jpg")]
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
