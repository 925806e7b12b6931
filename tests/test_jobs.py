"""Background jobs on a real folder, with real threads: what one worker starts, every
worker (here, a second ``Jobs`` on the same folder) sees, pages and cancels."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends.support import perturb, random_signatures

from lookalike.backends.sqlite import SQLiteBackend
from lookalike.config import Settings
from lookalike.errors import InvalidRequest, NotFound
from lookalike.jobs import Jobs, Progress
from lookalike.records import Record
from lookalike.service import Lookalike


def wait_for(jobs: Jobs, job: str, *states: str, seconds: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while (state := jobs.get(job))["state"] not in states:
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def test_a_job_is_seen_paged_and_cancelled_from_another_worker(tmp_path: Path) -> None:
    mine, theirs = Jobs(tmp_path / "jobs"), Jobs(tmp_path / "jobs")
    reported = threading.Event()

    def work(progress: Progress) -> tuple[list[Any], dict[str, Any]]:
        for step in range(1, 1000):
            progress(step, 1000)
            reported.set()
            time.sleep(0.01)
        return [], {}

    job = mine.start("test", work, {"n": 1})
    assert reported.wait(10)
    running = wait_for(theirs, job, "running")
    assert running["options"] == {"n": 1} and running["kind"] == "test"
    time.sleep(1.2)  # a running job writes its progress every second
    assert 0 < theirs.get(job)["fraction"] < 1
    assert theirs.cancel(job)["state"] == "running"
    cancelled = wait_for(mine, job, "cancelled")
    assert cancelled["done"] < 999 and "finished" in cancelled


def test_results_are_paged_and_failures_are_states(tmp_path: Path) -> None:
    jobs = Jobs(tmp_path)
    done = jobs.start("test", lambda progress: ([{"i": i} for i in range(250)], {"x": 1}), {})
    state = wait_for(jobs, done, "done")
    assert (state["count"], state["x"], len(state["results"])) == (250, 1, 100)
    page = jobs.get(done, offset=240, limit=100)
    assert page["results"] == [{"i": i} for i in range(240, 250)] and page["offset"] == 240
    assert jobs.cancel(done)["state"] == "done"  # finished: left as it is

    def broken(progress: Progress) -> tuple[list[Any], dict[str, Any]]:
        raise InvalidRequest("the store went away")

    failed = wait_for(jobs, jobs.start("test", broken, {}), "failed")
    assert failed["error"] == "the store went away"


def test_a_job_whose_process_stopped_is_lost_and_bad_ids_are_not_found(tmp_path: Path) -> None:
    jobs = Jobs(tmp_path)
    stale = {"id": "0123456789abcdef", "kind": "test", "state": "running", "done": 1,
             "total": 2, "started": 0.0, "updated": time.time() - 3600, "options": {}}  # fmt: skip
    (tmp_path / "0123456789abcdef.json").write_text(json.dumps(stale))
    assert jobs.get("0123456789abcdef")["state"] == "lost"
    for bad in ("ffffffffffffffff", "../../etc/passwd", ""):
        with pytest.raises(NotFound):
            jobs.get(bad)


class Held(SQLiteBackend):
    """A real SQLite store whose column read waits until the test lets it go: only to
    put a write between a job's start and its reading of the store."""

    release = threading.Event()

    def _vectors_trusted(self, column: str, where: Any) -> Any:
        assert self.release.wait(30)
        return super()._vectors_trusted(column, where)


def test_a_duplicates_job_says_when_the_store_changed(tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    store = Held(tmp_path / "store.db")
    sigs = random_signatures(rng, 4)
    sigs[1] = perturb(rng, sigs[0], 0.05)
    store.add_many(Record(f"img{i}", sigs[i]) for i in range(4))
    with Lookalike(Settings(backend="memory://"), backend=store) as service:
        assert service.jobs.folder == tmp_path / "store.db.jobs"
        Held.release.set()
        quiet = wait_for(service.jobs, service.start_duplicates(), "done")
        assert quiet["store_changed"] is False
        assert [g["keep"] for g in quiet["results"]] == ["img0"]
        Held.release.clear()
        job = service.start_duplicates(min_score=90.0, keep="newest")
        store.add(Record("img4", sigs[0]))
        Held.release.set()
        changed = wait_for(service.jobs, job, "done")
        assert changed["store_changed"] is True
        assert changed["options"] == {"min_score": 90.0, "keep": "newest"}
        with pytest.raises(InvalidRequest, match="keep"):
            service.start_duplicates(keep="biggest")
