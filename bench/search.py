"""Search latency, memory and ingest rate of the stores, on realistic synthetic signatures.

For each store size (``--sizes``, default 10k and 100k; 1M and 10M work the same way):

* **stored set**: the scikit-image photos minus a held-out few, up to 2,000 random edits
  of them (crops, resizes, tone, noise, turns, flips, JPEG), and for the rest
  "structured" signatures: 48×48 random 1/f fields (spectra like natural scenes) run
  through ``signature.signature``. Generated in parallel, in chunks of 10,000, and cached
  as .npy under ``bench/results/cache`` — nothing holds millions of Python objects.
* **ingest**: ``SQLiteBackend.add_many`` records/s into a fresh file, then the time of
  the first search (which loads the new rows into the search state).
* **reopen and memory**: each store is loaded in a fresh process, which reports the load
  time, the VmRSS growth per stored image (and the peak during the load) and the
  backend's ``memory_bytes``. Reopen time is the median of 3.
* **search**: queries are 8-orientation signature blocks (8, 648) of edited copies of
  stored photos and fields (true matches exist) and of unrelated photos and fields;
  p50/p99 latency and QPS of ``backend.search`` at the service's default limit and
  cutoff, the stores alternating query by query; recall of each against the memory
  backend (exact search: should be 1.0).
* **Milvus Lite** (when ``lookalike[milvus]`` is installed; ``--no-milvus`` skips it): the
  same records through ``MilvusBackend.add_many`` into a fresh Milvus Lite file with the
  default settings (HNSW), then ``reindex`` and the wait for Milvus Lite's background
  index builds (read from its internals: the client API cannot tell), the reopen in a
  fresh process (time, RSS), and a column beside SQLite in the search table. Milvus Lite
  runs in the benchmark's own process, as it does in lookalike's.

Then the **CLI ingest rate**: ``lookalike add <folder> --quiet`` as a subprocess on a
folder of 640×480 JPEGs (fresh SQLite store each run, median of 3).

    python bench/search.py [--quick] [--sizes 10000,100000] [--cli-images 2000]
"""

from __future__ import annotations

import sys

# A script's folder comes first on the import path: move it last, so that the standard
# library wins over files in bench/ that share its names (bench/http.py shadows `http`).
sys.path.append(sys.path.pop(0))

import argparse
import gc
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt
from common import (
    BENCH,
    CACHE,
    PHOTO_NAMES,
    add_grain,
    brightness,
    contrast,
    crop,
    encode,
    median,
    memory_status,
    mirror,
    photos,
    pink_fields,
    pink_photo,
    random_edit,
    reset_peak_rss,
    resize_to,
    summary,
    table,
    threadpools,
    write_results,
)

from lookalike import signature
from lookalike.backends.base import Backend
from lookalike.backends.memory import MemoryBackend
from lookalike.backends.sqlite import SQLiteBackend
from lookalike.config import Settings
from lookalike.records import Match, Record

Signatures = npt.NDArray[np.int8]

CHUNK = 10_000  # structured signatures per cache file
SUB_BATCH = 500  # fields generated (and regenerable) together
FIELD = 48  # side of the structured fields, in pixels
PHOTO_EDITS = 2_000  # random edits of the stored photos at most (and at most 1/5 of a store)
GENERATOR = "v1"  # bump when the generators change, to ignore stale cache files
HELD_OUT = ("camera", "page", "hubble_deep_field", "clock", "gravel")  # never stored
SUMMARY = re.compile(
    r"added (\d+) images, (\d+) failed, in ([\d.]+) s \(([\d.]+) images/s\)", re.MULTILINE
)


# -- the stored set -------------------------------------------------------------------------


def stored_photos() -> list[str]:
    return [name for name in photos() if name not in HELD_OUT]


@dataclass(frozen=True)
class Layout:
    """How a store of ``size`` signatures is made up, in storage order."""

    size: int
    seed: int

    @property
    def originals(self) -> int:
        return len(stored_photos())

    @property
    def edits(self) -> int:
        return min(PHOTO_EDITS, self.size // 5)

    @property
    def structured(self) -> int:
        return self.size - self.originals - self.edits

    @property
    def chunks(self) -> int:
        return -(-self.structured // CHUNK)


def field_batch(seed: int, chunk: int, sub: int) -> npt.NDArray[np.float64]:
    """The ``SUB_BATCH`` fields of one sub-batch: deterministic, so any field can be remade."""
    return pink_fields(np.random.default_rng([seed, chunk, sub]), SUB_BATCH, (FIELD, FIELD))


def sign_fields(job: tuple[int, int, int]) -> Signatures:
    return np.stack([signature.signature(f) for f in field_batch(*job)])


def sign_photo_edits(job: tuple[int, int, int]) -> Signatures:
    seed, start, count = job
    names = stored_photos()
    library = photos()
    out = np.empty((count, signature.LENGTH), dtype=np.int8)
    for i in range(count):
        rng = np.random.default_rng([seed, 1_000_000 + start + i])
        name = names[int(rng.integers(len(names)))]
        out[i] = signature.signature(random_edit(library[name], rng))
    return out


def structured_path(seed: int, chunk: int) -> Path:
    return CACHE / f"structured-{GENERATOR}-{FIELD}px-s{seed}-{chunk:05d}.npy"


def edits_path(seed: int) -> Path:
    return CACHE / f"photo-edits-{GENERATOR}-s{seed}-{PHOTO_EDITS}.npy"


def prepare_signatures(layout: Layout, jobs: int) -> dict[str, Any]:
    """Generate (in ``jobs`` processes) and cache whatever ``layout`` needs and is missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    seed = layout.seed
    missing = [k for k in range(layout.chunks) if not structured_path(seed, k).exists()]
    generated: dict[str, Any] = {"structured_chunks_generated": len(missing)}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        if not edits_path(seed).exists():
            started = perf_counter()
            parts = pool.map(sign_photo_edits, [(seed, s, 50) for s in range(0, PHOTO_EDITS, 50)])
            np.save(edits_path(seed), np.concatenate(list(parts)))
            generated["photo_edits_per_s"] = PHOTO_EDITS / (perf_counter() - started)
        if missing:
            started = perf_counter()
            subs = CHUNK // SUB_BATCH
            for k in missing:
                parts = pool.map(sign_fields, [(seed, k, s) for s in range(subs)])
                np.save(structured_path(seed, k), np.concatenate(list(parts)))
                print(f"  generated chunk {k + 1}/{layout.chunks}", file=sys.stderr)
            count = len(missing) * CHUNK
            generated["structured_per_s"] = count / (perf_counter() - started)
            generated["structured_per_s_jobs"] = jobs
    return generated


def single_core_rate(seed: int) -> dict[str, float]:
    """Structured signatures per second on one core: the fields, then fields + signatures."""
    started = perf_counter()
    fields = field_batch(seed, 999_999, 0)
    fields_done = perf_counter()
    for f in fields:
        signature.signature(f)
    done = perf_counter()
    return {
        "fields_per_s": SUB_BATCH / (fields_done - started),
        "signatures_per_s": SUB_BATCH / (done - fields_done),
        "structured_per_s": SUB_BATCH / (done - started),
    }


def stored_blocks(layout: Layout) -> Iterator[tuple[list[str], Signatures]]:
    """(filepaths, signatures) of the stored set in blocks of at most ``CHUNK``."""
    library = photos()
    names = stored_photos()
    yield (
        [f"photo/{n}.png" for n in names],
        np.stack([signature.signature(library[n]) for n in names]),
    )
    edits = np.load(edits_path(layout.seed))[: layout.edits]
    yield [f"photo-edit/{i:06d}.jpg" for i in range(len(edits))], edits
    left = layout.structured
    for k in range(layout.chunks):
        block = np.load(structured_path(layout.seed, k))[: min(CHUNK, left)]
        yield [field_name(k * CHUNK + i) for i in range(len(block))], block
        left -= len(block)


def field_name(index: int) -> str:
    return f"field/{index:09d}.png"


def records(layout: Layout) -> Iterator[Record]:
    for paths, block in stored_blocks(layout):
        for path, row in zip(paths, block, strict=True):
            yield Record(path, row)


# -- queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    kind: str  # "photo", "field" (true match stored) or "unrelated photo", "unrelated field"
    signatures: Signatures  # (8, 648)
    expected: str | None  # the stored filepath it was made from


def edited_field(field: npt.NDArray[np.float64], rng: np.random.Generator) -> Any:
    """A mild edit of a grey field: a turn or flip, a tone change and a little noise."""
    out = np.rot90(field, int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out * rng.uniform(0.85, 1.15) + rng.normal(0, 1.5 / 255, out.shape)
    return np.rint(np.clip(out, 0, 1) * 255) / 255


def make_queries(layout: Layout, count: int) -> list[Query]:
    """A quarter each: edited stored photos, edited stored fields, held-out photos, new fields."""
    rng = np.random.default_rng([layout.seed, 3_000_000, layout.size])
    library = photos()
    names = stored_photos()
    held_out = [n for n in HELD_OUT if n in library]
    quarter = max(1, count // 4)
    queries = []
    for _ in range(quarter):
        name = names[int(rng.integers(len(names)))]
        edited = random_edit(library[name], rng)
        queries.append(Query("photo", signature.orientations(edited), f"photo/{name}.png"))
    for _ in range(quarter):
        index = int(rng.integers(layout.structured))
        chunk, within = divmod(index, CHUNK)
        sub, row = divmod(within, SUB_BATCH)
        field = field_batch(layout.seed, chunk, sub)[row]
        sigs = signature.orientations(edited_field(field, rng))
        queries.append(Query("field", sigs, field_name(index)))
    for _ in range(quarter):
        edited = random_edit(library[held_out[int(rng.integers(len(held_out)))]], rng)
        queries.append(Query("unrelated photo", signature.orientations(edited), None))
    fresh = pink_fields(np.random.default_rng([layout.seed, 4_000_000]), quarter)
    queries += [Query("unrelated field", signature.orientations(f), None) for f in fresh]
    return queries


# -- measurements ---------------------------------------------------------------------------


def child_load(kind: str, target: str, seed: int) -> dict[str, Any]:
    """Run in a fresh process: load one store, report time and memory (see ``--child``)."""
    if kind == "memory":
        photos()  # decode the photos (and import scikit-image) before the baseline
    if kind == "milvus":
        import milvus_lite.adapter.grpc.server  # noqa: F401 - imports outside the figures
        import pymilvus  # noqa: F401
    gc.collect()
    before = memory_status()
    peak_reset = reset_peak_rss()
    started = perf_counter()
    backend: Backend
    if kind == "sqlite":
        backend = SQLiteBackend(target)
    elif kind == "milvus":
        from lookalike.backends.milvus import MilvusBackend

        backend = MilvusBackend(milvus_url(Path(target)))
        backend.list(0, 1)  # reads the insertion order, as the first list would
    else:
        backend = MemoryBackend()
        backend.add_many(records(Layout(int(target), seed)))
    seconds = perf_counter() - started
    count = backend.count()
    gc.collect()
    after = memory_status()
    facts = {
        "seconds": seconds,
        "count": count,
        "rss_delta": after["VmRSS"] - before["VmRSS"],
        "anon_delta": after["RssAnon"] - before["RssAnon"],
        "peak_delta": after["VmHWM"] - before["VmRSS"] if peak_reset else None,
        "memory_bytes": getattr(backend, "memory_bytes", None),
    }
    backend.close()
    return facts


def in_child(kind: str, target: str, seed: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, target, "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ingest_sqlite(layout: Layout, path: Path) -> dict[str, Any]:
    backend = SQLiteBackend(path)
    started = perf_counter()
    added = backend.add_many(records(layout))
    ingest = perf_counter() - started
    started = perf_counter()
    backend.count()  # the first read loads the new rows into the search state
    catch_up = perf_counter() - started
    backend.close()
    disk = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "records": added,
        "seconds": ingest,
        "records_per_s": added / ingest,
        "catch_up_s": catch_up,
        "disk_bytes_per_image": disk / added,
    }


def milvus_url(path: Path) -> str:
    return "milvus:///" + str(path.absolute())


def ingest_milvus(layout: Layout, path: Path) -> dict[str, Any]:
    """Add the stored set to a fresh Milvus Lite file (default settings), then flush and
    wait until Milvus Lite has built every segment's HNSW index in the background."""
    from milvus_lite.server_manager import server_manager_instance

    from lookalike.backends.milvus import MilvusBackend

    backend = MilvusBackend(milvus_url(path))
    started = perf_counter()
    added = backend.add_many(records(layout))
    ingest = perf_counter() - started
    started = perf_counter()
    backend.reindex()
    _, lite, _ = server_manager_instance._servers[str(path.absolute())]
    for name in (backend.name, backend.vectors_name):
        lite.get_collection(name)._wait_for_bg()
    indexed = perf_counter() - started
    backend.close()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "records": added,
        "seconds": ingest,
        "records_per_s": added / ingest,
        "flush_and_index_s": indexed,
        "disk_bytes_per_image": disk / added,
    }


def same_results(a: list[Match], b: list[Match]) -> tuple[float, float]:
    """Recall of ``a`` against the reference ``b``, and the largest distance difference."""
    reference = {m.filepath: m.distance for m in b}
    if not reference:
        return (1.0 if not a else 0.0), 0.0
    got = {m.filepath: m.distance for m in a}
    common_paths = reference.keys() & got.keys()
    error = max((abs(got[p] - reference[p]) for p in common_paths), default=0.0)
    return len(common_paths) / len(reference), error


def time_searches(
    backends: dict[str, Backend], queries: list[Query], repeat: int, settings: Settings
) -> dict[str, Any]:
    """Latencies per backend, alternating backends query by query; results of the first pass."""
    names = list(backends)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    first: dict[str, list[list[Match]]] = {n: [] for n in names}
    rng = np.random.default_rng(0)
    for backend in backends.values():  # warm up
        backend.search(queries[0].signatures, limit=1, max_distance=settings.max_distance)
    for rep in range(repeat):
        for step, q in enumerate(rng.permutation(len(queries)) if rep else range(len(queries))):
            query = queries[int(q)]
            for name in names if step % 2 == 0 else names[::-1]:
                started = perf_counter()
                found = backends[name].search(
                    query.signatures,
                    limit=settings.search_limit,
                    max_distance=settings.max_distance,
                )
                seconds[name].append(perf_counter() - started)
                if rep == 0:
                    first[name].append(found)
    out: dict[str, Any] = {}
    for name in names:
        answered = list(zip(queries, first[name], strict=True))
        out[name] = {
            "latency_ms": summary([s * 1e3 for s in seconds[name]]),
            "qps": len(seconds[name]) / sum(seconds[name]),
            "results_per_query": {
                kind: float(np.mean([len(r) for q, r in answered if q.kind == kind]))
                for kind in dict.fromkeys(q.kind for q in queries)
            },
            "true_match_found": float(
                np.mean(
                    [any(m.filepath == q.expected for m in r) for q, r in answered if q.expected]
                )
            ),
            "true_match_found_by_kind": {
                kind: float(
                    np.mean(
                        [
                            any(m.filepath == q.expected for m in r)
                            for q, r in answered
                            if q.kind == kind
                        ]
                    )
                )
                for kind in ("photo", "field")
            },
            "unrelated_with_match": float(
                np.mean([bool(r) for q, r in answered if not q.expected])
            ),
        }
    if "memory" in first:
        for name in names:
            pairs = [same_results(a, b) for a, b in zip(first[name], first["memory"], strict=True)]
            out[name]["recall_vs_memory"] = float(np.mean([p[0] for p in pairs]))
            out[name]["min_recall_vs_memory"] = float(min(p[0] for p in pairs))
            out[name]["max_distance_error"] = float(max(p[1] for p in pairs))
    return out


def bench_size(
    layout: Layout, args: argparse.Namespace, workdir: Path, settings: Settings
) -> dict[str, Any]:
    n = layout.size
    print(f"\n== {n:,} stored signatures ==", file=sys.stderr)
    db = workdir / f"store-{n}.db"
    ingest = ingest_sqlite(layout, db)
    print(f"  ingest {ingest['records_per_s']:,.0f} records/s", file=sys.stderr)
    reopens = [in_child("sqlite", str(db), layout.seed) for _ in range(args.reopen_runs)]
    milvus_ingest = milvus_reopens = None
    lite = workdir / f"store-{n}.milvus.db"
    if args.milvus:
        milvus_ingest = ingest_milvus(layout, lite)
        print(
            f"  Milvus Lite ingest {milvus_ingest['records_per_s']:,.0f} records/s, flush and"
            f" index {milvus_ingest['flush_and_index_s']:.1f} s",
            file=sys.stderr,
        )
        milvus_reopens = [in_child("milvus", str(lite), layout.seed) for _ in range(2)]
    with_memory = n <= args.memory_max
    memory_load = in_child("memory", str(n), layout.seed) if with_memory else None
    queries = make_queries(layout, args.queries)
    backends: dict[str, Backend] = {"sqlite": SQLiteBackend(db)}
    if args.milvus:
        from lookalike.backends.milvus import MilvusBackend

        backends["milvus"] = MilvusBackend(milvus_url(lite))
    if with_memory:
        memory = MemoryBackend()
        memory.add_many(records(layout))
        backends["memory"] = memory
    print(f"  searching {len(queries)} queries × {args.repeat} ...", file=sys.stderr)
    searches = time_searches(backends, queries, args.repeat, settings)
    for backend in backends.values():
        backend.close()
    for path in workdir.glob(db.name + "*"):  # the file, its journal, its index folder
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(lite, ignore_errors=True)
    return {
        "size": n,
        "layout": {"photos": layout.originals, "photo_edits": layout.edits},
        "sqlite_ingest": ingest,
        "sqlite_reopen": reopens,
        "sqlite_reopen_s_median": median(r["seconds"] for r in reopens),
        "milvus_ingest": milvus_ingest,
        "milvus_reopen": milvus_reopens,
        "memory_load": memory_load,
        "search": searches,
        "queries": len(queries),
        "repeat": args.repeat,
    }


# -- CLI ingest -----------------------------------------------------------------------------


def cli_image(job: tuple[Path, int, int]) -> None:
    """One 640×480 q90 JPEG: an edited crop of a photo, or a colour 1/f image."""
    folder, seed, index = job
    rng = np.random.default_rng([seed, 2_000_000, index])
    if index % 2:
        pixels = pink_photo(rng, 480, 640)
    else:
        library = photos()
        name = PHOTO_NAMES[int(rng.integers(len(PHOTO_NAMES)))]
        source = library.get(name, library["astronaut"])
        pixels = resize_to(crop(source, float(rng.uniform(0.5, 1.0)), rng), 640, 480)
        pixels = contrast(brightness(pixels, float(rng.uniform(0.8, 1.2))), rng.uniform(0.8, 1.2))
        if rng.random() < 0.5:
            pixels = mirror(pixels)
    pixels = add_grain(pixels, 2.0, rng)
    (folder / f"{index:06d}.jpg").write_bytes(encode(pixels, "JPEG", 90))


def prepare_cli_images(count: int, seed: int, jobs: int) -> Path:
    folder = CACHE / f"cli-{count}-s{seed}"
    marker = folder / "complete"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(cli_image, [(folder, seed, i) for i in range(count)], chunksize=16))
        marker.write_text(f"{count}\n")
    return folder


def bench_cli(folder: Path, count: int, runs: int, workers: int | None, workdir: Path) -> Any:
    outcomes = []
    for run in range(runs):
        db = workdir / f"cli-{run}.db"
        command = [sys.executable, "-m", "lookalike", "--store", f"sqlite:///{db}"]
        command += ["add", str(folder), "--quiet"]
        if workers:
            command += ["--workers", str(workers)]
        started = perf_counter()
        # From the project root: with -m, the working folder is first on the import path.
        done = subprocess.run(command, capture_output=True, text=True, cwd=BENCH.parent)
        wall = perf_counter() - started
        found = SUMMARY.search(done.stdout)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"lookalike add failed ({done.returncode}): {done.stderr.strip()}")
        added, failed, seconds, rate = found.groups()
        stored = SQLiteBackend(db)
        stored_count = stored.count()
        stored.close()
        for path in workdir.glob(db.name + "*"):
            path.unlink()
        outcomes.append(
            {
                "added": int(added),
                "failed": int(failed),
                "reported_s": float(seconds),
                "reported_images_per_s": float(rate),
                "wall_s": wall,
                "wall_images_per_s": int(added) / wall,
                "stored": stored_count,
            }
        )
        print(f"  cli run {run + 1}/{runs}: {done.stdout.strip()}", file=sys.stderr)
    return {
        "images": count,
        "runs": outcomes,
        "reported_images_per_s_median": median(o["reported_images_per_s"] for o in outcomes),
        "wall_images_per_s_median": median(o["wall_images_per_s"] for o in outcomes),
        "workers": workers or f"default ({os.cpu_count()} cores)",
    }


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check it works")
    parser.add_argument("--sizes", help="stored signatures, comma-separated (default 10000,100000)")
    parser.add_argument("--queries", type=int, help="queries per size (default 200, quick 40)")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the queries")
    parser.add_argument("--reopen-runs", type=int, default=3)
    parser.add_argument(
        "--memory-max",
        type=int,
        default=1_000_000,
        help="largest size also loaded into the memory backend (the recall oracle)",
    )
    parser.add_argument("--cli-images", type=int, help="JPEGs for `lookalike add` (default 2000)")
    parser.add_argument("--cli-runs", type=int, default=3)
    parser.add_argument("--cli-workers", type=int, help="`lookalike add --workers` (default: its)")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI ingest benchmark")
    parser.add_argument("--no-milvus", dest="milvus", action="store_false", help="skip Milvus Lite")
    parser.set_defaults(milvus=importlib.util.find_spec("pymilvus") is not None)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="generator processes")
    parser.add_argument(
        "--workdir", type=Path, help="where stores are written (default: a tmp dir)"
    )
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument(
        "--blas-threads",
        type=int,
        help="OPENBLAS/OMP/MKL_NUM_THREADS for this run, its children and the CLI "
        "(default: as the environment says, else one per core)",
    )
    parser.add_argument("--results", default="search", help="JSON name in bench/results/")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.blas_threads and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.blas_threads):
        # Thread pools are sized when NumPy is imported: start again with the variables set.
        threads = str(args.blas_threads)
        names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        env = {**os.environ, **dict.fromkeys(names, threads)}
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)

    if args.child:
        print(json.dumps(child_load(args.child[0], args.child[1], args.seed)))
        return 0

    sizes = [
        int(s.replace("_", ""))
        for s in (args.sizes or ("5000" if args.quick else "10000,100000")).split(",")
    ]
    args.queries = args.queries or (40 if args.quick else 200)
    cli_images = args.cli_images or (300 if args.quick else 2000)
    settings = Settings()
    layouts = [Layout(n, args.seed) for n in sizes]
    if min(sizes) < Layout(0, args.seed).originals + 1:
        parser.error("sizes must be larger than the number of stored photos")

    print(f"BLAS: {threadpools()}", file=sys.stderr)
    rate = single_core_rate(args.seed)
    print("preparing signatures ...", file=sys.stderr)
    generation = prepare_signatures(max(layouts, key=lambda x: x.size), args.jobs)
    folder = None if args.no_cli else prepare_cli_images(cli_images, args.seed, args.jobs)

    with tempfile.TemporaryDirectory(prefix="lookalike-bench-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        per_size = [bench_size(layout, args, workdir, settings) for layout in layouts]
        cli = None
        if folder is not None:
            print(f"\n== lookalike add: {cli_images} JPEGs ==", file=sys.stderr)
            cli = bench_cli(folder, cli_images, args.cli_runs, args.cli_workers, workdir)

    report(per_size, cli, rate, generation, settings)
    path = write_results(
        args.results,
        {
            "sizes": sizes,
            "queries": args.queries,
            "repeat": args.repeat,
            "limit": settings.search_limit,
            "max_distance": settings.max_distance,
            "seed": args.seed,
            "field_px": FIELD,
            "held_out_photos": HELD_OUT,
            "threadpools": threadpools(),
        },
        {"generation": {"single_core": rate, **generation}, "sizes": per_size, "cli_add": cli},
    )
    print(f"\nwrote {path}")
    return 0


def report(
    per_size: list[dict[str, Any]],
    cli: dict[str, Any] | None,
    rate: dict[str, float],
    generation: dict[str, Any],
    settings: Settings,
) -> None:
    print(
        f"\nsearch: 8 orientations per query, limit {settings.search_limit}, "
        f"cutoff {settings.max_distance}; latency of backend.search; BLAS threads: "
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')} ({os.cpu_count()} cores)"
    )
    rows = []
    for size in per_size:
        n = size["size"]
        for name, s in size["search"].items():
            load = {
                "sqlite": size["sqlite_reopen"][0],
                "milvus": (size["milvus_reopen"] or [None])[0],
            }.get(name, size["memory_load"])
            rows.append(
                [
                    f"{n:,}",
                    name,
                    f"{s['latency_ms']['p50']:.1f}",
                    f"{s['latency_ms']['p99']:.1f}",
                    f"{s['qps']:.1f}",
                    f"{s.get('recall_vs_memory', float('nan')):.3f}",
                    f"{s['true_match_found']:.2f}",
                    f"{load['rss_delta'] / n:,.0f}",
                    f"{load['peak_delta'] / n:,.0f}" if load["peak_delta"] is not None else None,
                    f"{load['memory_bytes'] / n:,.0f}" if load["memory_bytes"] else None,
                ]
            )
    headers = ["stored", "backend", "p50 ms", "p99 ms", "QPS", "recall", "found"]
    headers += ["RSS B/img", "peak B/img", "memory_bytes/img"]
    print(table(headers, rows))
    print(
        "recall: a store's results vs the memory backend's (exact); found: share of queries "
        "made from a stored item that find it; RSS: VmRSS growth loading the store in a fresh "
        "process (peak: during the load; Milvus Lite runs inside that process)"
    )
    lite = [s for s in per_size if s.get("milvus_ingest")]
    if lite:
        print("\nMilvus Lite store (default settings: HNSW M=16, ef 128+, 32 candidates first)")
        print(
            table(
                ["stored", "ingest rec/s", "flush + index s", "reopen s", "disk B/img"],
                [
                    [
                        f"{s['size']:,}",
                        f"{s['milvus_ingest']['records_per_s']:,.0f}",
                        f"{s['milvus_ingest']['flush_and_index_s']:.1f}",
                        f"{median(r['seconds'] for r in s['milvus_reopen']):.2f}",
                        f"{s['milvus_ingest']['disk_bytes_per_image']:,.0f}",
                    ]
                    for s in lite
                ],
            )
        )

    print("\nSQLite store")
    print(
        table(
            ["stored", "ingest rec/s", "first search s", "reopen s (median)", "disk B/img"],
            [
                [
                    f"{s['size']:,}",
                    f"{s['sqlite_ingest']['records_per_s']:,.0f}",
                    f"{s['sqlite_ingest']['catch_up_s']:.2f}",
                    f"{s['sqlite_reopen_s_median']:.2f}",
                    f"{s['sqlite_ingest']['disk_bytes_per_image']:,.0f}",
                ]
                for s in per_size
            ],
        )
    )
    print(
        f"\nstructured signatures: {rate['structured_per_s']:,.0f}/s on one core "
        f"(fields {rate['fields_per_s']:,.0f}/s, signatures {rate['signatures_per_s']:,.0f}/s)"
        + (
            f"; generated {generation['structured_chunks_generated'] * CHUNK:,} at "
            f"{generation['structured_per_s']:,.0f}/s with {generation['structured_per_s_jobs']} "
            "processes"
            if generation.get("structured_per_s")
            else "; all cached"
        )
    )
    if cli is not None:
        print(f"\nlookalike add: {cli['images']} JPEGs 640×480 q90, workers {cli['workers']}")
        print(
            table(
                ["run", "added", "failed", "reported s", "reported img/s", "wall s", "wall img/s"],
                [
                    [
                        i + 1,
                        o["added"],
                        o["failed"],
                        f"{o['reported_s']:.1f}",
                        f"{o['reported_images_per_s']:.0f}",
                        f"{o['wall_s']:.2f}",
                        f"{o['wall_images_per_s']:.0f}",
                    ]
                    for i, o in enumerate(cli["runs"])
                ]
                + [
                    [
                        "median",
                        "",
                        "",
                        "",
                        f"{cli['reported_images_per_s_median']:.0f}",
                        "",
                        f"{cli['wall_images_per_s_median']:.0f}",
                    ]
                ],
            )
        )


if __name__ == "__main__":
    sys.exit(main())
