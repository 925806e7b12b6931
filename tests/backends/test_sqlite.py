"""What the SQLite store promises beyond the contract: durable writes, one file shared by
processes, a search state rebuilt from the file, and a small memory footprint."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.backends import open_backend
from lookalike.backends.sqlite import SQLiteBackend
from lookalike.backends.sqlite import store as sqlite_store
from lookalike.config import Settings
from lookalike.errors import BackendUnavailable, ConfigError, InvalidRequest
from lookalike.records import Record

from .conftest import sqlite_url
from .support import (
    Mirror,
    batch_sizes,
    found,
    numbered_signature,
    perturb,
    random_signatures,
)

SUPPORT = str(Path(__file__).with_name("support.py"))
EVERYTHING = 10**9
TIMEOUT = 60.0


class Lines:
    """The stdout lines of a process, read by a thread so that each wait can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def next(self, deadline: float) -> str:
        try:
            line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("the worker did not answer in time") from None
        if line is None:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"the worker exited early:\n{stderr}")
        return line


@contextlib.contextmanager
def worker(*args: str) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """``python support.py ARGS…``, killed on the way out whatever happens."""
    process = subprocess.Popen(
        [sys.executable, SUPPORT, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        yield process, Lines(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=TIMEOUT)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        (result,) = db.execute("PRAGMA integrity_check").fetchone()
    finally:
        db.close()
    return str(result)


# -- durability --------------------------------------------------------------------------


def test_a_backup_taken_while_writing_holds_every_acknowledged_write(tmp_path: Path) -> None:
    """``lookalike backup`` (a process of its own) while another process writes: the copy
    is whole, holds every write acknowledged before the backup began, in order, and the
    writer was not stopped; the copy opens as a store and is searched."""
    path, copy = tmp_path / "store.db", tmp_path / "backup" / "copy.db"
    copy.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    with worker("write", str(path), "0") as (process, lines):
        deadline = time.monotonic() + TIMEOUT
        before = [lines.next(deadline) for _ in range(300)]
        done = subprocess.run(
            [sys.executable, "-m", "lookalike", "--store", sqlite_url(path), "backup", str(copy)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        facts = json.loads(done.stdout)
        while int(lines.next(deadline)[2:]) <= facts["images"]:
            pass  # it writes on, beyond what the copy holds
        os.kill(process.pid, signal.SIGKILL)
    assert facts["backup"] == str(copy) and facts["images"] >= len(before)
    assert integrity(copy) == "ok"
    assert not copy.with_name("copy.db.partial").exists()
    assert not copy.with_name("copy.db-wal").exists()  # one self-contained file
    restored = SQLiteBackend(copy)
    try:
        count = restored.count()
        assert count == facts["images"]
        assert restored.list(0, EVERYTHING) == [f"w-{i}" for i in range(count)]
        for i in (0, len(before) - 1, count - 1):
            record = restored.get(f"w-{i}")
            assert record is not None and record.metadata == {"i": i}
            assert record.signature.tobytes() == numbered_signature(i).tobytes()
        sig = numbered_signature(len(before) - 1)
        assert found(restored.search(sig, limit=1, max_distance=0.01))[0][0] == before[-1]
    finally:
        restored.close()


def test_a_backup_is_refused_where_it_cannot_be_made(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteBackend(path)
    try:
        with pytest.raises(InvalidRequest, match="overwrite the store itself"):
            store.backup(path)
        with pytest.raises(BackendUnavailable, match="cannot back up"):
            store.backup(tmp_path / "missing-folder" / "copy.db")
        assert not (tmp_path / "missing-folder").exists()
    finally:
        store.close()
    with pytest.raises(ConfigError, match="lookalike export"):
        open_backend("memory://", Settings()).backup(tmp_path / "copy.db")


def test_acknowledged_writes_survive_a_kill(tmp_path: Path) -> None:
    """A writer killed with SIGKILL loses nothing it acknowledged and tears no batch."""
    path = tmp_path / "store.db"
    stored = 0
    for _ in range(3):  # kill, reopen, write on, kill again
        acknowledged: list[str] = []
        with worker("write", str(path), str(stored)) as (process, lines):
            deadline = time.monotonic() + TIMEOUT
            while len(acknowledged) < 200:
                acknowledged.append(lines.next(deadline))
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL
        assert acknowledged[0] == f"w-{stored}"

        assert integrity(path) == "ok"
        store = SQLiteBackend(path)
        try:
            count = store.count()
            assert count >= stored + len(acknowledged)
            # whole batches only, in order, each with its signature
            boundaries = set()
            for numbers in batch_sizes(stored):
                boundaries.add(numbers.start)
                if numbers.start > count:
                    break
            assert count in boundaries
            paths = store.list(0, EVERYTHING)
            assert paths == [f"w-{i}" for i in range(count)]
            for i in [*range(stored, count), 0]:
                record = store.get(f"w-{i}")
                assert record is not None
                assert record.signature.tobytes() == numbered_signature(i).tobytes()
                assert record.metadata == {"i": i}
            for i in (stored, count - 1):
                sig = numbered_signature(i)
                assert found(store.search(sig, limit=1, max_distance=0.01)) == [(f"w-{i}", 0.0, 0)]
        finally:
            store.close()
        stored = count


# -- sharing one file --------------------------------------------------------------------


class Peer:
    """A SQLiteBackend in another process, driven through ``support.py serve``."""

    def __init__(self, process: subprocess.Popen[str], lines: Lines) -> None:
        self.process = process
        self.lines = lines

    def call(self, op: str, **arguments: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.lines.next(time.monotonic() + TIMEOUT))
        if "error" in reply:
            raise AssertionError(f"the peer failed: {reply['error']}")
        return reply["ok"]

    def add(self, path: str, sig: np.ndarray, metadata: Any = None) -> None:
        self.call("add", filepath=path, signature=sig.tolist(), metadata=metadata)

    def search(self, sig: np.ndarray, **options: Any) -> list[tuple[str, float, int]]:
        answer = self.call("search", queries=np.atleast_2d(sig).tolist(), **options)
        return [(path, distance, row) for path, distance, row, _ in answer]


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    with worker("serve", str(tmp_path / "shared.db")) as (process, lines):
        yield Peer(process, lines)


def test_writes_are_seen_by_another_process(
    tmp_path: Path, peer: Peer, rng: np.random.Generator
) -> None:
    local = SQLiteBackend(tmp_path / "shared.db")
    a, b, c = random_signatures(rng, 3)
    try:
        local.add(Record("a", a, {"by": "local"}))
        assert peer.call("count") == 1
        assert peer.call("list", offset=0, limit=10) == ["a"]
        assert peer.search(a, limit=5, max_distance=0.01) == [("a", 0.0, 0)]
        assert peer.call("get", filepath="a")["signature"] == a.tolist()

        peer.add("b", b, {"by": "peer"})
        assert local.count() == 2
        assert local.list() == ["a", "b"]
        assert found(local.search(b, limit=5, max_distance=0.01)) == [("b", 0.0, 0)]
        record = local.get("b")
        assert record is not None and record.metadata == {"by": "peer"}

        local.add(Record("a", c, {"by": "local", "v": 2}))  # a replace
        assert peer.search(c, limit=5, max_distance=0.01) == [("a", 0.0, 0)]
        assert peer.search(a, limit=5, max_distance=0.3) == []
        assert peer.call("search", queries=[c.tolist()], limit=5, max_distance=0.01)[0][3] == {
            "by": "local",
            "v": 2,
        }
        assert peer.call("list", offset=0, limit=10) == ["a", "b"]

        assert peer.call("delete", filepath="a") is True
        assert local.get("a") is None
        assert local.count() == 1
        assert local.list() == ["b"]
        assert local.search(c, limit=5, max_distance=0.3) == []
        assert local.delete("a") is False
    finally:
        local.close()


def test_random_interleaving_of_two_processes(
    tmp_path: Path, peer: Peer, rng: np.random.Generator
) -> None:
    """Random adds, replaces and deletes from either process; after each, the other one
    sees exactly what a dict would hold."""
    local = SQLiteBackend(tmp_path / "shared.db")
    mirror = Mirror()
    names = [f"n{i:02d}" for i in range(30)]
    try:
        for step in range(150):
            path = str(rng.choice(names))
            sig = random_signatures(rng, 1)[0]
            if path in mirror.records and rng.random() < 0.5:
                sig = perturb(rng, mirror.records[path][0], 0.05)
            here_writes = bool(step % 2)
            if rng.random() < 0.3:
                expected = mirror.delete(path)
                done = local.delete(path) if here_writes else peer.call("delete", filepath=path)
                assert done is expected
            else:
                metadata = {"step": step}
                mirror.add(path, sig, metadata)
                if here_writes:
                    local.add(Record(path, sig, metadata))
                else:
                    peer.add(path, sig, metadata)

            expected_search = mirror.search(sig, limit=5, max_distance=0.3)
            if here_writes:  # the other process reads
                assert peer.call("count") == len(mirror.records)
                assert peer.call("list", offset=0, limit=EVERYTHING) == list(mirror.records)
                assert peer.search(sig, limit=5, max_distance=0.3) == expected_search
                got = peer.call("get", filepath=path)
                if path in mirror.records:
                    assert got["signature"] == mirror.records[path][0].tolist()
                    assert got["metadata"] == mirror.records[path][1]
                else:
                    assert got is None
            else:
                assert local.count() == len(mirror.records)
                assert local.list(0, EVERYTHING) == list(mirror.records)
                assert found(local.search(sig, limit=5, max_distance=0.3)) == expected_search
                record = local.get(path)
                if path in mirror.records:
                    assert record is not None
                    assert record.signature.tobytes() == mirror.records[path][0].tobytes()
                    assert record.metadata == mirror.records[path][1]
                else:
                    assert record is None
    finally:
        local.close()


# -- the search state is derived from the file -------------------------------------------


def build(store: SQLiteBackend, mirror: Mirror, rng: np.random.Generator, n: int) -> None:
    sigs = random_signatures(rng, n)
    for i in range(0, n, 4):
        sigs[i + 1] = perturb(rng, sigs[i], 0.1)
    store.add_many(Record(f"r{i}", sig, {"i": i % 5}) for i, sig in enumerate(sigs))
    for i, sig in enumerate(sigs):
        mirror.add(f"r{i}", sig, {"i": i % 5})
    for i in rng.choice(n, size=n // 10, replace=False):
        sig = perturb(rng, sigs[i], 0.05)
        store.add(Record(f"r{i}", sig, {"i": -1}))
        mirror.add(f"r{i}", sig, {"i": -1})
    for i in rng.choice(n, size=n // 10, replace=False):
        assert store.delete(f"r{i}") is mirror.delete(f"r{i}")


def snapshot(store: SQLiteBackend, queries: np.ndarray) -> list[Any]:
    answers: list[Any] = [store.count(), store.list(0, EVERYTHING)]
    for query in queries:
        for where in (None, {"i": -1}, {"i": 2}):
            answers.append(
                [
                    (m.filepath, m.distance, m.orientation, m.metadata)
                    for m in store.search(query, limit=25, max_distance=0.45, where=where)
                ]
            )
    return answers


def test_reopen_rebuilds_the_same_state(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "store.db"
    mirror = Mirror()
    store = SQLiteBackend(path)
    build(store, mirror, rng, 2000)
    stored = [sig for sig, _ in mirror.records.values()]
    queries = np.stack([perturb(rng, stored[i], 0.05) for i in range(0, 400, 37)])
    before = snapshot(store, queries)
    assert before[0] == len(mirror.records)
    assert any(len(answer) > 1 for answer in before[2:])
    store.close()

    again = SQLiteBackend(path)
    try:
        assert snapshot(again, queries) == before
        for query in queries[:3]:
            assert found(again.search(query, limit=25, max_distance=0.45)) == mirror.search(
                query, limit=25, max_distance=0.45
            )
    finally:
        again.close()


@pytest.mark.slow
def test_a_store_far_behind_reloads_after_tombstones_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    """Tombstones are pruned every 1000 versions down to the newest ones; a process that
    has not caught up since then cannot learn every delete from them and must reload."""
    monkeypatch.setattr(sqlite_store, "TOMBSTONES_KEPT", 20)
    path = tmp_path / "store.db"
    writer = SQLiteBackend(path)
    behind = SQLiteBackend(path)
    recent = SQLiteBackend(path)
    mirror = Mirror()
    sigs = random_signatures(rng, 1300)
    try:
        writer.add_many(Record(f"r{i}", sig) for i, sig in enumerate(sigs))
        for i, sig in enumerate(sigs):
            mirror.add(f"r{i}", sig)
        assert behind.count() == 1300  # behind is up to date now, and then left alone

        for i in range(1100):  # one version each: the prune runs at version 1000
            assert writer.delete(f"r{i}") is mirror.delete(f"r{i}") is True
            if i == 995:  # recent catches up after the prune's cut, from tombstones
                assert recent.count() == len(mirror.records)
        db = sqlite3.connect(path)
        try:
            (pruned,) = db.execute("SELECT value FROM lookalike WHERE key = 'pruned'").fetchone()
            (tombstones,) = db.execute("SELECT count(*) FROM tombstones").fetchone()
        finally:
            db.close()
        assert 1 < pruned < 997, "the prune did not run where this test expects it"
        assert tombstones < 1100 - 900

        writer.add(Record("r5", sigs[5]))  # back again, at the end
        mirror.add("r5", sigs[5])
        for store in (behind, recent, writer):
            assert store.count() == len(mirror.records) == 201
            assert store.list(0, EVERYTHING) == list(mirror.records)
            for i in (0, 5, 899, 1099, 1100, 1299):
                assert found(store.search(sigs[i], limit=5, max_distance=0.01)) == mirror.search(
                    sigs[i], limit=5, max_distance=0.01
                )
    finally:
        for store in (writer, behind, recent):
            store.close()


@pytest.mark.slow
def test_compaction_keeps_answers_right(tmp_path: Path, rng: np.random.Generator) -> None:
    """Deleting most records compacts the search state; nothing visible changes."""
    path = tmp_path / "store.db"
    store = SQLiteBackend(path)
    other = SQLiteBackend(path)
    mirror = Mirror()
    try:
        build(store, mirror, rng, 2000)
        assert other.count() == store.count() == len(mirror.records)
        # a peek inside, to know that compaction did happen
        slots = store._signatures.exact.matrix.used
        for k, path_ in enumerate(list(mirror.records)[: len(mirror.records) - 300]):
            assert store.delete(path_) is mirror.delete(path_) is True
            if k % 250 == 0:  # catch up as we go, so that slots die after a compaction too
                assert store.count() == len(mirror.records)
        assert store.count() == other.count() == 300
        assert store._signatures.exact.matrix.used < slots - 1024, "store did not compact"
        assert other._signatures.exact.matrix.used == 300, "other did not compact"

        extra = random_signatures(rng, 50)
        for i, sig in enumerate(extra):
            store.add(Record(f"extra{i}", sig, {"i": 7}))
            mirror.add(f"extra{i}", sig, {"i": 7})
        survivor = next(iter(mirror.records))
        store.delete(survivor)
        store.add(Record(survivor, extra[0]))
        mirror.delete(survivor)
        mirror.add(survivor, extra[0])

        stored = [sig for sig, _ in mirror.records.values()]
        for backend in (store, other):
            assert backend.count() == len(mirror.records)
            assert backend.list(0, EVERYTHING) == list(mirror.records)
            assert backend.list(290, 20) == list(mirror.records)[290:310]
            for query in [*stored[::40], extra[0], perturb(rng, stored[3], 0.1)]:
                for where in (None, {"i": 7}, {"i": -1}):
                    options: dict[str, Any] = {"limit": 10, "max_distance": 0.45, "where": where}
                    assert found(backend.search(query, **options)) == mirror.search(
                        query, **options
                    )
    finally:
        store.close()
        other.close()


# -- opening -----------------------------------------------------------------------------


def test_open_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = tmp_path / "deep" / "er" / "abs.db"
    store = open_backend(sqlite_url(absolute))
    assert isinstance(store, SQLiteBackend)
    store.close()
    assert absolute.is_file()

    monkeypatch.chdir(tmp_path)
    store = open_backend("sqlite:///relative/rel.db")
    assert isinstance(store, SQLiteBackend)
    store.close()
    assert (tmp_path / "relative" / "rel.db").is_file()

    for bad in ("sqlite://", "sqlite:///", "sqlite:relative.db"):
        with pytest.raises(ConfigError):
            open_backend(bad)


def test_unopenable_paths_are_unavailable(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    not_a_database = tmp_path / "garbage.db"
    not_a_database.write_bytes(b"this is not a SQLite database, not at all" * 100)
    for path in (a_file / "store.db", a_file / "sub" / "store.db", tmp_path, not_a_database):
        with pytest.raises(BackendUnavailable):
            SQLiteBackend(path)
    with pytest.raises(BackendUnavailable):
        open_backend(sqlite_url(a_file / "sub" / "store.db"))


# -- memory ------------------------------------------------------------------------------

BYTES_PER_RECORD = 700  # 648 of signature, 4 of norm, 1 of liveness, 8 of row id


@pytest.fixture(scope="module")
def twenty_thousand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "store.db"
    store = SQLiteBackend(path)
    sigs = np.random.default_rng(20_000).integers(-2, 3, size=(20_000, 648), dtype=np.int8)
    store.add_many(Record(f"r{i}", sig) for i, sig in enumerate(sigs))
    store.close()
    return path


def test_memory_per_record(twenty_thousand: Path) -> None:
    store = SQLiteBackend(twenty_thousand)
    try:
        assert store.count() == 20_000
        assert store.memory_bytes / 20_000 < BYTES_PER_RECORD
    finally:
        store.close()


def test_memory_per_record_after_bulk_add(tmp_path: Path, rng: np.random.Generator) -> None:
    store = SQLiteBackend(tmp_path / "store.db")
    try:
        store.add_many(Record(f"r{i}", sig) for i, sig in enumerate(random_signatures(rng, 20_000)))
        assert store.count() == 20_000
        assert store.memory_bytes / 20_000 < BYTES_PER_RECORD
    finally:
        store.close()


def test_memory_per_record_after_compaction(tmp_path: Path, rng: np.random.Generator) -> None:
    """Compaction runs when a quarter of the slots are dead, to give memory back; it
    should not leave much more room than growth would (a factor of 1.5)."""
    store = SQLiteBackend(tmp_path / "store.db")
    try:
        store.add_many(Record(f"r{i}", sig) for i, sig in enumerate(random_signatures(rng, 4000)))
        assert store.count() == 4000
        before = store.memory_bytes
        for i in range(1100):
            store.delete(f"r{i}")
        assert store.count() == 2900
        assert store.memory_bytes < before
        assert store.memory_bytes / 2900 < 1.5 * 661
    finally:
        store.close()
