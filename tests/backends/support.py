"""Helpers for the store tests, and a worker process that drives a SQLite store.

The tests import the helpers. Run as a script, this module is another process on a store:

``python support.py write DB START``
    adds records ``w-START``, ``w-START+1``, … in small batches (sizes from ``batch_sizes``),
    printing each filepath on its own line *after* the add that stored it has returned,
    until it is killed.
``python support.py serve DB``
    reads one JSON command per stdin line and answers one JSON line on stdout (see
    ``_serve``), until stdin closes.

Only NumPy and lookalike are imported, so the worker starts quickly.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from lookalike import signature as goldberg
from lookalike.records import Match, Metadata, Record, matches_filter
from lookalike.signature import LENGTH, ORIENTATIONS
from lookalike.vectors import EMBEDDING_DIMENSION

Signature = npt.NDArray[np.int8]


def exact_cosine_distances(query: npt.ArrayLike, stored: npt.ArrayLike) -> list[float]:
    """1 − cosine of a query row (scaled to unit length by its exact norm, then rounded to
    float32, as a search takes it) and each stored vector (float16 values), by the
    definition every store reports, written out here rather than taken from lookalike:
    values as integers in units of 2**-24 (queries rounded to that grid, half to even),
    the dot products and squared norms summed exactly (Python integers for the query,
    int64 sums far from overflow for the rows), then ``dot / (sqrt(‖v‖²) · sqrt(‖q‖²))``
    in float64."""
    q = [float(x) for x in np.asarray(query, dtype=np.float32)]
    norm = max(math.sqrt(math.fsum(x * x for x in q)), 1e-12)
    unit = np.array([x / norm for x in q], dtype=np.float32)
    qi = np.array([round(float(x) * 2**24) for x in unit], dtype=np.int64)
    rows = np.atleast_2d(np.asarray(stored, dtype=np.float32).astype(np.float16))
    vi = (rows.astype(np.float64) * 2**24).astype(np.int64)  # exact: float16 is on the grid
    q_norm = math.sqrt(float(sum(int(a) * int(a) for a in qi)))
    denominators = np.sqrt((vi * vi).sum(axis=1).astype(np.float64)) * q_norm
    dots = (vi * qi).sum(axis=1).astype(np.float64)
    cosines = np.divide(dots, denominators, out=np.zeros_like(dots), where=denominators > 0)
    return [1.0 - float(c) for c in cosines]


def exact_cosine_distance(query: npt.ArrayLike, stored: npt.ArrayLike) -> float:
    """``exact_cosine_distances`` of one stored vector."""
    return exact_cosine_distances(query, stored)[0]


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random unit embeddings, rounded as stores keep them (float16)."""
    vectors = rng.normal(size=(n, EMBEDDING_DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float16).astype(np.float32)


def near(rng: np.random.Generator, vector: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at about ``cosine`` similarity to ``vector``."""
    noise = rng.normal(size=vector.shape).astype(np.float32)
    noise -= noise @ vector * vector
    noise /= np.linalg.norm(noise)
    mixed = cosine * vector + math.sqrt(1 - cosine**2) * noise
    return (mixed / np.linalg.norm(mixed)).astype(np.float16).astype(np.float32)


def random_signatures(rng: np.random.Generator, n: int) -> npt.NDArray[np.int8]:
    """``n`` signatures with values drawn uniformly from {-2 … 2}: mutually far apart."""
    return rng.integers(-2, 3, size=(n, LENGTH), dtype=np.int8)


def perturb(rng: np.random.Generator, signature: Signature, fraction: float = 0.1) -> Signature:
    """A near-copy: ``fraction`` of the values changed to another value in {-2 … 2}."""
    changed = signature.copy()
    where = rng.choice(LENGTH, size=round(fraction * LENGTH), replace=False)
    shift = rng.integers(1, 5, size=len(where))
    changed[where] = ((changed[where].astype(np.int64) + 2 + shift) % 5 - 2).astype(np.int8)
    return changed


def smooth_signatures(rng: np.random.Generator, n: int, size: int = 40) -> npt.NDArray[np.int8]:
    """Signatures of random smooth grey images: structured like photos' signatures."""
    out = np.empty((n, LENGTH), dtype=np.int8)
    fx = np.fft.fftfreq(size)[:, None]
    fy = np.fft.fftfreq(size)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size) ** 1.8
    for i in range(n):
        noise = rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))
        field = np.real(np.fft.ifft2(noise * falloff))
        field = (field - field.min()) / (np.ptp(field) or 1.0)
        out[i] = goldberg.signature(field)
    return out


def numbered_signature(i: int) -> Signature:
    """The signature the ``write`` worker stores for record number ``i``."""
    return np.random.default_rng(i).integers(-2, 3, size=LENGTH, dtype=np.int8)


def batch_sizes(start: int) -> Iterator[range]:
    """The record numbers the ``write`` worker stores together, one add_many per range."""
    i, n = start, 0
    while True:
        size = 1 + n % 3
        yield range(i, i + size)
        i, n = i + size, n + 1


def orientation_row(match: Match) -> int:
    """The query row a match was found with, whether the backend names or numbers it."""
    orientation: Any = match.orientation
    if isinstance(orientation, str):
        return ORIENTATIONS.index(orientation)
    return int(orientation)


class Mirror:
    """What a store should hold: a dict in insertion order (a replace keeps its place)."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[Signature, Metadata | None]] = {}

    def add(self, filepath: str, signature: Signature, metadata: Metadata | None = None) -> None:
        self.records[filepath] = (signature.copy(), metadata)

    def delete(self, filepath: str) -> bool:
        return self.records.pop(filepath, None) is not None

    def search(
        self,
        queries: npt.ArrayLike,
        *,
        limit: int,
        max_distance: float,
        where: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, float, int]]:
        """The exact answer, by brute force in float64 over integer sums (no BLAS)."""
        allowed = None if where is None else self.matching(where)
        return self.select(self.distances(queries), limit, max_distance, allowed)

    def matching(self, where: Mapping[str, Any]) -> set[str]:
        return {path for path, (_, meta) in self.records.items() if matches_filter(meta, where)}

    @staticmethod
    def select(
        table: tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.int64]],
        limit: int,
        max_distance: float,
        allowed: set[str] | None = None,
    ) -> list[tuple[str, float, int]]:
        """The answer from a ``distances`` table: below the cutoff, best first, by path."""
        paths, best, rows = table
        hits = sorted(
            (float(best[i]), paths[i], int(rows[i]))
            for i in np.flatnonzero(best < max_distance)
            if allowed is None or paths[i] in allowed
        )
        return [(path, d, row) for d, path, row in hits[:limit]]

    def distances(
        self, queries: npt.ArrayLike
    ) -> tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Each record's smallest distance to any query row, and that row (the first of
        equal ones)."""
        paths = list(self.records)
        if not paths:
            return [], np.zeros(0), np.zeros(0, dtype=np.int64)
        stored = np.stack([self.records[path][0] for path in paths]).astype(np.int64)
        q = np.asarray(queries, dtype=np.int64).reshape(-1, LENGTH)
        stored_roots = np.sqrt((stored * stored).sum(axis=1).astype(np.float64))
        d = np.empty((len(stored), len(q)))
        for j, row in enumerate(q):
            diff = np.sqrt(((stored - row) ** 2).sum(axis=1).astype(np.float64))
            denominator = stored_roots + np.sqrt(float(row @ row))
            with np.errstate(invalid="ignore", divide="ignore"):
                d[:, j] = diff / denominator
            d[denominator == 0, j] = 1.0
        rows = d.argmin(axis=1)
        return paths, d[np.arange(len(d)), rows], rows.astype(np.int64)


def found(matches: list[Match]) -> list[tuple[str, float, int]]:
    """A search answer in the shape ``Mirror.search`` gives."""
    return [(m.filepath, m.distance, orientation_row(m)) for m in matches]


# -- the worker process ------------------------------------------------------------------


def _write(path: str, start: int) -> None:
    from lookalike.backends.sqlite import SQLiteBackend

    store = SQLiteBackend(path)
    for numbers in batch_sizes(start):
        records = [Record(f"w-{i}", numbered_signature(i), {"i": i}) for i in numbers]
        if len(records) == 1:
            store.add(records[0])
        else:
            assert store.add_many(records) == len(records)
        sys.stdout.write("".join(f"{record.filepath}\n" for record in records))
        sys.stdout.flush()
        if numbers.stop > start + 1_000_000:  # never reached when the test kills us
            return


def _serve(path: str) -> None:
    """Commands: add, delete, get, count, list, search; answers {"ok": …} or {"error": …}."""
    from lookalike.backends.sqlite import SQLiteBackend

    store = SQLiteBackend(path)
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        try:
            if op == "add":
                signature = np.array(command["signature"], dtype=np.int8)
                store.add(Record(command["filepath"], signature, command.get("metadata")))
                answer: Any = None
            elif op == "delete":
                answer = store.delete(command["filepath"])
            elif op == "get":
                record = store.get(command["filepath"])
                answer = record and {
                    "signature": record.signature.tolist(),
                    "metadata": record.metadata,
                    "created": record.created,
                    "updated": record.updated,
                }
            elif op == "count":
                answer = store.count()
            elif op == "stats":
                answer = store.stats()
            elif op == "mapped":  # the files this process has memory-mapped
                with open("/proc/self/maps") as maps:
                    answer = sorted({line.split()[-1] for line in maps if line.count(" ") > 4})
            elif op == "list":
                answer = store.list(command["offset"], command["limit"])
            elif op == "search":
                matches = store.search(
                    np.array(command["queries"], dtype=np.int8),
                    limit=command["limit"],
                    max_distance=command["max_distance"],
                    where=command.get("where"),
                )
                answer = [[m.filepath, m.distance, orientation_row(m), m.metadata] for m in matches]
            else:
                raise ValueError(f"unknown op {op!r}")
            reply = {"ok": answer}
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    store.close()


if __name__ == "__main__":
    if sys.argv[1] == "write":
        _write(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "serve":
        _serve(sys.argv[2])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} write DB START | serve DB")
