"""One distance, whichever store finds the record: a property over random stores.

The same records and queries go to every store variant of the contract suite that can run
here (``conftest.STORES``: memory, SQLite with one or two connections, its IVF and HNSW
indices, Milvus Lite; Elasticsearch when ``LOOKALIKE_TEST_ES_URL`` names a server). Each
must answer the same ``(filepath, distance)`` list, to the bit, and that list is the
exact oracle's: ``signature.distance`` for signatures, ``support.exact_cosine_distances``
for embeddings. The cutoff is set to the exact distance of one stored record, which every
store must leave out (a match is strictly closer than the cutoff).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike import signature
from lookalike.backends import Backend
from lookalike.records import Record

from .conftest import STORES
from .support import exact_cosine_distances, near, perturb, random_signatures, unit_vectors


def runnable_stores() -> list[tuple[str, Callable[[Path], Backend]]]:
    """The store factories of ``STORES`` whose skip conditions do not hold here."""
    chosen = []
    for param in STORES:
        skipped = any(mark.name == "skipif" and bool(mark.args[0]) for mark in param.marks)
        if not skipped:
            chosen.append((str(param.id), param.values[0]))
    return chosen


@pytest.fixture(scope="module")
def store_kinds() -> list[tuple[str, Callable[[Path], Backend]]]:
    kinds = runnable_stores()
    assert {"memory", "sqlite", "sqlite-indexed", "sqlite-embedding-indexed"} <= {
        name for name, _ in kinds
    }
    return kinds


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lookalike-same-distances-") as folder:
        yield Path(folder)


def collection(seed: int, groups: int, copies: int) -> tuple[list[Record], np.random.Generator]:
    """Records in groups of near-copies (signatures and embeddings), with an exact twin."""
    rng = np.random.default_rng(seed)
    sigs = random_signatures(rng, groups)
    vectors = unit_vectors(rng, groups)
    records = []
    for g in range(groups):
        records.append(Record(f"g{g}/0", sigs[g], {"g": g}, embedding=vectors[g]))
        for c in range(1, copies + 1):
            fraction = float(rng.uniform(0.01, 0.3))
            cosine = float(rng.uniform(0.6, 0.99))
            records.append(
                Record(
                    f"g{g}/{c}",
                    perturb(rng, sigs[g], fraction),
                    {"g": g},
                    embedding=near(rng, vectors[g], cosine),
                )
            )
    twin = records[1] if copies else records[0]
    records.append(Record("twin", twin.signature, embedding=twin.embedding))
    return records, rng


def answers(matches: list) -> list[tuple[str, float]]:
    return [(m.filepath, m.distance) for m in matches]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    groups=st.integers(2, 8),
    copies=st.integers(0, 4),
    rows=st.integers(1, 8),
    at_cutoff=st.integers(0, 10**6),
    limit=st.integers(1, 30),
)
def test_every_store_reports_the_exact_distances_and_leaves_out_the_cutoff(
    store_kinds, scratch, seed, groups, copies, rows, at_cutoff, limit
) -> None:
    records, rng = collection(seed, groups, copies)
    base = records[int(rng.integers(0, len(records)))]
    assert base.embedding is not None
    sig_queries = np.stack([perturb(rng, base.signature, 0.1), *random_signatures(rng, 7)])[:rows]
    vec_queries = np.stack([near(rng, base.embedding, 0.9), *unit_vectors(rng, 7)])[:rows]

    sig_truth = {
        r.filepath: min(signature.distance(q, r.signature) for q in sig_queries) for r in records
    }
    stored = np.stack([r.embedding for r in records])
    per_row = [exact_cosine_distances(q, stored) for q in vec_queries]
    vec_truth = {r.filepath: min(d[i] for d in per_row) for i, r in enumerate(records)}
    sig_cut = sig_truth[records[at_cutoff % len(records)].filepath]
    vec_cut = vec_truth[records[at_cutoff % len(records)].filepath]

    def expected(truth: dict[str, float], cut: float) -> list[tuple[str, float]]:
        return sorted(((p, d) for p, d in truth.items() if d < cut), key=lambda x: (x[1], x[0]))[
            :limit
        ]

    folder = Path(tempfile.mkdtemp(dir=scratch))
    for name, factory in store_kinds:
        (folder / name).mkdir()
        store = factory(folder / name)
        try:
            half = len(records) // 2
            store.add_many(records[:half])  # one batch (indexed where the variant indexes)
            for record in records[half:]:  # and single adds (the delta beside an index)
                store.add(record)
            got = answers(store.search(sig_queries, limit=limit, max_distance=sig_cut))
            assert got == expected(sig_truth, sig_cut), (name, "signature")
            got = answers(store.search_embedding(vec_queries, limit=limit, max_distance=vec_cut))
            assert got == expected(vec_truth, vec_cut), (name, "embedding")
        finally:
            store.close()
