"""The indexed SQLite store at 100k, 1M and 10M images: ingest, index build, search latency
with 1, 2 and 4 worker processes sharing the store, recall against brute force, memory.

**Collection**, in storage order: the scikit-image photos (minus the held-out ones), 2,000
random edits of them, up to ~98,000 signatures of 48×48 1/f fields made by the real
signature code (``search.py``'s cache), and for the rest synthetic signatures from
``synthetic.py`` (9×9 grids of 1/f patch means, then image-match's last steps: bit-identical
to the real code given the means), generated on the fly in chunks of 10,000.

**Queries** (8 orientations each, the service's default limit 100 and cutoff 0.45): a fifth
each of edited stored photos, edited stored fields, edited synthetic rows (noise on the
grid means, a turn or flip), held-out photos and new fields (no true match).

**Truth** is brute force over every stored signature, read back from the index's own
rows file (the index holds every row of the store). Recall is that of the in-cutoff
matches: found ∩ truth over truth, each cut to the best ``limit``, pooled over queries.

**Workers** are separate processes (1 BLAS thread each, as ``lookalike serve`` runs them)
that open the store — adopting the published index — make one warm-up pass, then run the
queries together. Memory is the growth of each worker's proportional set size (shared
pages split between the processes that map them) from before it opened the store.

    python bench/index.py [--sizes 100000,1000000] [--workers 1,2,4] [--nprobe 8,16,32,64]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: see search.py

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt
import search
import synthetic
from common import summary, table, threadpools, write_results

from lookalike.backends.scan import within
from lookalike.backends.sqlite import SQLiteBackend
from lookalike.backends.sqlite.generations import IndexFolder
from lookalike.backends.sqlite.ivf import IvfIndex
from lookalike.backends.sqlite.signatures import SIGNATURES
from lookalike.records import Record

LIMIT = 100
CUTOFF = 0.45
REAL = 100_000  # rows made through real images; the rest are synthetic
BLAS_ONE = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
Signatures = npt.NDArray[np.int8]


# -- the collection and the queries ---------------------------------------------------------


def real_layout(size: int, seed: int) -> search.Layout:
    return search.Layout(min(size, REAL), seed)


def blocks(size: int, seed: int) -> Iterator[tuple[list[str], Signatures]]:
    yield from search.stored_blocks(real_layout(size, seed))
    left, k = size - REAL, 0
    while left > 0:
        _, signatures = synthetic.chunk(seed, k)
        block = signatures[: min(left, len(signatures))]
        yield [grid_name(k, i) for i in range(len(block))], block
        left, k = left - len(block), k + 1


def grid_name(chunk: int, row: int) -> str:
    return f"grid/{chunk:05d}-{row:05d}"


def records(size: int, seed: int) -> Iterator[Record]:
    for paths, block in blocks(size, seed):
        for path, row in zip(paths, block, strict=True):
            yield Record(path, row)


def make_queries(size: int, seed: int, count: int) -> list[search.Query]:
    fifth = max(1, count // 5)
    queries = search.make_queries(real_layout(size, seed), 4 * fifth)
    chunks = (size - REAL) // 10_000
    rng = np.random.default_rng([seed, 5_000_000, size])
    for _ in range(fifth if chunks else 0):
        k, row = int(rng.integers(chunks)), int(rng.integers(10_000))
        grids, _ = synthetic.chunk(seed, k)
        edited = synthetic.edited(grids[row : row + 1], rng, float(rng.uniform(0.05, 0.3)))
        turned = synthetic.oriented(edited)[0, int(rng.integers(8))]
        block = synthetic.signatures_of_grids(synthetic.oriented(turned[None])[0])
        queries.append(search.Query("grid", block, grid_name(k, row)))
    return queries


def truth(
    index: IvfIndex, queries: list[search.Query], chunk: int = 1_000_000
) -> list[dict[int, float]]:
    """Every stored row within the cutoff of each query: {row id: distance}, by brute force."""
    found: list[dict[int, float]] = [{} for _ in queries]
    for start in range(0, len(index), chunk):
        rows = np.asarray(index.rows[start : start + chunk])
        norms = np.asarray(index.norms[start : start + chunk])
        keys = np.asarray(index.keys[start : start + chunk])
        for answer, query in zip(found, queries, strict=True):
            hits = within(rows, norms, query.signatures, CUTOFF)
            answer.update(zip(keys[hits.slots].tolist(), hits.distances.tolist(), strict=True))
    return found


def best(answer: dict[str, float], limit: int = LIMIT) -> set[str]:
    return {path for _, path in sorted((d, p) for p, d in answer.items())[:limit]}


# -- worker processes -----------------------------------------------------------------------


def pss() -> dict[str, int]:
    """This process's proportional set size: in all, of anonymous memory, of mapped files."""
    out = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            key, _, value = line.partition(":")
            if key in ("Pss", "Pss_Anon", "Pss_File"):
                out[key] = int(value.split()[0]) * 1024
    return out


def child(db: str, nprobe: int, queries_file: str, repeat: int) -> None:
    """A worker: open the store, warm up, say ready, wait for go, search, report, wait."""
    queries = np.load(queries_file)
    before = pss()
    started = perf_counter()
    store = SQLiteBackend(db, nprobe=nprobe, build_in_background=False)
    stats = store.stats()
    opened = perf_counter() - started
    for q in queries:
        store.search(q, limit=LIMIT, max_distance=CUTOFF)
    print("ready", flush=True)
    sys.stdin.readline()
    seconds, answers = [], []
    order = np.random.default_rng(os.getpid()).permutation(len(queries))
    for rep in range(repeat):
        for i in order if rep else range(len(queries)):
            t = perf_counter()
            found = store.search(queries[i], limit=LIMIT, max_distance=CUTOFF)
            seconds.append(perf_counter() - t)
            if rep == 0:
                answers.append({m.filepath: m.distance for m in found})
    report = {
        "open_s": opened,
        "index": stats["index"],
        "seconds": seconds,
        "answers": answers,
        "pss_growth": {k: v - before[k] for k, v in pss().items()},
        "private_bytes": store.memory_bytes,
    }
    print(json.dumps(report), flush=True)


def run_workers(
    db: Path, nprobe: int, queries_file: Path, workers: int, repeat: int
) -> list[dict[str, Any]]:
    env = {**os.environ, **BLAS_ONE}
    command = [
        sys.executable,
        __file__,
        "--child",
        str(db),
        str(nprobe),
        str(queries_file),
        str(repeat),
    ]
    processes = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(workers)
    ]
    try:
        for p in processes:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in processes:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return [json.loads(p.stdout.readline()) for p in processes if p.stdout is not None]
    finally:
        for p in processes:
            p.kill()
            p.wait()


# -- one size -------------------------------------------------------------------------------


def bench_size(size: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print(f"\n== {size:,} images ==", file=sys.stderr)
    db = workdir / f"index-{size}.db"
    store = SQLiteBackend(db, index_min_rows=0, build_in_background=False)
    started = perf_counter()
    added = store.add_many(records(size, args.seed))
    ingest_s = perf_counter() - started
    store.close()
    print(f"  ingest {added / ingest_s:,.0f} records/s", file=sys.stderr)

    started = perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lookalike.backends.sqlite", "signatures", str(db)],
        check=True,
        env={**os.environ},
    )
    build_s = perf_counter() - started
    build_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    folder = IndexFolder(db, SIGNATURES)
    generation = folder.path / str(folder.current())
    index, _ = folder.open(str(folder.current()))
    index_bytes = sum(f.stat().st_size for f in generation.iterdir())
    print(
        f"  index built in {build_s:.0f} s: {index.nlist} lists, {index_bytes / size:.0f} B/image",
        file=sys.stderr,
    )

    queries = make_queries(size, args.seed, args.queries)
    queries_file = workdir / "queries.npy"
    np.save(queries_file, np.stack([q.signatures for q in queries]))
    started = perf_counter()
    exact = truth(index, queries)
    truth_s = perf_counter() - started
    names = filepaths(db, {i for answer in exact for i in answer})
    expected = [{names[i]: d for i, d in answer.items()} for answer in exact]
    print(f"  brute force truth in {truth_s:.0f} s", file=sys.stderr)

    sweeps = []
    for nprobe in args.nprobe:
        [solo] = run_workers(db, nprobe, queries_file, 1, args.repeat)
        sweeps.append(
            {"nprobe": nprobe, **latency([solo]), **recall(queries, solo["answers"], expected)}
        )
        done = sweeps[-1]
        print(
            f"  nprobe {nprobe}: p50 {done['p50_ms']:.1f} ms, recall {done['recall']:.4f}"
            f" (mean per query {done['mean_query_recall']:.4f})"
        )
    shared = []
    for workers in args.workers:
        runs = run_workers(db, args.default_nprobe, queries_file, workers, args.repeat)
        growth = sum(r["pss_growth"]["Pss"] for r in runs)
        anon = sum(r["pss_growth"]["Pss_Anon"] for r in runs)
        mapped = sum(r["pss_growth"]["Pss_File"] for r in runs)
        shared.append(
            {
                "workers": workers,
                **latency(runs),
                "open_s": max(r["open_s"] for r in runs),
                "pss_growth_bytes_per_image": growth / size,
                "pss_anon_growth_bytes_per_image": anon / size,
                "pss_file_growth_bytes_per_image": mapped / size,
                "private_bytes_per_worker": max(r["private_bytes"] for r in runs),
                "index": sorted({r["index"] for r in runs}),
            }
        )
        w = shared[-1]
        print(f"  {workers} workers: p50 {w['p50_ms']:.1f} ms, {w['qps']:.0f} q/s")

    delta = delta_ingest(db, size, args.seed)
    for path in workdir.glob(db.name + "*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {
        "size": size,
        "real_rows": min(size, REAL),
        "synthetic_rows": max(0, size - REAL),
        "ingest_records_per_s": added / ingest_s,
        "build_s": build_s,
        "build_peak_rss_bytes": build_peak,
        "index_lists": index.nlist,
        "index_bytes_per_image": index_bytes / size,
        "truth_s": truth_s,
        "queries": {
            kind: sum(q.kind == kind for q in queries)
            for kind in dict.fromkeys(q.kind for q in queries)
        },
        "nprobe_sweep": sweeps,
        "workers": shared,
        "delta_ingest": delta,
    }


def filepaths(db: Path, ids: set[int]) -> dict[int, str]:
    connection = sqlite3.connect(db)
    try:
        values = sorted(ids)
        out: dict[int, str] = {}
        for start in range(0, len(values), 500):
            part = values[start : start + 500]
            rows = connection.execute(
                f"SELECT id, filepath FROM images WHERE id IN ({','.join('?' * len(part))})", part
            )
            out.update(rows.fetchall())
        return out
    finally:
        connection.close()


def latency(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [s for r in runs for s in r["seconds"]]
    stats = summary([s * 1e3 for s in seconds])
    wall = max(sum(r["seconds"]) for r in runs)
    return {
        "p50_ms": stats["p50"],
        "p99_ms": stats["p99"],
        "mean_ms": stats["mean"],
        "qps": len(seconds) / wall,
    }


NEAR_DUPLICATES = ("photo", "field", "grid")  # queries made from a stored image


def recall(
    queries: list[search.Query], answers: list[dict[str, float]], expected: list[dict[str, float]]
) -> dict[str, Any]:
    """Recall of the in-cutoff matches (each side cut to the best LIMIT), on near-duplicate
    queries: pooled over them, and per kind as the mean over queries; the same for the
    queries without a true match, apart."""
    by_kind: dict[str, list[float]] = {}
    hits = wanted_total = 0
    exact_distances = True
    for query, got, truth_answer in zip(queries, answers, expected, strict=True):
        wanted = best(truth_answer)
        exact_distances &= all(truth_answer.get(p) == d for p, d in got.items())
        if not wanted:
            continue
        hit = len(wanted & got.keys())
        by_kind.setdefault(query.kind, []).append(hit / len(wanted))
        if query.kind in NEAR_DUPLICATES:
            hits += hit
            wanted_total += len(wanted)
    near = [r for kind in NEAR_DUPLICATES for r in by_kind.get(kind, [])]
    true_match = [q.expected in got for q, got in zip(queries, answers, strict=True) if q.expected]
    return {
        "recall": hits / wanted_total if wanted_total else 1.0,
        "mean_query_recall": float(np.mean(near)) if near else 1.0,
        "recall_by_kind": {k: float(np.mean(v)) for k, v in by_kind.items()},
        "queries_with_matches_by_kind": {k: len(v) for k, v in by_kind.items()},
        "true_match_found": float(np.mean(true_match)),
        "distances_exact": exact_distances,
        "matches_expected": wanted_total,
    }


def delta_ingest(db: Path, size: int, seed: int, count: int = 10_000) -> dict[str, float]:
    """Add ``count`` new records in batches of 100 to the indexed store; they go to the delta."""
    store = SQLiteBackend(db, build_in_background=False)
    _, signatures = synthetic.chunk(seed + 1, 0, count)
    started = perf_counter()
    for start in range(0, count, 100):
        store.add_many(
            Record(f"late/{start + i}", sig)
            for i, sig in enumerate(signatures[start : start + 100])
        )
    seconds = perf_counter() - started
    started = perf_counter()
    store.count()
    catch_up = perf_counter() - started
    store.close()
    return {"records_per_s": count / seconds, "catch_up_s": catch_up}


def default_recall(result: dict[str, Any], nprobe: int) -> float:
    sweep = [s["recall"] for s in result["nprobe_sweep"] if s["nprobe"] == nprobe]
    return sweep[0] if sweep else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--nprobe", default="8,16,32,64", help="probes per orientation to sweep")
    parser.add_argument("--default-nprobe", type=int, default=32, help="for the worker runs")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--results", default="index")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        db, nprobe, queries_file, repeat = args.child
        child(db, int(nprobe), queries_file, int(repeat))
        return 0
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    args.nprobe = [int(n) for n in args.nprobe.split(",")]
    search.prepare_signatures(real_layout(max(args.sizes), args.seed), os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="lookalike-index-", dir=args.workdir) as tmp:
        results = [bench_size(size, args, Path(tmp)) for size in args.sizes]
    rows = [
        (
            r["size"],
            w["workers"],
            f"{w['p50_ms']:.1f}",
            f"{w['p99_ms']:.1f}",
            f"{w['qps']:.0f}",
            f"{default_recall(r, args.default_nprobe):.4f}",
            f"{w['pss_growth_bytes_per_image']:.0f}",
            f"{r['index_bytes_per_image']:.0f}",
            f"{r['build_s']:.0f}",
        )
        for r in results
        for w in r["workers"]
    ]
    print(
        table(
            (
                "images",
                "workers",
                "p50 ms",
                "p99 ms",
                "q/s",
                "recall",
                "PSS B/img",
                "index B/img",
                "build s",
            ),
            rows,
        )
    )
    path = write_results(
        args.results,
        {
            "sizes": args.sizes,
            "queries": args.queries,
            "repeat": args.repeat,
            "limit": LIMIT,
            "max_distance": CUTOFF,
            "seed": args.seed,
            "default_nprobe": args.default_nprobe,
            "threadpools": threadpools(),
        },
        {"sizes": results},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
