"""The search index of a SQLite store, kept in files beside the database.

    lookalike.db.index/
        CURRENT            the name of the published generation, replaced atomically
        build.lock         held (flock) by whoever is building a generation
        build.log          what background builds printed
        g<version>-<ns>/   one generation: the IvfIndex arrays and header.json

A generation is an :class:`IvfIndex` of every row at one version of the database, with a
header naming that version and the database's identity. It is written into a fresh
folder and synced before ``CURRENT`` points at it, so a crash mid-build leaves the last
published generation in place. Processes memory-map the published generation; each
checks it against the database (``check``) before trusting it.

``python -m lookalike.backends.sqlite signatures DATABASE`` builds and publishes a
generation — that is how a store starts a build in the background.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...signature import LENGTH
from .ivf import IvfIndex

__all__ = ["IndexFolder", "build", "check"]

log = logging.getLogger(__name__)

_SAMPLE = 64  # rows compared with the database when a generation is opened
_RETRY_SECONDS = 60.0  # a process starts at most one background build this often
_BUILDER = __name__.rpartition(".")[0]  # the package: its __main__ builds a generation


class Saveable(Protocol):
    def save(self, directory: str | Path, **header: Any) -> None: ...


class IndexFolder:
    """The folder of index generations beside one database file.

    ``suffix`` names the folder (``.index`` for signatures, ``.embeddings`` for the
    embedding index); ``kind`` is what ``python -m lookalike.backends.sqlite KIND DATABASE``
    builds in the background (``signatures`` or ``embeddings``)."""

    def __init__(
        self, database: str | Path, *, suffix: str = ".index", kind: str = "signatures"
    ) -> None:
        self.database = Path(database)
        self.path = self.database.with_name(self.database.name + suffix)
        self.kind = kind
        self._builder: subprocess.Popen[bytes] | None = None
        self._started = -_RETRY_SECONDS

    def current(self) -> str | None:
        """The name of the published generation, if any."""
        try:
            return (self.path / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def open(self, name: str) -> tuple[IvfIndex, dict[str, Any]]:
        """Load a generation (checksums verified); ValueError if it is unusable."""
        return IvfIndex.load(self.path / name)

    def publish(self, index: Saveable, header: dict[str, Any]) -> str:
        """Write a new generation, point CURRENT at it, and remove older ones."""
        name = f"g{header['version']}-{time.time_ns()}"
        index.save(self.path / name, **header)
        pointer = self.path / "CURRENT.tmp"
        with open(pointer, "w") as file:
            file.write(name)
            file.flush()
            os.fsync(file.fileno())
        os.replace(pointer, self.path / "CURRENT")
        _sync_folder(self.path)
        # Processes still mapping an older generation keep reading it after the unlink.
        for old in self.path.glob("g*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return name

    @contextlib.contextmanager
    def lock(self, *, wait: bool) -> Iterator[bool]:
        """Hold the build lock; yields False at once if another process holds it and
        ``wait`` is false."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "build.lock", "a") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def building(self) -> bool:
        """True while some process holds the build lock."""
        if not self.path.exists():
            return False
        with self.lock(wait=False) as acquired:
            return not acquired

    def build_in_background(self) -> bool:
        """Start a builder process unless one is running or this process started one
        lately (a build that fails is not retried in a loop); True if one was started."""
        if time.monotonic() - self._started < _RETRY_SECONDS or self.building():
            return False
        self._started = time.monotonic()
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "build.log", "ab") as log_file:
            self._builder = subprocess.Popen(
                [sys.executable, "-m", _BUILDER, self.kind, str(self.database)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the server spares the build
            )
        # Reap the builder whenever it ends, even after this store is closed and gone.
        threading.Thread(target=self._builder.wait, name="index-build", daemon=True).start()
        log.info("building the search index of %s in process %d", self.database, self._builder.pid)
        return True


def build(database: str | Path, *, nlist: int | None = None) -> dict[str, Any]:
    """Build and publish a generation from the rows as they are now; returns its header.

    Waits for any other build to finish first. Reads the rows in one read transaction,
    so the index is exactly the database at the version it names."""
    folder = IndexFolder(database)
    with folder.lock(wait=True):
        started = time.perf_counter()
        ids, signatures, facts = _read_rows(folder.database)
        if not len(ids):
            raise ValueError("the store is empty: there is nothing to index")
        index = IvfIndex.build(signatures, ids, nlist=nlist)
        del signatures
        header = {
            **facts,
            "count": len(ids),
            "built": time.time(),
            "build_seconds": time.perf_counter() - started,
        }
        header["name"] = folder.publish(index, header)
        return header


def generation_problem(
    db: sqlite3.Connection, header: dict[str, Any], version: int, pruned: int
) -> str | None:
    """Why a saved generation of any derived index cannot follow this database, from its
    header alone, or None: it must come from this database (same identity), from a
    version the database has passed, and the changes since must still be logged."""
    (identity,) = db.execute("SELECT value FROM lookalike WHERE key = 'identity'").fetchone()
    if header.get("identity") != identity:
        return "it was built from another database"
    built = header.get("version")
    if not isinstance(built, int) or built > version:
        return f"it is of version {built}, newer than the database's {version} (a restored backup?)"
    if built < pruned:
        return f"the changes since its version {built} are no longer logged"
    return None


def check(
    db: sqlite3.Connection, index: IvfIndex, header: dict[str, Any], version: int, pruned: int
) -> str | None:
    """Why this generation cannot serve the database as it is now, or None if it can.

    Call inside a read transaction. The index must come from this database (same
    identity), from a version it has passed and whose changes since are still logged,
    and a sample of its rows must equal the database's rows of that version."""
    problem = generation_problem(db, header, version, pruned)
    if problem is not None:
        return problem
    built = header["version"]
    rng = np.random.default_rng()
    positions = rng.choice(len(index), size=min(_SAMPLE, len(index)), replace=False)
    wanted = {int(index.keys[p]): int(p) for p in positions}
    marks = ",".join("?" * len(wanted))
    rows = db.execute(
        f"SELECT id, signature FROM images WHERE id IN ({marks}) AND version <= ?",
        (*wanted, built),
    ).fetchall()
    for row_id, blob in rows:
        if bytes(index.rows[wanted[row_id]]) != blob:
            return f"its row for id {row_id} differs from the database's"
    return None


def _read_rows(database: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    db = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN")
        facts = dict(db.execute("SELECT key, value FROM lookalike").fetchall())
        (count,) = db.execute("SELECT count(*) FROM images").fetchone()
        ids = np.empty(count, dtype=np.int64)
        signatures = np.empty((count, LENGTH), dtype=np.int8)
        cursor = db.execute("SELECT id, signature FROM images ORDER BY id")
        done = 0
        while batch := cursor.fetchmany(10_000):
            ids[done : done + len(batch)] = [row_id for row_id, _ in batch]
            block = b"".join(blob for _, blob in batch)
            signatures[done : done + len(batch)] = np.frombuffer(block, np.int8).reshape(-1, LENGTH)
            done += len(batch)
        db.execute("COMMIT")
    finally:
        db.close()
    return ids, signatures, {"version": facts["version"], "identity": facts["identity"]}


def _sync_folder(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def run_build(build: Callable[[str], dict[str, Any]], what: str, database: str) -> int:
    """A background index build: one line of outcome for the build log, and the exit
    code, 0 or 1 (not built)."""
    try:
        header = build(database)
    except (ValueError, OSError, sqlite3.Error) as error:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} index not built: {error}", flush=True)
        return 1
    print(
        f"{time.strftime('%Y-%m-%dT%H:%M:%S')} built {header['name']}: {header['count']} {what}"
        f" in {header['build_seconds']:.1f} s",
        flush=True,
    )
    return 0
