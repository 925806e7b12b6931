"""Recall of the Elasticsearch backend's candidate stages, emulated in memory (no server).

``backends/elasticsearch/`` sends one body per query orientation (8 rows) in one
``_msearch``, takes the union of the hits and re-ranks it exactly with the normalised
distance. Scores then equal brute force; only the candidate stage can lose a match. This
measures what each stage keeps, for store sizes ``--sizes`` (default 1k, 10k, 100k):

* **words** (``word_body``): image-match's bool/should of 63 ``term`` queries
  ``simple_word_i == words(row)[i]`` on ``long`` fields, top ``size`` hits by score. Since
  Elasticsearch 5, numeric fields are BKD points and a term query on them scores a constant
  (the 5.0 breaking changes, "Numeric fields"); the bool query adds the scores of the
  matching clauses, so a document's score is the number of its 63 words equal to the
  query's, and ``minimum_should_match: 1`` drops documents sharing none. Emulated exactly
  with NumPy over the stored words (``signature.words``, as image-match computes them).
  Equal scores are returned in Lucene's doc-id order: emulated as insertion order (one
  segment, no merges reordering; several shards or segments order ties otherwise), and,
  to show how much ties matter, also in a random order.
* **knn exact** (``knn_body``): HNSW over the signature as a byte vector with ``l2_norm``
  similarity returns the ``k`` nearest by L2 distance; emulated as the exact top ``k`` by
  L2 (ties by insertion order). HNSW can only miss some of these, so this is an upper
  bound on the real stage's recall.
* **knn hnsw**: a real HNSW graph (usearch, when installed: int8 vectors, squared L2,
  M = 16, ef_construction = 100 as the mapping asks, one graph) searched with
  ef = ``num_candidates`` = 2k, as lookalike sends. Elasticsearch searches one graph per
  segment and shard, each with ``num_candidates``, which recalls at least as much.

**Truth** is brute force (``SignatureMatrix.search``): every stored signature within the
cutoff 0.45 of a query row, the best 100 by (distance, filepath). Recall = truth found
among the candidates / truth (re-ranking keeps every such match in the best 100), pooled
over the near-duplicate queries ("photo", "field" from ``search.make_queries``) and per
kind. **found** = share of the queries whose original (``Query.expected``) is in the final
results; brute force's own rate (the ceiling) is the row "exact". **union** = mean number
of distinct candidates per query (8 rows), i.e. documents fetched and re-ranked.

Harder photo edits, apart (image-match's word stage is known to lose them): every stored
photo cropped to 90 % of each side (centred and at 2 random offsets), padded by 10 %
(white and black borders), rotated by ±5°.

Recall only: no latency is measured. Run it with one BLAS thread on a busy machine.

    python bench/candidates.py [--sizes 1000,10000,100000] [--queries 200] [--no-hnsw]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: see search.py

import argparse
import os
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt
import search
from common import crop, pad, photos, rotate, table, threadpools, write_results

from lookalike import signature
from lookalike.backends.scan import SignatureMatrix

CUTOFF = 0.45
LIMIT = 100
WORDS = signature.WORD_COUNT
WORD_SIZES = (100, 250, 500, 1000, 2500)  # image-match sends 100; lookalike defaults to 1000
KNN_KS = (100, 250, 500, 1000)  # num_candidates = 2k, as ElasticsearchBackend sends
NEAR_DUPLICATES = ("photo", "field")
HARD = ("crop 90 %", "pad 10 %", "rotate 5°")
QUERY_BATCH = 16  # queries (× 8 rows) per exact-kNN matrix product

Slots = npt.NDArray[np.int64]
Rankings = npt.NDArray[np.int64]  # (8, depth): slots in the order the stage returns them


# -- the stored set and the queries ---------------------------------------------------------


def stored(layout: search.Layout) -> tuple[list[str], npt.NDArray[np.int8]]:
    paths: list[str] = []
    blocks = []
    for names, block in search.stored_blocks(layout):
        paths += names
        blocks.append(block)
    return paths, np.concatenate(blocks)


def hard_queries(seed: int) -> list[search.Query]:
    """Crops, pads and slight rotations of every stored photo (see the module docstring)."""
    library = photos()
    rng = np.random.default_rng([seed, 6_000_000])
    edits: list[tuple[str, Callable[[Any], Any]]] = [
        ("crop 90 %", lambda im: crop(im, 0.9)),
        ("crop 90 %", lambda im: crop(im, 0.9, rng)),
        ("crop 90 %", lambda im: crop(im, 0.9, rng)),
        ("pad 10 %", lambda im: pad(im, 0.1, 255)),
        ("pad 10 %", lambda im: pad(im, 0.1, 0)),
        ("rotate 5°", lambda im: rotate(im, 5)),
        ("rotate 5°", lambda im: rotate(im, -5)),
    ]
    return [
        search.Query(kind, signature.orientations(edit(library[name])), f"photo/{name}.png")
        for name in search.stored_photos()
        for kind, edit in edits
    ]


# -- the candidate stages -------------------------------------------------------------------


def word_columns(signatures: npt.NDArray[np.int8]) -> npt.NDArray[np.int32]:
    """The 63 words of every stored signature, one row per word (3^16 fits in int32)."""
    return np.stack([signature.words(s) for s in signatures], axis=1).astype(np.int32)


def word_rankings(
    columns: npt.NDArray[np.int32],
    rows: npt.NDArray[np.int8],
    depth: int,
    order: Slots,
) -> Rankings:
    """The first ``depth`` hits of the should-of-terms query of each row: most equal words
    first, ties by ``order`` (a rank per slot: Lucene's doc ids), none sharing no word."""
    n = columns.shape[1]
    out = np.full((len(rows), depth), -1, dtype=np.int64)
    for r, row in enumerate(rows):
        score = np.zeros(n, dtype=np.uint8)
        for i, word in enumerate(signature.words(row)):
            score += columns[i] == word
        matched = np.flatnonzero(score)
        key = (WORDS - score[matched]).astype(np.int64) * n + order[matched]
        if len(key) > depth:
            pick = np.argpartition(key, depth - 1)[:depth]
            matched, key = matched[pick], key[pick]
        ranked = matched[np.argsort(key)]
        out[r, : len(ranked)] = ranked
    return out


def l2_rankings(
    stored32: npt.NDArray[np.float32],
    norms: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int8],
    depth: int,
) -> Rankings:
    """The exact ``depth`` nearest stored signatures of each row by L2, ties by slot.
    Products of small integers: exact in float32."""
    n = len(stored32)
    dots = rows.astype(np.float32) @ stored32.T
    squared = norms[None, :] - 2 * np.rint(dots).astype(np.int64)  # + |row|², same per row
    key = (squared + 4 * 648 * 4) * n + np.arange(n)[None, :]  # positive, unique
    depth = min(depth, n)
    pick = np.argpartition(key, depth - 1, axis=1)[:, :depth]
    picked = np.take_along_axis(key, pick, axis=1)
    ranked: Rankings = np.take_along_axis(pick, np.argsort(picked, axis=1), axis=1)
    return ranked


def hnsw_index(signatures: npt.NDArray[np.int8]) -> Any:
    """usearch's HNSW over the int8 signatures (squared L2), M = 16, ef_construction = 100."""
    from usearch.index import Index

    index = Index(
        ndim=signature.LENGTH, metric="l2sq", dtype="i8", connectivity=16, expansion_add=100
    )
    index.add(np.arange(len(signatures)), signatures, threads=1)
    return index


def hnsw_rankings(index: Any, rows: npt.NDArray[np.int8], k: int) -> Rankings:
    index.expansion_search = 2 * k  # num_candidates
    found = index.search(rows, k, threads=1)
    keys = np.asarray(found.keys, dtype=np.int64).copy()
    for r, count in enumerate(np.asarray(found.counts)):
        keys[r, count:] = -1
    return keys


def union(rankings: Rankings, depth: int) -> Slots:
    slots = np.unique(rankings[:, :depth])
    return slots[slots >= 0]


# -- measurement ----------------------------------------------------------------------------


def truth(matrix: SignatureMatrix, paths: list[str], query: search.Query) -> Slots:
    """The brute-force answer: the best LIMIT stored slots within the cutoff."""
    hits = matrix.search(query.signatures, CUTOFF)
    pairs = zip(hits.distances.tolist(), hits.slots.tolist(), strict=True)
    order = sorted(pairs, key=lambda pair: (pair[0], paths[pair[1]]))
    return np.asarray([slot for _, slot in order[:LIMIT]], dtype=np.int64)


def evaluate(
    queries: list[search.Query],
    answers: list[Slots],
    expected: list[int | None],
    candidates: list[Slots] | None,
) -> dict[str, Any]:
    """Recall of the in-cutoff matches among the candidates (``None``: brute force)."""
    kinds: dict[str, dict[str, float]] = {}
    every = zip(queries, answers, expected, candidates or answers, strict=True)
    for query, answer, original, found in every:
        kept = np.isin(answer, found)
        k = kinds.setdefault(
            query.kind,
            {"queries": 0, "matches": 0, "kept": 0, "query_recall": 0.0, "found": 0, "union": 0},
        )
        k["queries"] += 1
        k["matches"] += len(answer)
        k["kept"] += int(kept.sum())
        k["query_recall"] += float(kept.mean()) if len(answer) else 1.0
        k["found"] += int(original is not None and bool(np.any(answer[kept] == original)))
        k["union"] += len(found)
    by_kind = {
        kind: {
            "queries": int(k["queries"]),
            "matches": int(k["matches"]),
            "recall": k["kept"] / k["matches"] if k["matches"] else None,
            "mean_query_recall": k["query_recall"] / k["queries"],
            "found": k["found"] / k["queries"],
            "union_mean": k["union"] / k["queries"],
        }
        for kind, k in kinds.items()
    }
    near = [kinds[kind] for kind in NEAR_DUPLICATES if kind in kinds]
    hard = [kinds[kind] for kind in HARD if kind in kinds]
    matches = sum(k["matches"] for k in near)
    return {
        "recall": sum(k["kept"] for k in near) / matches if matches else None,
        "found": sum(k["found"] for k in near) / sum(k["queries"] for k in near),
        "found_hard_edits": (
            sum(k["found"] for k in hard) / sum(k["queries"] for k in hard) if hard else None
        ),
        "union_mean": sum(k["union"] for k in near) / sum(k["queries"] for k in near),
        "by_kind": by_kind,
    }


def bench_size(size: int, args: argparse.Namespace, extra: list[search.Query]) -> dict[str, Any]:
    print(f"\n== {size:,} stored signatures ==", file=sys.stderr)
    layout = search.Layout(size, args.seed)
    paths, signatures = stored(layout)
    n = len(signatures)
    slot_of = {path: i for i, path in enumerate(paths)}
    queries = search.make_queries(layout, args.queries) + extra
    expected = [slot_of.get(q.expected) if q.expected else None for q in queries]

    started = perf_counter()
    matrix = SignatureMatrix(capacity=n)
    matrix.append(signatures)
    answers = [truth(matrix, paths, q) for q in queries]
    print(f"  truth: {perf_counter() - started:.1f} s", file=sys.stderr)

    started = perf_counter()
    columns = word_columns(signatures)
    insertion = np.arange(n, dtype=np.int64)
    shuffled = np.random.default_rng([args.seed, 7_000_000, size]).permutation(n)
    depth = max(WORD_SIZES)
    words_in_order = [word_rankings(columns, q.signatures, depth, insertion) for q in queries]
    words_shuffled = [word_rankings(columns, q.signatures, depth, shuffled) for q in queries]
    del columns
    print(f"  words: {perf_counter() - started:.1f} s", file=sys.stderr)

    started = perf_counter()
    stored32 = signatures.astype(np.float32)
    norms = np.einsum("ij,ij->i", signatures.astype(np.int64), signatures.astype(np.int64))
    exact: list[Rankings] = []
    for start in range(0, len(queries), QUERY_BATCH):
        batch = queries[start : start + QUERY_BATCH]
        ranked = l2_rankings(
            stored32, norms, np.concatenate([q.signatures for q in batch]), max(KNN_KS)
        )
        exact += np.split(ranked, len(batch))
    del stored32
    print(f"  exact knn: {perf_counter() - started:.1f} s", file=sys.stderr)

    brute = evaluate(queries, answers, expected, None)
    brute["union_mean"] = n  # brute force compares every stored signature
    stages: list[dict[str, Any]] = [{"stage": "exact", "candidates": n, **brute}]
    for count in WORD_SIZES:
        for ties, rankings in (("insertion", words_in_order), ("random", words_shuffled)):
            found = [union(r, count) for r in rankings]
            stages.append(
                {
                    "stage": "words",
                    "ties": ties,
                    "candidates": count,
                    **evaluate(queries, answers, expected, found),
                }
            )
    for k in KNN_KS:
        found = [union(r, k) for r in exact]
        stages.append(
            {
                "stage": "knn exact",
                "candidates": k,
                "num_candidates": 2 * k,
                **evaluate(queries, answers, expected, found),
            }
        )
    hnsw: dict[str, Any] | None = None
    if args.hnsw:
        started = perf_counter()
        index = hnsw_index(signatures)
        hnsw = {"build_s": perf_counter() - started}
        for k in KNN_KS:
            found = [union(hnsw_rankings(index, q.signatures, k), k) for q in queries]
            stages.append(
                {
                    "stage": "knn hnsw",
                    "candidates": k,
                    "num_candidates": 2 * k,
                    **evaluate(queries, answers, expected, found),
                }
            )
        print(f"  hnsw: {perf_counter() - started:.1f} s", file=sys.stderr)
        del index
    return {
        "size": n,
        "layout": {
            "photos": layout.originals,
            "photo_edits": layout.edits,
            "fields": layout.structured,
        },
        "queries": {kind: sum(q.kind == kind for q in queries) for kind in kinds(queries)},
        "hnsw": hnsw,
        "stages": stages,
    }


def kinds(queries: list[search.Query]) -> list[str]:
    return list(dict.fromkeys(q.kind for q in queries))


# -- report ---------------------------------------------------------------------------------


def report(results: list[dict[str, Any]]) -> None:
    headers = ["stored", "stage", "per row", "recall", "photo", "field", *HARD]
    headers += ["found", "found edits", "union"]
    rows = []
    for result in results:
        for s in result["stages"]:
            by_kind = s["by_kind"]
            stage = s["stage"] + (" (random ties)" if s.get("ties") == "random" else "")
            per_row = "all" if s["stage"] == "exact" else str(s["candidates"])
            if "num_candidates" in s:
                per_row += f" / {s['num_candidates']}"
            rows.append(
                [
                    f"{result['size']:,}",
                    stage,
                    per_row,
                    f"{s['recall']:.3f}",
                    *(
                        f"{by_kind[kind]['recall']:.3f}"
                        if kind in by_kind and by_kind[kind]["recall"] is not None
                        else None
                        for kind in ("photo", "field", *HARD)
                    ),
                    f"{s['found']:.3f}",
                    None if s["found_hard_edits"] is None else f"{s['found_hard_edits']:.3f}",
                    f"{s['union_mean']:,.0f}",
                ]
            )
    print(table(headers, rows))
    print(
        f"recall: share of the brute-force matches (distance < {CUTOFF}, best {LIMIT} per "
        "query) among the union of the 8 rows' candidates; 'recall' pools the photo and field "
        "queries; the edit columns are stored photos cropped, padded, rotated; per row: words "
        "size, or knn k / num_candidates; found: photo and field queries whose original is in "
        "the final results (found edits: the same for the crops, pads and rotations); union: "
        "distinct candidates per photo or field query"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=200, help="per size, as search.py")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes generating missing data"
    )
    parser.add_argument("--no-hnsw", dest="hnsw", action="store_false", help="skip usearch")
    parser.add_argument("--results", default="candidates", help="JSON name in bench/results/")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    hnsw_version = None
    if args.hnsw:
        try:
            import usearch

            hnsw_version = usearch.__version__
        except ImportError:
            print("usearch is not installed: no real HNSW (pip install usearch)", file=sys.stderr)
            args.hnsw = False
    search.prepare_signatures(search.Layout(max(sizes), args.seed), args.jobs)
    extra = hard_queries(args.seed)
    results = [bench_size(size, args, extra) for size in sizes]
    report(results)
    path = write_results(
        args.results,
        {
            "sizes": sizes,
            "queries": args.queries,
            "hard_queries": len(extra),
            "max_distance": CUTOFF,
            "limit": LIMIT,
            "word_sizes": WORD_SIZES,
            "knn_k": KNN_KS,
            "num_candidates": "2k",
            "hnsw": {
                "library": f"usearch {hnsw_version}",
                "dtype": "i8",
                "metric": "l2sq",
                "connectivity": 16,
                "expansion_add": 100,
                "expansion_search": "num_candidates",
            }
            if args.hnsw
            else None,
            "seed": args.seed,
            "threadpools": threadpools(),
        },
        {"sizes": results},
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
