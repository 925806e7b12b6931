"""The SQLite store's index: recall, persistence, staleness, corruption, sharing.

The contract suite already runs on an indexed store probing every list (exact); these
tests cover what is particular to the index: recall with few probes, and its life on disk.
Builds run for real: in this process through ``reindex``, or in the background process
the store starts by itself.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from lookalike.backends.memory import MemoryBackend
from lookalike.backends.sqlite import SQLiteBackend
from lookalike.backends.sqlite.generations import IndexFolder
from lookalike.backends.sqlite.signatures import SIGNATURES
from lookalike.records import Record

from .support import perturb, random_signatures, smooth_signatures
from .test_sqlite import TIMEOUT, Peer, worker

CUTOFF = 0.45


def fill(store: SQLiteBackend, signatures: np.ndarray, prefix: str = "r") -> list[Record]:
    records = [Record(f"{prefix}{i}", sig, {"i": i}) for i, sig in enumerate(signatures)]
    store.add_many(records)
    return records


def wait_for(condition, what: str, timeout: float = TIMEOUT):
    """Poll ``condition`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def answers(store, queries: np.ndarray) -> list[tuple[str, float]]:
    return [
        (m.filepath, m.distance) for m in store.search(queries, limit=10**6, max_distance=CUTOFF)
    ]


@pytest.fixture(scope="module")
def structured() -> np.ndarray:
    """6,000 signatures of smooth random images (clustered like photos', unlike noise):
    1,500 originals, each followed by three edited copies, as collections hold them."""
    rng = np.random.default_rng(7)
    originals = smooth_signatures(rng, 1500)
    out = np.empty((6000, originals.shape[1]), dtype=np.int8)
    for i, original in enumerate(originals):
        out[4 * i] = original
        for k, fraction in enumerate((0.05, 0.1, 0.15), start=1):
            out[4 * i + k] = perturb(rng, original, fraction)
    return out


def test_recall_with_few_probes_against_brute_force(tmp_path: Path, structured: np.ndarray) -> None:
    rng = np.random.default_rng(11)
    store = SQLiteBackend(tmp_path / "s.db", nprobe=4, build_in_background=False)
    oracle = MemoryBackend()
    records = fill(store, structured)
    oracle.add_many(records)
    stats = store.reindex()
    assert stats["index"] == "ivf" and stats["index_rows"] == 6000
    probed = 8 * 4 / stats["index_lists"]
    assert probed < 0.2, "the test must not probe most of the lists"
    expected = found = 0
    for i in rng.choice(6000, size=150, replace=False):
        queries = np.stack([perturb(rng, structured[i], 0.15) for _ in range(8)])
        truth = dict(answers(oracle, queries))
        got = dict(answers(store, queries))
        assert all(got[path] == truth[path] for path in got), "distances must be exact"
        expected += len(truth)
        found += len(truth.keys() & got.keys())
    assert expected >= 300
    assert found / expected >= 0.98, f"recall {found / expected:.3f}"
    store.close()


def test_a_restart_uses_the_saved_index_and_reads_only_the_changes(
    tmp_path: Path, structured: np.ndarray
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteBackend(path, build_in_background=False)
    fill(store, structured[:3000])
    built = store.reindex()
    store.close()
    writer = SQLiteBackend(path, index_min_rows=0)  # changes made while nobody indexes
    writer.add(Record("late", structured[5000]))
    writer.delete("r7")
    writer.add(Record("r8", structured[5001]))  # a replaced row moves out of the index
    writer.close()

    reopened = SQLiteBackend(path, build_in_background=False)
    stats = reopened.stats()
    assert stats["index"] == "ivf"
    assert stats["index_version"] == built["index_version"]
    # late added (+1), r7 deleted (+1), r8 replaced (masked in the index, in the delta: +2)
    assert stats["changes_since_index"] == 4
    assert stats["count"] == 3000
    assert [name.name for name in IndexFolder(path, SIGNATURES).path.glob("g*")] == [
        IndexFolder(path, SIGNATURES).current()
    ]
    assert answers(reopened, structured[5000][None])[0] == ("late", 0.0)
    assert "r7" not in dict(answers(reopened, structured[7][None]))
    assert answers(reopened, structured[5001][None])[0] == ("r8", 0.0)
    assert "r8" not in dict(answers(reopened, structured[8][None]))
    assert reopened.list(0, 3) == ["r0", "r1", "r2"] and reopened.list(2998, 5) == ["r2999", "late"]
    reopened.close()


def test_a_background_build_starts_at_the_threshold_and_is_adopted(
    tmp_path: Path, structured: np.ndarray
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteBackend(path, index_min_rows=1000)
    fill(store, structured[:999])
    assert store.stats()["index"] == "exact scan"
    assert IndexFolder(path, SIGNATURES).current() is None, "no build below the threshold"
    store.add(Record("one-more", structured[999]))
    stats = wait_for(lambda: (s := store.stats())["index"] == "ivf" and s, "the background build")
    assert stats["index_rows"] == 1000 and stats["count"] == 1000
    assert "built" in (IndexFolder(path, SIGNATURES).path / "build.log").read_text()
    assert answers(store, structured[999][None])[0] == ("one-more", 0.0)
    store.close()


def test_an_index_with_many_changes_is_rebuilt_in_the_background(
    tmp_path: Path, structured: np.ndarray
) -> None:
    store = SQLiteBackend(tmp_path / "s.db", index_min_rows=1000)
    fill(store, structured[:2000])
    first = store.reindex()
    fill(store, structured[2000:2300], prefix="new")  # 15 %: the index still serves
    assert store.stats()["index_version"] == first["index_version"]
    fill(store, structured[2300:2500], prefix="more")  # 25 %: time for a new one
    stats = wait_for(
        lambda: (s := store.stats())["index_version"] > first["index_version"] and s,
        "the rebuild",
    )
    assert stats["index_rows"] == 2500 and stats["changes_since_index"] == 0
    store.close()


def test_an_index_newer_than_a_restored_database_is_not_trusted(
    tmp_path: Path, structured: np.ndarray
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteBackend(path, build_in_background=False)
    fill(store, structured[:2000])
    store.close()
    shutil.copy(path, tmp_path / "backup.db")  # closed: the WAL is checkpointed
    store = SQLiteBackend(path, build_in_background=False)
    store.delete("r5")
    fill(store, structured[2000:2200], prefix="new")
    store.reindex()
    store.close()
    shutil.copy(tmp_path / "backup.db", path)  # the backup comes back, the index stays

    restored = SQLiteBackend(path, build_in_background=False)
    assert restored.stats()["index"] == "exact scan"
    assert restored.count() == 2000
    assert answers(restored, structured[5][None])[0] == ("r5", 0.0)
    assert answers(restored, structured[2100][None]) == []
    assert restored.reindex()["index"] == "ivf"
    assert answers(restored, structured[5][None])[0] == ("r5", 0.0)
    restored.close()


def test_an_index_of_another_database_is_not_trusted(
    tmp_path: Path, structured: np.ndarray
) -> None:
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    for path, part in ((first, structured[:1500]), (second, structured[1500:3000])):
        store = SQLiteBackend(path, build_in_background=False)
        fill(store, part)
        store.reindex()
        store.close()
    shutil.rmtree(IndexFolder(second, SIGNATURES).path)
    shutil.copytree(IndexFolder(first, SIGNATURES).path, IndexFolder(second, SIGNATURES).path)
    store = SQLiteBackend(second, build_in_background=False)
    assert store.stats()["index"] == "exact scan"
    assert answers(store, structured[1600][None])[0] == ("r100", 0.0)
    store.close()


def test_a_corrupted_index_is_refused_and_rebuilt(tmp_path: Path, structured: np.ndarray) -> None:
    path = tmp_path / "s.db"
    store = SQLiteBackend(path, build_in_background=False)
    fill(store, structured[:2000])
    damaged = store.reindex()["index_version"]
    store.close()
    folder = IndexFolder(path, SIGNATURES)
    rows = folder.path / str(folder.current()) / "rows.npy"
    data = bytearray(rows.read_bytes())
    data[len(data) // 2] ^= 0x7  # one signature value, as a bad disk might
    rows.write_bytes(bytes(data))
    name = folder.current()

    store = SQLiteBackend(path, index_min_rows=1000)  # may build in the background
    assert store.stats()["index"] == "exact scan"
    oracle = MemoryBackend()
    oracle.add_many(Record(f"r{i}", sig) for i, sig in enumerate(structured[:2000]))
    for i in (0, 999, 1999):
        assert answers(store, structured[i][None]) == answers(oracle, structured[i][None])
    stats = wait_for(lambda: (s := store.stats())["index"] == "ivf" and s, "the rebuild")
    assert folder.current() != name and stats["index_version"] == damaged
    store.close()


def test_two_processes_share_one_index_and_see_each_others_adds(
    tmp_path: Path, structured: np.ndarray
) -> None:
    path = tmp_path / "shared.db"
    store = SQLiteBackend(path, build_in_background=False)
    fill(store, structured[:3000])
    store.reindex()
    generation = IndexFolder(path, SIGNATURES).path / str(IndexFolder(path, SIGNATURES).current())
    rng = np.random.default_rng(5)
    with worker("serve", str(path)) as (process, lines):
        peer = Peer(process, lines)
        assert peer.call("stats")["index"] == "ivf"
        mapped = peer.call("mapped")
        assert str(generation / "rows.npy") in mapped, "the peer reads the same index file"
        fresh = random_signatures(rng, 40)
        for i, sig in enumerate(fresh):
            if i % 2:
                peer.add(f"peer{i}", sig)
                assert answers(store, sig[None])[0] == (f"peer{i}", 0.0)
            else:
                store.add(Record(f"local{i}", sig))
                assert peer.search(sig, limit=5, max_distance=CUTOFF)[0][:2] == (f"local{i}", 0.0)
        assert peer.call("count") == store.count() == 3040
        assert peer.call("stats")["changes_since_index"] == 40
