"""The derived indices of a SQLite store, kept in folders beside the database.

    lookalike.db.index/        the signatures' IVF index (``.embeddings``: the HNSW one)
        CURRENT            the name of the published generation, replaced atomically
        build.lock         held (flock) by whoever is building a generation
        build.log          what background builds printed
        g<version>-<ns>/   one generation: the index's files and header.json

A generation is an index of one column's values at one version of the database, with a
header naming that version and the database's identity. It is written into a fresh
folder and synced before ``CURRENT`` points at it, so a crash mid-build leaves the last
published generation in place. Processes memory-map the published generation; each
checks it against the database (``check``) before trusting it.

``python -m lookalike.backends.sqlite KIND DATABASE`` builds and publishes a generation —
that is how a store starts a build in the background.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "Column",
    "Index",
    "IndexFolder",
    "Kind",
    "check",
    "read_values",
    "snapshot",
    "write_header",
]

Ids = npt.NDArray[np.int64]

log = logging.getLogger(__name__)

SAMPLE = 64  # rows compared with the database when a generation is opened
_RETRY_SECONDS = 60.0  # a process starts at most one background build this often
_BUILDER = __name__.rpartition(".")[0]  # the package: its __main__ builds a generation


@dataclass(frozen=True)
class Column:
    """A column of the ``images`` table that an index is derived from."""

    name: str  # "signature" or "embedding"
    dtype: str  # of its values, as stored: "i1" or "<f2"
    width: int  # values per row
    nullable: bool  # may a row have none (no embedding)?

    def decode(self, blob: bytes) -> npt.NDArray[Any]:
        """The values of many rows, from their column values joined."""
        return np.frombuffer(blob, dtype=self.dtype).reshape(-1, self.width)

    def encode(self, value: npt.ArrayLike) -> bytes:
        """The column value of one row's values."""
        return np.asarray(value).astype(self.dtype).tobytes()


class Index(Protocol):
    """What a generation holds: an ``IvfIndex`` or an ``HnswIndex``, keyed by row id."""

    @property
    def keys(self) -> Ids: ...

    @property
    def nbytes(self) -> int: ...

    def __len__(self) -> int: ...

    def values(self, keys: Ids) -> npt.NDArray[Any]:
        """The stored values of these keys (all in the index), exactly."""
        ...

    def save(self, directory: str | Path, **header: Any) -> None: ...


@dataclass(frozen=True)
class Kind:
    """One derived index: its name (``python -m lookalike.backends.sqlite NAME DATABASE``
    builds it), its folder's suffix, the column it follows, how a saved generation is
    loaded (ValueError if it is unusable) and how one is built and published."""

    name: str
    suffix: str
    column: Column
    load: Callable[[Path], tuple[Any, dict[str, Any]]]
    build: Callable[[Path], dict[str, Any]]


class IndexFolder:
    """The folder of one kind of index generations beside one database file."""

    def __init__(self, database: str | Path, kind: Kind) -> None:
        self.database = Path(database)
        self.kind = kind
        self.path = self.database.with_name(self.database.name + kind.suffix)
        self._builder: subprocess.Popen[bytes] | None = None
        self._started = -_RETRY_SECONDS

    def current(self) -> str | None:
        """The name of the published generation, if any."""
        try:
            return (self.path / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def open(self, name: str) -> tuple[Any, dict[str, Any]]:
        """Load a generation (the index and its header); ValueError if it is unusable."""
        return self.kind.load(self.path / name)

    def build(self, make: Callable[[], tuple[Index, dict[str, Any]]]) -> dict[str, Any]:
        """Build a generation and publish it; returns its header.

        Waits for any other build of this folder to finish first. ``make`` reads the
        rows in one read transaction (``snapshot``) and returns the index with the facts
        of the version it saw, so the index is exactly the database at that version."""
        with self.lock(wait=True):
            started = time.perf_counter()
            index, facts = make()
            header = {
                **facts,
                "count": len(index),
                "built": time.time(),
                "build_seconds": time.perf_counter() - started,
            }
            header["name"] = self.publish(index, header)
            return header

    def publish(self, index: Index, header: dict[str, Any]) -> str:
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
                [sys.executable, "-m", _BUILDER, self.kind.name, str(self.database)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the server spares the build
            )
        # Reap the builder whenever it ends, even after this store is closed and gone.
        threading.Thread(target=self._builder.wait, name="index-build", daemon=True).start()
        log.info(
            "building the %s index of %s in process %d",
            self.kind.name,
            self.database,
            self._builder.pid,
        )
        return True


@contextlib.contextmanager
def snapshot(database: Path) -> Iterator[tuple[sqlite3.Connection, dict[str, Any]]]:
    """A read transaction on a connection of its own, and the facts of the version it
    sees (``version``, ``identity``), for a header: every read in it sees that version."""
    db = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN")
        facts = dict(db.execute("SELECT key, value FROM lookalike").fetchall())
        yield db, {"version": facts["version"], "identity": facts["identity"]}
        db.execute("COMMIT")
    finally:
        db.close()


def read_values(
    db: sqlite3.Connection, column: Column, batch: int = 10_000
) -> Iterator[tuple[Ids, npt.NDArray[Any]]]:
    """The row ids and values of a column, NULLs left out, in id order, in batches."""
    rows = db.execute(
        f"SELECT id, {column.name} FROM images WHERE {column.name} IS NOT NULL ORDER BY id"
    )
    while chunk := rows.fetchmany(batch):
        ids = np.fromiter((row_id for row_id, _ in chunk), dtype=np.int64, count=len(chunk))
        yield ids, column.decode(b"".join(blob for _, blob in chunk))


def check(
    db: sqlite3.Connection,
    column: Column,
    index: Index,
    header: dict[str, Any],
    version: int,
    pruned: int,
) -> str | None:
    """Why this generation cannot serve the database as it is now, or None if it can.

    Call inside a read transaction. The index must come from this database (same
    identity), from a version it has passed and whose changes since are still logged,
    and a sample of its values must equal the database's rows of that version."""
    (identity,) = db.execute("SELECT value FROM lookalike WHERE key = 'identity'").fetchone()
    if header.get("identity") != identity:
        return "it was built from another database"
    built = header.get("version")
    if not isinstance(built, int) or built > version:
        return f"it is of version {built}, newer than the database's {version} (a restored backup?)"
    if built < pruned:
        return f"the changes since its version {built} are no longer logged"
    keys = index.keys
    sample = np.random.default_rng().choice(keys, size=min(SAMPLE, len(keys)), replace=False)
    marks = ",".join("?" * len(sample))
    rows = db.execute(
        f"SELECT id, {column.name} FROM images WHERE id IN ({marks}) AND version <= ?",
        (*sample.tolist(), built),
    ).fetchall()
    unchanged = [(row_id, blob) for row_id, blob in rows if blob is not None]
    stored = index.values(np.array([row_id for row_id, _ in unchanged], dtype=np.int64))
    for (row_id, blob), value in zip(unchanged, stored, strict=True):
        if column.encode(value) != blob:
            return f"its {column.name} for id {row_id} differs from the database's"
    return None


def write_header(directory: Path, facts: dict[str, Any]) -> None:
    """Write a generation's header.json, synced: last, once its files are synced."""
    with open(directory / "header.json", "w") as file:
        file.write(json.dumps(facts))
        file.flush()
        os.fsync(file.fileno())


def _sync_folder(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
