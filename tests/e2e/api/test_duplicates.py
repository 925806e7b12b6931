"""``POST /duplicates``, ``/jobs/<id>`` and ``/distinct`` on real servers on 127.0.0.1:
two servers over one SQLite file stand for two workers of one service."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from conftest import photo
from PIL import Image

from .conftest import Live


def jpeg(name: str, scale: float = 1.0, turn: bool = False) -> bytes:
    image = Image.fromarray(photo(name))
    if scale != 1.0:
        image = image.resize((int(image.width * scale), int(image.height * scale)))
    if turn:
        image = image.rotate(90, expand=True)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def finished(live: Live, job: str, **params: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        answer = live.call("GET", f"/jobs/{job}", params=params)
        assert answer.status_code == 200, answer.text
        [state] = answer.json()["result"]
        if state["state"] != "running":
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def test_a_duplicates_job_from_start_to_groups(start_server: Callable[..., Live]) -> None:
    first = start_server()
    for path, content in {
        "astronaut.jpg": jpeg("astronaut"),
        "astronaut-small.jpg": jpeg("astronaut", 0.5),
        "astronaut-turned.jpg": jpeg("astronaut", turn=True),
        "coffee.jpg": jpeg("coffee"),
        "coffee-small.jpg": jpeg("coffee", 0.5),
        "rocket.jpg": jpeg("rocket"),
    }.items():
        added = first.call("POST", "/add", data={"filepath": path}, files={"image": content})
        assert added.status_code == 200, added.text
    second = start_server(backend=first.service.settings.backend)  # another worker

    started = first.call("POST", "/duplicates", data={"keep": "largest"})
    assert started.status_code == 202 and started.json()["status"] == "ok"
    [answer] = started.json()["result"]
    job = answer["job"]
    state = finished(second, job)  # followed from the other worker
    assert state["state"] == "done" and state["store_changed"] is False
    assert state["count"] == 2 and state["fraction"] == 1.0
    astronaut, coffee = state["results"]
    assert astronaut["keep"] == "astronaut.jpg"
    assert [m["filepath"] for m in astronaut["members"]] == [
        "astronaut.jpg",
        "astronaut-turned.jpg",
        "astronaut-small.jpg",
    ]
    assert astronaut["members"][1]["orientation"] == "rot90"
    assert coffee["keep"] == "coffee.jpg" and coffee["members"][1]["width"] == 300
    [page] = second.call("GET", f"/jobs/{job}", params={"offset": 1, "limit": 1}).json()["result"]
    assert [g["keep"] for g in page["results"]] == ["coffee.jpg"] and page["count"] == 2

    # "not a duplicate": marked on one worker, honoured by the next job on the other
    marked = second.call(
        "POST", "/distinct", data={"first": "coffee.jpg", "second": "coffee-small.jpg"}
    )
    assert marked.status_code == 200, marked.text
    assert first.call("GET", "/distinct").json()["result"] == [["coffee-small.jpg", "coffee.jpg"]]
    again = first.call("POST", "/duplicates").json()["result"][0]["job"]
    assert [g["keep"] for g in finished(first, again)["results"]] == ["astronaut.jpg"]
    unmarked = first.call(
        "DELETE", "/distinct", data={"first": "coffee-small.jpg", "second": "coffee.jpg"}
    )
    assert unmarked.status_code == 200 and first.call("GET", "/distinct").json()["result"] == []


def test_bad_requests_are_answered_in_the_envelope(start_server: Callable[..., Live]) -> None:
    live = start_server()
    for data, message in (
        ({"keep": "biggest"}, "keep must be one of"),
        ({"min_score": "120"}, "min_score"),
        ({"min_size": "1"}, "min_size"),
        ({"filter": "[1]"}, "filter"),
    ):
        answer = live.call("POST", "/duplicates", data=data)
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["status"] == "fail" and message in body["error"][0]
    missing = live.call("GET", "/jobs/0123456789abcdef")
    assert missing.status_code == 404 and missing.json()["status"] == "fail"
    assert live.call("DELETE", "/jobs/not-a-job").status_code == 404
    nobody = live.call("POST", "/distinct", data={"first": "a.jpg", "second": "b.jpg"})
    assert nobody.status_code == 404 and "a.jpg" in nobody.json()["error"][0]
    assert live.call("POST", "/distinct", data={"first": "a.jpg"}).status_code == 400
    assert live.call("GET", "/ping").status_code == 200  # still up
