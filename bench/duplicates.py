"""The self-join behind ``lookalike duplicates``: time, peak memory and pair recall.

**Collection**: ``--sizes`` rows of realistic signatures from ``synthetic.py`` (9×9 grids
of 1/f patch means, then image-match's last steps), of which a tenth are copies of other
rows: edited (noise, contrast, brightness; strength 0.1–0.3), and half of those also turned
by one of the 7 other orientations. The rest are distractors.

**Figures**: the join's wall time (median of ``--repeats``), the process's peak resident
memory above its resident memory before the join, per image, and pair recall: for a
random sample of ``--sample`` rows, every pair they make with any row closer than the
cutoff, by brute force over all rows in all 8 orientations (``scan``'s exact arithmetic),
and the share of those the join reports, at the same distance.

    python bench/duplicates.py [--sizes 10000 100000 1000000] [--cutoff 0.45]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/http.py would shadow the standard library's

import argparse
import gc
import time

import numpy as np
import synthetic
from common import memory_status, reset_peak_rss, table, threadpools, write_results

from lookalike.backends.join import TURNS, signature_pairs
from lookalike.config import Settings


def collection(n: int, seed: int = 7) -> np.ndarray:
    """``n`` signatures, a tenth of them copies (edited, half also turned) of others."""
    rng = np.random.default_rng(seed)
    copies = n // 10
    rows = np.empty((n, 648), dtype=np.int8)
    originals = n - copies
    grids = []
    for k, start in enumerate(range(0, originals, 10_000)):
        size = min(10_000, originals - start)
        g, sigs = synthetic.chunk(seed, k, size)
        rows[start : start + size] = sigs
        grids.append(g)
    every = np.concatenate(grids)
    source = rng.choice(originals, size=copies, replace=False)
    strength = rng.uniform(0.1, 0.3, size=copies)
    edited = synthetic.edited(every[source], rng, strength)
    turn = np.where(rng.random(copies) < 0.5, rng.integers(1, 8, size=copies), 0)
    oriented = synthetic.oriented(edited)[np.arange(copies), turn]
    rows[originals:] = synthetic.signatures_of_grids(oriented)
    return rows[rng.permutation(n)]


def brute_force(rows: np.ndarray, sample: np.ndarray, cutoff: float) -> dict:
    """Every pair (sample row, any row) within the cutoff, by the exact arithmetic."""
    wide = rows.astype(np.int32)
    norms = np.einsum("ij,ij->i", wide, wide).astype(np.float64)
    del wide
    found: dict[tuple[int, int], float] = {}
    for start in range(0, len(sample), 256):
        queries = sample[start : start + 256]
        best = np.full((len(queries), len(rows)), np.inf)
        for turn in TURNS:
            a = rows[queries][:, turn].astype(np.float32)
            for s in range(0, len(rows), 50_000):
                b = rows[s : s + 50_000].astype(np.float32)
                sq = norms[queries][:, None] + norms[None, s : s + 50_000] - 2.0 * (a @ b.T)
                root = np.sqrt(norms[queries])[:, None] + np.sqrt(norms[None, s : s + 50_000])
                with np.errstate(invalid="ignore", divide="ignore"):
                    d = np.minimum(np.sqrt(np.maximum(sq, 0.0)) / root, 1.0)
                d[root == 0] = 1.0
                np.minimum(best[:, s : s + 50_000], d, out=best[:, s : s + 50_000])
        for i, j in zip(*np.nonzero(best < cutoff), strict=True):
            q = int(queries[i])
            if q != j:
                found[(min(q, int(j)), max(q, int(j)))] = float(best[i, j])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--cutoff", type=float, default=0.45)
    parser.add_argument("--nprobe", type=int, default=Settings().duplicates_nprobe)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-orientations", action="store_true")
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        rows = collection(n)
        gc.collect()
        before = memory_status()
        reset_peak_rss()
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            pairs = signature_pairs(
                rows, args.cutoff, orientations=not args.no_orientations, nprobe=args.nprobe
            )
            seconds.append(time.perf_counter() - started)
        peak = memory_status()["VmHWM"] - before["VmRSS"]
        sample = np.random.default_rng(n).choice(n, size=min(args.sample, n), replace=False)
        truth = brute_force(rows, sample, args.cutoff)
        reported = {
            (int(a), int(b)): float(d)
            for a, b, d in zip(pairs.first, pairs.second, pairs.distances, strict=True)
        }
        hits = sum(1 for pair, d in truth.items() if reported.get(pair) == d)
        wrong = sum(1 for pair, d in reported.items() if pair in truth and truth[pair] != d)
        results.append(
            {
                "images": n,
                "seconds": float(np.median(seconds)),
                "pairs": len(pairs),
                "peak_bytes_per_image": peak / n,
                "sampled_rows": len(sample),
                "true_pairs_of_sample": len(truth),
                "recall": hits / len(truth) if truth else 1.0,
                "distances_differing": wrong,
            }
        )
        r = results[-1]
        print(
            table(
                ["images", "seconds", "pairs", "peak B/image", "recall", "of pairs"],
                [
                    [
                        n,
                        f"{r['seconds']:.1f}",
                        r["pairs"],
                        f"{r['peak_bytes_per_image']:.0f}",
                        f"{r['recall']:.4f}",
                        r["true_pairs_of_sample"],
                    ]
                ],
            ),
            flush=True,
        )
        del rows, pairs
    config = {**vars(args), "threads": threadpools()}
    print(write_results("duplicates", config, {"runs": results}))


if __name__ == "__main__":
    main()
