"""The SQLite store's HNSW index of embeddings (real SQLite, real usearch).

One store of 10,000 clustered unit vectors is built once; tests that change it work on a
copy of the database and its index folder. The brute-force ``memory`` store is the oracle.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from lookalike.backends.base import check_embedding_queries
from lookalike.backends.memory import MemoryBackend
from lookalike.backends.sqlite import SQLiteBackend
from lookalike.backends.sqlite.embeddings import EMBEDDINGS
from lookalike.backends.sqlite.generations import IndexFolder
from lookalike.backends.sqlite.hnsw import SERIAL_ROWS, HnswIndex
from lookalike.records import Match, Record
from lookalike.vectors import EMBEDDING_DIMENSION, cosine_distances

from .support import random_signatures

N = 10_000
GROUPS = 50
Vectors = npt.NDArray[np.float32]


def clustered(rng: np.random.Generator, n: int, centres: int = 400) -> Vectors:
    """Unit vectors around random centres, at varied spreads: neighbours are close."""
    middle = rng.standard_normal((centres, EMBEDDING_DIMENSION)).astype(np.float32)
    spread = rng.uniform(0.3, 1.2, (n, 1)).astype(np.float32) / np.sqrt(EMBEDDING_DIMENSION)
    noise = rng.standard_normal((n, EMBEDDING_DIMENSION)).astype(np.float32)
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    x = middle[rng.integers(0, centres, n)] + spread * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


def near(rng: np.random.Generator, vector: Vectors, noise: float = 0.5) -> Vectors:
    q = vector + noise * rng.standard_normal(EMBEDDING_DIMENSION).astype(np.float32) / 36
    return (q / np.linalg.norm(q)).astype(np.float32)


def open_store(path: Path, **options: int | bool) -> SQLiteBackend:
    return SQLiteBackend(
        path, build_in_background=False, **{"embedding_index_min_rows": 1000, **options}
    )  # type: ignore[arg-type]


def backup(source: Path, target: Path) -> None:
    """Copy a live SQLite file (its WAL included) with SQLite's backup API."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    src.backup(dst)
    src.close()
    dst.close()


class Built:
    def __init__(self, path: Path, vectors: Vectors, memory: MemoryBackend) -> None:
        self.path, self.vectors, self.memory = path, vectors, memory

    def copy(self, target: Path) -> Path:
        backup(self.path, target / self.path.name)
        shutil.copytree(
            IndexFolder(self.path, EMBEDDINGS).path,
            IndexFolder(target / self.path.name, EMBEDDINGS).path,
        )
        return target / self.path.name


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    rng = np.random.default_rng(6)
    vectors = clustered(rng, N)
    signatures = random_signatures(rng, N)
    records = [
        Record(f"e{i:05d}", signatures[i], {"g": i % GROUPS, "rare": i % 1000 == 0}, embedding=v)
        for i, v in enumerate(vectors)
    ]
    path = tmp_path_factory.mktemp("embedding-index") / "store.db"
    store = open_store(path)
    store.add_many(records)
    store.reindex()
    assert store.stats()["embedding_index"] == "hnsw"
    store.close()
    memory = MemoryBackend()
    memory.add_many(records)
    yield Built(path, vectors, memory)


def queries(built: Built, rng: np.random.Generator, n: int) -> list[Vectors]:
    return [near(rng, built.vectors[i])[None] for i in rng.choice(N, size=n, replace=False)]


def names(matches: list[Match]) -> list[str]:
    return [m.filepath for m in matches]


def test_recall_at_10_and_exact_distances(built: Built, rng: np.random.Generator) -> None:
    store = open_store(built.path)
    assert store.stats()["embedding_index"] == "hnsw"
    hit = total = 0
    for q in queries(built, rng, 40):
        for rows in (q, np.vstack([q, near(rng, q[0], 3.0)[None]])):  # 1 and 2 orientations
            got = store.search_embedding(rows, limit=10, max_distance=0.8)
            truth = built.memory.search_embedding(rows, limit=10, max_distance=0.8)
            stored = built.vectors[[int(m.filepath[1:]) for m in got]]
            exact, _ = cosine_distances(check_embedding_queries(rows), stored)
            assert [m.distance for m in got] == exact.tolist()  # identical, not close
            hit += len(set(names(got)) & set(names(truth)))
            total += len(truth)
    assert hit / total >= 0.99
    assert store.memory_bytes < 1_000_000  # no embeddings held in this process
    store.close()


def test_changes_after_the_build_are_seen_at_once(
    built: Built, tmp_path: Path, rng: np.random.Generator
) -> None:
    store = open_store(built.copy(tmp_path))
    version = store.stats()["embedding_index_version"]
    target = built.vectors[123]
    sig = random_signatures(rng, 1)[0]
    # an add lands in the delta, at distance 0 from its own vector
    store.add(Record("new", sig, embedding=target))
    got = store.search_embedding(target[None], limit=3, max_distance=0.5)
    assert {"new", "e00123"} <= set(names(got)[:2]) and got[0].distance < 1e-6
    # a delete masks the index row
    assert store.delete("e00123")
    assert "e00123" not in names(store.search_embedding(target[None], limit=10, max_distance=0.5))
    # a replacement with another vector moves it; one without an embedding hides it
    other = built.vectors[456]
    store.add(Record("e00124", sig, embedding=target))
    got = store.search_embedding(target[None], limit=3, max_distance=0.5)
    assert {"new", "e00124"} == set(names(got)[:2])
    store.add(Record("e00456", sig))
    got = store.search_embedding(other[None], limit=10, max_distance=0.5)
    assert "e00456" not in names(got)
    stats = store.stats()
    assert stats["embedding_index_version"] == version  # no rebuild: delta and mask
    assert stats["embedding_changes_since_index"] == 5  # 3 masked, 2 in the delta
    assert stats["embeddings"] == N - 1  # +new, -e00123, -e00456
    store.close()


def test_index_survives_reopen_and_is_shared(built: Built, tmp_path: Path) -> None:
    path = built.copy(tmp_path)
    name = IndexFolder(path, EMBEDDINGS).current()
    first, second = open_store(path), open_store(path)  # two connections, as two workers
    for store in (first, second):
        stats = store.stats()
        assert stats["embedding_index"] == "hnsw" and not stats["embedding_index_building"]
        assert stats["embedding_index_rows"] == N
    first.add(
        Record(
            "seen", random_signatures(np.random.default_rng(1), 1)[0], embedding=built.vectors[9]
        )
    )
    got = second.search_embedding(built.vectors[9][None], limit=2, max_distance=0.1)
    assert set(names(got)) == {"seen", "e00009"}
    assert IndexFolder(path, EMBEDDINGS).current() == name  # nothing was rebuilt
    first.close()
    second.close()


def small_store(path: Path, rng: np.random.Generator, n: int = 300) -> SQLiteBackend:
    store = open_store(path)
    vectors = clustered(rng, n, 10)
    store.add_many(
        Record(f"s{i}", s, embedding=v)
        for i, (s, v) in enumerate(zip(random_signatures(rng, n), vectors, strict=True))
    )
    return store


def test_a_foreign_index_is_refused_and_rebuilt(tmp_path: Path, rng: np.random.Generator) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = small_store(tmp_path / "a" / "store.db", rng)
    a.reindex()
    a.close()
    b = small_store(tmp_path / "b" / "store.db", rng)
    shutil.copytree(
        IndexFolder(tmp_path / "a" / "store.db", EMBEDDINGS).path,
        IndexFolder(b.path, EMBEDDINGS).path,
    )
    stats = b.stats()
    assert stats["embedding_index"] == "exact scan"  # another database's index: refused
    query = clustered(rng, 1)
    oracle = open_store(tmp_path / "b" / "store.db", embedding_index_min_rows=0)
    expected = oracle.search_embedding(query, limit=5, max_distance=2.0)
    assert b.search_embedding(query, limit=5, max_distance=2.0) == expected
    b.reindex()
    assert b.stats()["embedding_index"] == "hnsw"
    b.close()
    oracle.close()


def test_an_index_newer_than_the_database_is_refused(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    store = small_store(tmp_path / "store.db", rng)
    backup(store.path, tmp_path / "backup.db")
    store.add(Record("later", random_signatures(rng, 1)[0], embedding=clustered(rng, 1)[0]))
    store.reindex()
    store.close()
    backup(tmp_path / "backup.db", tmp_path / "store.db")  # a restored backup
    restored = open_store(tmp_path / "store.db")
    assert restored.stats()["embedding_index"] == "exact scan"
    assert restored.stats()["embeddings"] == 300
    restored.close()


def test_filters_are_exact(built: Built, rng: np.random.Generator) -> None:
    store = open_store(built.path)
    hit = total = 0
    for q in queries(built, rng, 10):
        # 10 allowed rows: scanned exactly, so the very same answer as brute force
        rare = {"rare": True}
        got = store.search_embedding(q, limit=10, max_distance=2.0, where=rare)
        assert got == built.memory.search_embedding(q, limit=10, max_distance=2.0, where=rare)
        # one row in 50 allowed: the index is asked for 50 times the candidates
        group = {"g": int(rng.integers(GROUPS))}
        got = store.search_embedding(q, limit=10, max_distance=2.0, where=group)
        truth = built.memory.search_embedding(q, limit=10, max_distance=2.0, where=group)
        assert all(m.metadata is not None and m.metadata["g"] == group["g"] for m in got)
        hit += len(set(names(got)) & set(names(truth)))
        total += len(truth)
    assert hit / total >= 0.99
    store.close()


def test_small_graphs_are_built_the_same_every_time() -> None:
    """Below SERIAL_ROWS one thread inserts in order: the same rows, the same answers
    (a graph built by several threads differs from run to run)."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((1500, 1280)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    answers = []
    for _ in range(2):
        index = HnswIndex.create()
        index.add(np.arange(len(vectors)), vectors.astype(np.float16))
        answers.append(index.search(vectors[:40], 25))
    assert len(vectors) <= SERIAL_ROWS
    assert np.array_equal(answers[0][0], answers[1][0])
    assert np.array_equal(answers[0][1], answers[1][1])


def test_an_index_opened_before_the_model_loads_does_not_crash_the_process() -> None:
    """usearch loaded before onnxruntime made onnxruntime crash the process as it loaded
    (a server whose store adopted its HNSW index before the first query was embedded)."""
    pytest.importorskip("onnxruntime", reason="the cnn extra is not installed")
    script = (
        "from lookalike import Lookalike, Settings\n"
        "from lookalike.backends.sqlite.hnsw import HnswIndex\n"
        "Lookalike(Settings(backend='memory://', embeddings=True))\n"
        "HnswIndex.create()\n"
        "import onnxruntime\n"
        "print('loaded', onnxruntime.__version__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loaded")
