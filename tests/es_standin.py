"""A loopback stand-in for Elasticsearch, for tests: no server can be installed where
lookalike is developed. ``cluster`` serves HTTP on 127.0.0.1 and answers each request
with ``respond(request)``, as Elasticsearch's documentation shows; ``DocumentIndex`` is a
``respond`` that keeps documents and answers the few queries image-match's driver sends.
What it does NOT prove: that a real cluster scores, refreshes and maps as it does (the
tests that need that run when ``LOOKALIKE_TEST_ES_URL`` names a server).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest


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
    # a short poll: shutdown() waits for it, once per test
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def search_response(hits: list[dict[str, Any]]) -> dict[str, Any]:
    """One search response as the _search documentation shows it."""
    return {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0, "hits": hits},
    }


class DocumentIndex:
    """One index's documents, answering what ``SignatureES`` asks: ``index`` (POST
    ``/<index>/_doc``), ``search`` with a ``bool`` of ``should`` ``term`` queries (scored by
    the number of terms a document matches, not by BM25; ties in insertion order) or a
    ``match`` on ``path`` (equal strings only), ``_source`` excludes and includes,
    ``size``, ``sort`` on ``_doc`` with ``search_after``, and ``DELETE`` by id."""

    def __init__(self, name: str = "images") -> None:
        self.name = name
        self.documents: dict[str, dict[str, Any]] = {}
        self.ids = (f"doc{n}" for n in itertools.count())

    def __call__(self, request: Request) -> Answer:
        parts = [unquote(p) for p in request.path.strip("/").split("/")]
        if parts[0] != self.name:
            return 404, {"error": {"type": "index_not_found_exception"}, "status": 404}
        if request.method == "POST" and parts[1:] == ["_doc"]:
            document_id = next(self.ids)
            self.documents[document_id] = request.json()
            return 201, {"_index": self.name, "_id": document_id, "result": "created"}
        if request.method == "DELETE" and len(parts) == 3 and parts[1] == "_doc":
            found = self.documents.pop(parts[2], None) is not None
            answer = {"_index": self.name, "_id": parts[2]}
            return (200, {**answer, "result": "deleted"}) if found else (404, answer)
        if parts[1:] == ["_search"]:
            return 200, self.search(request.json(), request.query)
        return 400, {"error": {"type": "unsupported_by_the_stand_in"}, "status": 400}

    def search(self, body: dict[str, Any], query: dict[str, list[str]]) -> dict[str, Any]:
        scored = []
        for order, (document_id, source) in enumerate(self.documents.items()):
            score = _score(body["query"], source)
            if score > 0:
                scored.append((-score, order, document_id, source))
        if body.get("sort") != ["_doc"]:
            scored.sort()
        else:
            scored.sort(key=lambda item: item[1])
            after = body.get("search_after")
            scored = [s for s in scored if after is None or s[1] > after[0]]
        size = int(body.get("size", query.get("size", ["10"])[0]))
        hits = [
            {
                "_index": self.name,
                "_id": document_id,
                "_score": float(-negative),
                "_source": _projected(source, body.get("_source")),
                "sort": [order],
            }
            for negative, order, document_id, source in scored[:size]
        ]
        return search_response(hits)


def _score(query: dict[str, Any], source: dict[str, Any]) -> int:
    if "match_all" in query:
        return 1
    if "bool" in query:
        terms = [clause["term"] for clause in query["bool"]["should"]]
        return sum(source.get(k) == v for term in terms for k, v in term.items())
    ((field_name, value),) = query["match"].items()
    return int(source.get(field_name) == value)


def _projected(source: dict[str, Any], rule: Any) -> dict[str, Any]:
    if rule is None:
        return source
    if isinstance(rule, list):
        return {k: v for k, v in source.items() if k in rule}
    excluded = [pattern.rstrip("*") for pattern in rule.get("excludes", [])]
    return {k: v for k, v in source.items() if not any(k.startswith(p) for p in excluded)}
