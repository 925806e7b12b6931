"""Embedding search in the SQLite store: exact scan against the shared HNSW index.

**Collection**: synthetic unit embeddings of 1280 values, clustered like real ones (random
centres, each row a centre plus noise of varied spread, rounded to float16 as stores keep
them), stored through ``add_many`` into a fresh SQLite store with signatures beside them.

**Queries**: a stored row plus noise (a near-duplicate), searched as 1 orientation and as
8 (the query and 7 unrelated rows: a rotated query's other orientations), limit 10, cutoff
0.25 (the default).

**Measured**: ingest rate, index build time and bytes per image; search latency (p50,
p99 over the queries, after a warm-up pass) through the exact scan (the store opened
with ``embedding_index_min_rows=0``) and through the index; recall@10 of the index
against the exact scan; the search state private to the process.

    python bench/embeddings_index.py [--sizes 20000,100000] [--queries 200] [--candidates 64]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: see search.py

import argparse
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt
from common import summary, table, write_results

from lookalike.backends.sqlite import SQLiteBackend, hnsw
from lookalike.backends.sqlite.embeddings import CANDIDATES
from lookalike.records import Record
from lookalike.vectors import EMBEDDING_DIMENSION

CUTOFF = 0.25
LIMIT = 10
CHUNK = 10_000
Vectors = npt.NDArray[np.float32]


def centres(seed: int, count: int = 2000) -> Vectors:
    middle = np.random.default_rng(seed).standard_normal((count, EMBEDDING_DIMENSION))
    return (middle / np.linalg.norm(middle, axis=1, keepdims=True)).astype(np.float32)


def chunk(seed: int, k: int, size: int, middle: Vectors) -> Vectors:
    """Rows ``k·CHUNK …`` of the collection: the same rows for the same seed."""
    rng = np.random.default_rng([seed, k])
    picked = middle[rng.integers(0, len(middle), size)]
    spread = rng.uniform(0.3, 1.2, (size, 1)).astype(np.float32) / np.sqrt(EMBEDDING_DIMENSION)
    x = picked + spread * rng.standard_normal((size, EMBEDDING_DIMENSION)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


def records(size: int, seed: int, middle: Vectors) -> Iterator[Record]:
    rng = np.random.default_rng([seed, 1])
    for k, start in enumerate(range(0, size, CHUNK)):
        vectors = chunk(seed, k, min(CHUNK, size - start), middle)
        signatures = rng.integers(-2, 3, (len(vectors), 648), dtype=np.int8)
        for i, vector in enumerate(vectors):
            yield Record(f"e{start + i:08d}", signatures[i], embedding=vector)


def make_queries(size: int, seed: int, middle: Vectors, n: int) -> list[Vectors]:
    rng = np.random.default_rng([seed, 99])
    out = []
    for _ in range(n):
        row = int(rng.integers(size))
        base = chunk(seed, row // CHUNK, min(CHUNK, size - row // CHUNK * CHUNK), middle)
        q = base[row % CHUNK] + 0.4 * rng.standard_normal(EMBEDDING_DIMENSION) / 36
        others = chunk(seed + 1, int(rng.integers(1000)), 7, middle)
        out.append(np.vstack([q / np.linalg.norm(q), others]).astype(np.float32))
    return out


def timed(store: SQLiteBackend, queries: list[Vectors], rows: int) -> tuple[list[float], list]:
    for q in queries[:10]:
        store.search_embedding(q[:rows], limit=LIMIT, max_distance=CUTOFF)
    times, results = [], []
    for q in queries:
        start = perf_counter()
        results.append(store.search_embedding(q[:rows], limit=LIMIT, max_distance=CUTOFF))
        times.append((perf_counter() - start) * 1000)
    return times, results


def measure(
    size: int, n_queries: int, seed: int, folder: Path, candidates: list[int]
) -> dict[str, Any]:
    middle = centres(seed)
    path = folder / f"embeddings-{size}.db"
    store = SQLiteBackend(path, build_in_background=False, embedding_index_min_rows=1)
    start = perf_counter()
    store.add_many(records(size, seed, middle))
    ingest = perf_counter() - start
    start = perf_counter()
    store.reindex()
    build = perf_counter() - start
    indexed = store.stats()
    exact = SQLiteBackend(path, build_in_background=False, embedding_index_min_rows=0)
    exact.count()
    queries = make_queries(size, seed, middle, n_queries)
    out: dict[str, Any] = {
        "size": size,
        "ingest_per_s": size / ingest,
        "build_s": build,
        "index_bytes_per_image": indexed["embedding_index_shared_bytes"] / size,
        "exact_private_bytes_per_image": exact.memory_bytes / size,
        "indexed_private_bytes": store.memory_bytes,
    }
    for rows in (1, 8):
        exact_ms, truth = timed(exact, queries, rows)
        for count in candidates:
            store._embeddings.candidates = count  # the default is CANDIDATES
            index_ms, found = timed(store, queries, rows)
            pairs = list(zip(found, truth, strict=True))
            hit = sum(len({m.filepath for m in f} & {m.filepath for m in t}) for f, t in pairs)
            total = sum(len(t) for t in truth)
            same = all(
                m.distance == {t.filepath: t.distance for t in ts}.get(m.filepath, m.distance)
                for fs, ts in pairs
                for m in fs
            )
            out[f"{rows}_orientations_{count}_candidates"] = {
                "exact_ms": summary(exact_ms),
                "index_ms": summary(index_ms),
                "recall_at_10": hit / max(total, 1),
                "expected_matches": total,
                "distances_identical": same,
            }
    store.close()
    exact.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--connectivity", type=int, help="HNSW degree (default: the store's)")
    parser.add_argument("--expansion-add", type=int, help="HNSW build beam (default: the store's)")
    parser.add_argument(
        "--candidates",
        default=str(CANDIDATES),
        help="index candidates per orientation, e.g. 64,256",
    )
    parser.add_argument("--folder", type=Path, help="where the stores go (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    candidates = [int(c) for c in args.candidates.split(",")]
    hnsw.CONNECTIVITY = args.connectivity or hnsw.CONNECTIVITY
    hnsw.EXPANSION_ADD = args.expansion_add or hnsw.EXPANSION_ADD
    results = []
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for size in sizes:
            print(f"{size:,} embeddings ...", file=sys.stderr)
            results.append(measure(size, args.queries, args.seed, Path(folder), candidates))
    rows = []
    for r in results:
        for k, count in ((k, c) for k in (1, 8) for c in candidates):
            m = r[f"{k}_orientations_{count}_candidates"]
            rows.append(
                [
                    f"{r['size']:,}",
                    k,
                    count,
                    f"{m['exact_ms']['p50']:.1f} / {m['exact_ms']['p99']:.1f}",
                    f"{m['index_ms']['p50']:.1f} / {m['index_ms']['p99']:.1f}",
                    f"{m['recall_at_10']:.4f}",
                    m["distances_identical"],
                    f"{r['ingest_per_s']:,.0f}",
                    f"{r['build_s']:.0f} s",
                    f"{r['index_bytes_per_image']:,.0f} B",
                    f"{r['exact_private_bytes_per_image']:,.0f} B",
                ]
            )
    print(
        table(
            [
                "embeddings",
                "orientations",
                "candidates",
                "exact p50/p99 ms",
                "index p50/p99 ms",
                "recall@10",
                "same distances",
                "ingest/s",
                "build",
                "index/image (shared)",
                "exact scan/image (per process)",
            ],
            rows,
        )
    )
    path = write_results(
        "embeddings_index",
        {
            "sizes": sizes,
            "queries": args.queries,
            "seed": args.seed,
            "limit": LIMIT,
            "candidates": candidates,
            "connectivity": hnsw.CONNECTIVITY,
            "expansion_add": hnsw.EXPANSION_ADD,
        },
        {"runs": results},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
