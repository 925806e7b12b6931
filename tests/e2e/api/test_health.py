"""``GET /metrics`` and ``GET /ready``: a real ``lookalike serve`` with two workers whose
counts are summed whichever worker answers the scrape, the API key's rule, and a store
that goes away (Milvus Lite stopped under a server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Live
from .test_batch import multipart, outcomes, started
from .test_serve import serve


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics page, parsed by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(page: dict[Any, float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_every_worker_did(tmp_path: Path, photo_bytes: dict[str, bytes]) -> None:
    """Each request on a new connection, so both workers take some; every scrape, from
    either worker, reports the same totals."""
    for served in serve(tmp_path, "sqlite:///" + str(tmp_path / "store.db")):
        url = served.url
        for _ in range(30):
            assert httpx.get(url + "/count", timeout=30).status_code == 200
        for name in ("astronaut", "coffee", "camera"):
            added = httpx.post(
                url + "/add",
                data={"filepath": name},
                files={"image": photo_bytes[name]},
                timeout=60,
            )
            assert added.status_code == 200, added.text
        found = httpx.post(url + "/search", files={"image": photo_bytes["coffee"]}, timeout=60)
        assert found.status_code == 200
        refused = httpx.post(url + "/search", data={"url": "http://10.1.2.3/x.jpg"}, timeout=30)
        assert refused.status_code == 400
        assert (
            httpx.request("DELETE", url + "/delete", data={"filepath": "camera"}).status_code == 200
        )
        assert httpx.get(url + "/nowhere", timeout=30).status_code == 404
        pages = []
        for _ in range(6):
            answer = httpx.get(url + "/metrics", timeout=30)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain")
            pages.append(samples(answer.text))
        for page in pages:
            assert value(page, "lookalike_requests_total", endpoint="/count", status="200") == 30
            assert value(page, "lookalike_requests_total", endpoint="/add", status="200") == 3
            assert value(page, "lookalike_requests_total", endpoint="/search", status="400") == 1
            assert value(page, "lookalike_requests_total", endpoint="other", status="404") == 1
            assert value(page, "lookalike_request_seconds_count", endpoint="/add") == 3
            assert value(page, "lookalike_images_added_total", via="add") == 3
            assert value(page, "lookalike_images_deleted_total") == 1
            assert value(page, "lookalike_searches_total", method="signature") == 1
            assert value(page, "lookalike_fetch_failures_total", reason="refused") == 1
            assert value(page, "lookalike_store_images") == 2
            assert value(page, "lookalike_store_up") == 1
        # the scrapes themselves are counted too, by the worker that answered each
        last = pages[-1]
        assert value(last, "lookalike_requests_total", endpoint="/metrics", status="200") == 5


def test_metrics_are_behind_the_api_key_unless_public(
    start_server: Callable[..., Live], photo_bytes: dict[str, bytes]
) -> None:
    closed = start_server(api_key="k3y")
    assert closed.call("GET", "/metrics").status_code == 401
    keyed = closed.call("GET", "/metrics", headers={"Authorization": "Bearer k3y"})
    assert keyed.status_code == 200 and "lookalike_requests_total" in keyed.text
    assert closed.call("GET", "/ready").status_code == 200  # probes carry no key
    assert closed.call("GET", "/ping").status_code == 200
    public = start_server(api_key="k3y", metrics_public=True)
    assert public.call("GET", "/metrics").status_code == 200
    assert public.call("HEAD", "/metrics").status_code == 200
    before = samples(public.call("GET", "/metrics").text)
    assert public.call("GET", "/count").status_code == 401  # only the metrics are opened
    after = samples(public.call("GET", "/metrics").text)
    refused = {"endpoint": "/count", "status": "401"}  # answered before routing, still named
    assert (
        value(after, "lookalike_requests_total", **refused)
        - value(before, "lookalike_requests_total", **refused)
        == 1
    )


def test_a_batch_job_is_counted_as_started_and_done(
    live: Live, photo_bytes: dict[str, bytes]
) -> None:
    """In one process the counts are the process's own: compared before and after."""

    def page() -> dict[Any, float]:
        return samples(live.call("GET", "/metrics").text)

    before = page()
    results = outcomes(live, started(live, **multipart(("a", photo_bytes["coins"], None))))
    assert [r["status"] for r in results] == ["added"]
    after = page()
    for state in ("started", "done"):
        labels = {"kind": "add_batch", "state": state}
        moved = value(after, "lookalike_jobs_total", **labels) - value(
            before, "lookalike_jobs_total", **labels
        )
        assert moved == 1, state
    via = value(after, "lookalike_images_added_total", via="batch")
    assert via - value(before, "lookalike_images_added_total", via="batch") == 1


def test_ready_answers_503_when_the_store_goes_away(
    start_server: Callable[..., Live], tmp_path: Path
) -> None:
    pytest.importorskip("milvus_lite", reason="install lookalike[milvus]")
    from milvus_lite.server_manager import server_manager_instance

    lite = tmp_path / "gone.db"
    live = start_server(backend="milvus:///" + str(lite), milvus_timeout=1.0)
    assert live.call("GET", "/ready").json() == {
        "status": "ok", "error": [], "method": "ready", "result": [],
    }  # fmt: skip
    server_manager_instance.release_server(str(lite))  # Milvus Lite stops
    answer = live.call("GET", "/ready")
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["status"] == "fail" and "store is not available" in body["error"][0]
    assert live.call("GET", "/ping").status_code == 200  # alive, not ready
    metrics = samples(live.call("GET", "/metrics").text)
    assert value(metrics, "lookalike_store_up") == 0
