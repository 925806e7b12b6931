"""Match's HTTP contract, replayed request shape by request shape against a real server."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

ENVELOPE_KEYS = {"status", "error", "method", "result"}


def ok(response, method: str) -> list:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["status"] == "ok" and body["error"] == [] and body["method"] == method
    assert isinstance(body["result"], list)
    return body["result"]


@pytest.fixture
def allowed(start_server):
    """A server that may fetch from local test servers (127.0.0.1 only)."""
    return start_server(url_allowlist="127.0.0.1/32")


def test_add_with_multipart_upload_and_metadata_then_search(live, photo_bytes):
    metadata = {"id": "AB1234", "tags": ["cat"], "nested": {"a": 1}}
    added = live.call(
        "POST",
        "/add",
        files={"image": ("cat.jpg", photo_bytes["chelsea"], "image/jpeg")},
        data={"filepath": "cats/cat.jpg", "metadata": json.dumps(metadata)},
    )
    assert ok(added, "add") == []
    found = ok(
        live.call("POST", "/search", files={"image": ("q.jpg", photo_bytes["chelsea"])}), "search"
    )
    assert len(found) == 1
    assert found[0]["filepath"] == "cats/cat.jpg"
    assert found[0]["metadata"] == metadata
    assert found[0]["score"] == 100.0 and isinstance(found[0]["score"], float)


def test_add_and_search_by_url_form_urlencoded(allowed, image_server, photo_bytes):
    url = image_server.url("/coffee.jpg", photo_bytes["coffee"])
    assert ok(allowed.call("POST", "/add", data={"url": url, "filepath": url}), "add") == []
    found = ok(allowed.call("POST", "/search", data={"url": url}), "search")
    assert [r["filepath"] for r in found] == [url]
    assert found[0]["metadata"] is None


def test_search_all_orientations_defaults_to_true(live, photo_bytes, edit):
    ok(
        live.call("POST", "/add", files={"image": photo_bytes["rocket"]}, data={"filepath": "r"}),
        "add",
    )
    turned = edit("rocket", lambda im: im.transpose(Image.Transpose.ROTATE_90))
    default = ok(live.call("POST", "/search", files={"image": turned}), "search")
    assert [r["filepath"] for r in default] == ["r"]
    assert default[0]["orientation"] == "rot270"
    explicit = live.call(
        "POST", "/search", files={"image": turned}, data={"all_orientations": "true"}
    )
    assert ok(explicit, "search") == default
    off = live.call("POST", "/search", files={"image": turned}, data={"all_orientations": "false"})
    assert ok(off, "search") == []


def test_results_are_best_first(live, photo_bytes, edit):
    ok(
        live.call("POST", "/add", files={"image": photo_bytes["coffee"]}, data={"filepath": "a"}),
        "add",
    )
    smaller = edit("coffee", lambda im: im.resize((im.width // 3, im.height // 3)))
    ok(live.call("POST", "/add", files={"image": smaller}, data={"filepath": "b"}), "add")
    found = ok(live.call("POST", "/search", files={"image": photo_bytes["coffee"]}), "search")
    assert [r["filepath"] for r in found] == ["a", "b"]
    assert found[0]["score"] > found[1]["score"] > 55


def test_compare_by_upload_and_by_url(allowed, image_server, photo_bytes):
    same = allowed.call(
        "POST", "/compare", files={"image1": photo_bytes["coins"], "image2": photo_bytes["coins"]}
    )
    assert ok(same, "compare")[0]["score"] == 100.0
    url1 = image_server.url("/1.jpg", photo_bytes["coins"])
    url2 = image_server.url("/2.jpg", photo_bytes["chelsea"])
    other = ok(allowed.call("POST", "/compare", data={"url1": url1, "url2": url2}), "compare")
    assert set(other[0]) >= {"score"} and other[0]["score"] < 55
    mixed = allowed.call(
        "POST", "/compare", files={"image1": photo_bytes["coins"]}, data={"url2": url1}
    )
    assert ok(mixed, "compare")[0]["score"] == 100.0


def test_delete_by_form_and_by_query_then_count(live, photo_bytes):
    for name in ("a", "b", "c"):
        live.call("POST", "/add", files={"image": photo_bytes["camera"]}, data={"filepath": name})
    assert ok(live.call("GET", "/count"), "count") == [3]
    assert ok(live.call("DELETE", "/delete", data={"filepath": "a"}), "delete") == []
    assert ok(live.call("DELETE", "/delete", params={"filepath": "b"}), "delete") == []
    assert ok(live.call("POST", "/count"), "count") == [1]
    # Match answers ok for a path that holds nothing; old clients rely on it.
    assert ok(live.call("DELETE", "/delete", data={"filepath": "never-added"}), "delete") == []


def test_list_with_offset_and_limit_by_query_and_form(live, photo_bytes):
    names = [f"img{i:02}" for i in range(25)]
    for name in names:
        live.call(
            "POST",
            "/add",
            files={"image": photo_bytes["coins"]},
            data={"filepath": name},
        )
    assert ok(live.call("GET", "/list"), "list") == names[:20]
    assert ok(live.call("GET", "/list", params={"offset": 20, "limit": 10}), "list") == names[20:]
    assert ok(live.call("POST", "/list", data={"offset": "5", "limit": "3"}), "list") == names[5:8]
    assert ok(live.call("GET", "/list", params={"offset": 100}), "list") == []


def test_ping_answers_get_and_post(live):
    assert ok(live.call("GET", "/ping"), "ping") == []
    assert ok(live.call("POST", "/ping"), "ping") == []


def test_add_same_filepath_replaces(live, photo_bytes):
    live.call("POST", "/add", files={"image": photo_bytes["chelsea"]}, data={"filepath": "x"})
    live.call("POST", "/add", files={"image": photo_bytes["coffee"]}, data={"filepath": "x"})
    assert ok(live.call("GET", "/count"), "count") == [1]
    assert ok(live.call("POST", "/search", files={"image": photo_bytes["chelsea"]}), "search") == []
    found = ok(live.call("POST", "/search", files={"image": photo_bytes["coffee"]}), "search")
    assert [r["filepath"] for r in found] == ["x"]


def test_add_reports_added_replaced_unchanged(live, photo_bytes):
    """With report=true /add says what it did; the same bytes and metadata again rewrite
    nothing; without it the answer is Match's []."""

    def add(name: str, photo: str, **data: str) -> list:
        files = {"image": photo_bytes[photo]}
        return ok(live.call("POST", "/add", files=files, data={"filepath": name, **data}), "add")

    assert add("x", "chelsea", report="true") == [{"filepath": "x", "status": "added"}]
    first = live.service.backend.get("x")
    assert add("x", "chelsea", report="true") == [{"filepath": "x", "status": "unchanged"}]
    assert live.service.backend.get("x").updated == first.updated  # not written again
    assert add("x", "chelsea") == []  # Match's answer, and still nothing rewritten
    assert live.service.backend.get("x").updated == first.updated
    meta = {"report": "true", "metadata": '{"k": 1}'}
    assert add("x", "chelsea", **meta) == [{"filepath": "x", "status": "replaced"}]
    assert add("x", "chelsea", **meta) == [{"filepath": "x", "status": "unchanged"}]
    assert add("x", "coffee", **meta) == [{"filepath": "x", "status": "replaced"}]
    assert live.service.backend.get("x").metadata == {"k": 1}
    assert add("y", "coffee", report="1") == [{"filepath": "y", "status": "added"}]
    refused = live.call(
        "POST",
        "/add",
        files={"image": photo_bytes["coffee"]},
        data={"filepath": "z", "report": "maybe"},
    )
    assert refused.status_code == 400 and "report" in refused.json()["error"][0]
    assert ok(live.call("GET", "/count"), "count") == [2]


def test_extensions_limit_min_score_filepath_and_filter(live, photo_bytes, edit):
    variants = {
        "big": (photo_bytes["coffee"], {"shop": "north"}),
        "small": (edit("coffee", lambda im: im.resize((200, 133))), {"shop": "south"}),
        "jpeg": (edit("coffee", lambda im: im, quality=30), {"shop": "south"}),
    }
    for name, (content, meta) in variants.items():
        live.call(
            "POST",
            "/add",
            files={"image": content},
            data={"filepath": name, "metadata": json.dumps(meta)},
        )
    query = {"image": photo_bytes["coffee"]}
    everything = ok(live.call("POST", "/search", files=query), "search")
    assert len(everything) == 3 and everything[0]["filepath"] == "big"
    assert all(
        set(r) >= {"score", "filepath", "metadata", "distance", "orientation"} for r in everything
    )
    assert all(r["score"] == pytest.approx(100 * (1 - r["distance"])) for r in everything)
    one = ok(live.call("POST", "/search", files=query, data={"limit": "1"}), "search")
    assert one == everything[:1]
    strict = everything[1]["score"]
    high = ok(live.call("POST", "/search", files=query, data={"min_score": str(strict)}), "search")
    assert [r["filepath"] for r in high] == [r["filepath"] for r in everything[:2]]
    south = ok(
        live.call("POST", "/search", files=query, data={"filter": json.dumps({"shop": "south"})}),
        "search",
    )
    assert {r["filepath"] for r in south} == {"small", "jpeg"}
    stored = ok(live.call("POST", "/search", data={"filepath": "big"}), "search")
    assert stored[0]["filepath"] == "big" and stored[0]["score"] == 100.0


def test_answers_equal_the_service_layer(live, photo_bytes, edit, tmp_path):
    """The same sequence through HTTP and through the service gives the same answers."""
    from lookalike import Settings
    from lookalike.service import Lookalike

    direct = Lookalike(Settings(backend="sqlite:///" + str(tmp_path / "direct.db")))
    steps = [
        ("add", "a", photo_bytes["chelsea"]),
        ("add", "b", photo_bytes["coffee"]),
        ("add", "c", edit("chelsea", lambda im: im.resize((225, 150)))),
        ("delete", "b", None),
    ]
    for op, name, content in steps:
        if op == "add":
            live.call("POST", "/add", files={"image": content}, data={"filepath": name})
            direct.add(name, content)
        else:
            live.call("DELETE", "/delete", data={"filepath": name})
            direct.delete(name)
    for query in (
        photo_bytes["chelsea"],
        photo_bytes["coffee"],
        edit("chelsea", lambda im: im.rotate(180)),
    ):
        over_http = ok(live.call("POST", "/search", files={"image": query}), "search")
        assert over_http == [m.to_json() for m in direct.search(query)]
    assert ok(live.call("GET", "/count"), "count") == [direct.count()]
    assert ok(live.call("GET", "/list"), "list") == direct.list()
    compared = ok(
        live.call(
            "POST",
            "/compare",
            files={"image1": photo_bytes["chelsea"], "image2": photo_bytes["coffee"]},
        ),
        "compare",
    )
    assert (
        compared[0]["score"] == direct.compare(photo_bytes["chelsea"], photo_bytes["coffee"]).score
    )
    direct.close()


def test_openapi_documents_every_endpoint_and_extension(live):
    schema = live.call("GET", "/openapi.json").json()
    paths = schema["paths"]
    assert {"/add", "/delete", "/search", "/compare", "/count", "/list", "/ping"} <= set(paths)
    search_form = json.dumps(paths["/search"])
    for parameter in ("limit", "min_score", "filepath", "filter", "all_orientations"):
        assert parameter in json.dumps(schema["components"]) or parameter in search_form


def test_docs_page_is_served(live):
    page = live.call("GET", "/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "/openapi.json" in page.text


def test_docs_page_works_offline_and_behind_the_key(start_server):
    """Every script and stylesheet /docs loads comes from this server (nothing from a
    CDN), and loads without the API key, like /docs itself."""
    live = start_server(api_key="k")
    page = live.call("GET", "/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by lookalike"
        loaded = live.call("GET", asset)
        assert loaded.status_code == 200 and len(loaded.content) > 1000, asset
    assert live.call("GET", "/count").status_code == 401  # the key still guards the API


def test_stats_endpoint(live, photo_bytes):
    live.call("POST", "/add", files={"image": photo_bytes["coins"]}, data={"filepath": "c"})
    facts = ok(live.call("GET", "/stats"), "stats")[0]
    assert facts["count"] == 1 and facts["backend"] == "sqlite"
    assert facts["memory_bytes"] >= 648
