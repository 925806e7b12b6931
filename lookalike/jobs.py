"""Background jobs (the duplicates of a whole collection, a batch of images to add):
started by one worker, seen by every worker of the service.

A job runs in a thread of the process that started it and keeps its state in a folder
that all the service's processes share (``Settings.jobs_dir``): ``<id>.json`` (state,
progress, times, error), rewritten atomically as it goes, and ``<id>.result.json`` once
done. Any worker answers ``GET /jobs/<id>`` from those files; a ``DELETE`` leaves
``<id>.cancel``, which the running job sees at its next step. A running job whose state
has not moved for ``STALE_SECONDS`` lost its process (a restart): it says so.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import metrics
from .errors import InvalidRequest, NotFound

__all__ = ["Cancelled", "Jobs", "Progress", "Work"]

STALE_SECONDS = 120.0
_BEAT = 1.0  # seconds between two writes of a running job's progress
Progress = Callable[[int, int], None]
Work = Callable[[Progress], tuple[list[Any], dict[str, Any]]]


class Cancelled(Exception):
    """Raised in a job's thread at its next step after it was cancelled."""


class Jobs:
    """The jobs kept in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self, kind: str, work: Work, facts: dict[str, Any]) -> str:
        """Run ``work(progress)`` in a thread; returns the job's id at once. ``facts``
        (the request's options) are kept with its state; ``work`` returns its results and
        facts to add to the state when it is done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        job_id = secrets.token_hex(8)
        state = {"id": job_id, "kind": kind, "state": "running", "done": 0, "total": 0}
        state |= {"started": time.time(), "updated": time.time(), "options": facts}
        self._write(job_id, state)
        metrics.JOBS.labels(kind, "started").inc()
        thread = threading.Thread(
            target=self._run, args=(job_id, state, work), name=f"job-{job_id}", daemon=True
        )
        thread.start()
        return job_id

    def get(self, job_id: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """The job's state; when done, ``limit`` of its results from ``offset``."""
        state = self._read(job_id)
        if state["state"] == "running" and time.time() - state["updated"] > STALE_SECONDS:
            state = {**state, "state": "lost", "error": "the process running it stopped"}
        state["fraction"] = state["done"] / state["total"] if state["total"] else 0.0
        if state["state"] == "done":
            results = json.loads(self._path(job_id, ".result.json").read_text())
            state["count"] = len(results)
            state["results"] = results[offset : offset + limit]
            state["offset"] = offset
        return state

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask the job to stop (a finished one is left as it is); returns its state."""
        state = self._read(job_id)
        if state["state"] == "running":
            self._path(job_id, ".cancel").touch()
        return state

    # -- internals ------------------------------------------------------------------------

    def _run(self, job_id: str, state: dict[str, Any], work: Work) -> None:
        last = 0.0
        cancel = self._path(job_id, ".cancel")

        def progress(done: int, total: int) -> None:
            nonlocal last
            if cancel.exists():
                raise Cancelled
            state.update(done=done, total=total)
            if time.monotonic() - last >= _BEAT:
                last = time.monotonic()
                state["updated"] = time.time()
                self._write(job_id, state)

        try:
            results, found = work(progress)
        except Cancelled:
            state.update(state="cancelled")
        except Exception as error:
            state.update(state="failed", error=str(error) or type(error).__name__)
        else:
            temporary = self._path(job_id, ".result.json.tmp")
            temporary.write_text(json.dumps(results, ensure_ascii=False))
            os.replace(temporary, self._path(job_id, ".result.json"))
            state.update(found, state="done", done=state["total"] or state["done"])
        state.update(finished=time.time(), updated=time.time())
        self._write(job_id, state)
        metrics.JOBS.labels(state["kind"], state["state"]).inc()
        cancel.unlink(missing_ok=True)

    def _path(self, job_id: str, suffix: str) -> Path:
        if not (len(job_id) == 16 and all(c in "0123456789abcdef" for c in job_id)):
            raise NotFound(f"no job {job_id!r}")
        return self.folder / f"{job_id}{suffix}"

    def _read(self, job_id: str) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self._path(job_id, ".json").read_text())
        except FileNotFoundError:
            raise NotFound(f"no job {job_id!r}") from None
        except (OSError, ValueError) as error:
            raise InvalidRequest(f"job {job_id!r} cannot be read: {error}") from None
        return state

    def _write(self, job_id: str, state: dict[str, Any]) -> None:
        temporary = self._path(job_id, ".json.tmp")
        temporary.write_text(json.dumps(state, ensure_ascii=False))
        os.replace(temporary, self._path(job_id, ".json"))
