"""SignatureMatrix and top(): the exhaustive search every store's exact path relies on."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike import signature
from lookalike.backends import scan
from lookalike.backends.scan import Hits, SignatureMatrix, top
from lookalike.signature import LENGTH

from .support import Mirror, perturb, random_signatures


def hits_by_slot(hits: Hits) -> dict[int, tuple[float, int]]:
    assert len(hits.slots) == len(hits.distances) == len(hits.orientations)
    assert len(set(hits.slots.tolist())) == len(hits.slots)
    return {
        int(s): (float(d), int(o))
        for s, d, o in zip(hits.slots, hits.distances, hits.orientations, strict=True)
    }


def brute(rows: dict[int, np.ndarray], queries: np.ndarray, cutoff: float) -> dict:
    """The expected hits by slot, from the test's own exact arithmetic."""
    mirror = Mirror()
    for slot, row in rows.items():
        mirror.add(str(slot), row)
    paths, best, orientation = mirror.distances(queries)
    return {
        int(p): (float(d), int(o))
        for p, d, o in zip(paths, best, orientation, strict=True)
        if d < cutoff
    }


def test_append_slots_and_counts(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    assert (matrix.used, matrix.live, len(matrix.alive)) == (0, 0, 0)
    sigs = random_signatures(rng, 5)
    assert matrix.append(sigs[:3]).tolist() == [0, 1, 2]
    assert matrix.append(sigs[3]).tolist() == [3]  # one 648-vector is one row
    assert matrix.append(sigs[4:4]).tolist() == []
    assert matrix.append(sigs[4:]).tolist() == [4]
    assert (matrix.used, matrix.live) == (5, 5)
    assert matrix.alive.tolist() == [True] * 5
    for slot, sig in enumerate(sigs):
        assert matrix.row(slot).tobytes() == sig.tobytes()


def test_row_is_a_copy(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    sig = random_signatures(rng, 1)[0]
    matrix.append(sig)
    row = matrix.row(0)
    row[:] = 0
    assert matrix.row(0).tobytes() == sig.tobytes()
    sig[:] = 0  # nor does the caller's array alias the stored row
    assert matrix.row(0).tobytes() != sig.tobytes()


def test_alive_is_a_read_only_view_of_used_slots(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix(capacity=100)
    matrix.append(random_signatures(rng, 3))
    alive = matrix.alive
    assert len(alive) == 3
    with pytest.raises(ValueError):
        alive[0] = False
    assert matrix.live == 3
    matrix.kill(1)
    assert matrix.alive.tolist() == [True, False, True]


def test_kill(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    sigs = random_signatures(rng, 4)
    matrix.append(sigs)
    matrix.kill(2)
    matrix.kill(2)  # twice is once
    assert (matrix.used, matrix.live) == (4, 3)
    assert matrix.alive.tolist() == [True, True, False, True]
    assert hits_by_slot(matrix.search(sigs, 2.0)).keys() == {0, 1, 3}
    assert hits_by_slot(matrix.search(sigs[2], 0.01)) == {}


def test_replace(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    sigs = random_signatures(rng, 4)
    matrix.append(sigs[:2])
    matrix.replace(1, sigs[2])  # a live slot: the count stays
    assert (matrix.used, matrix.live) == (2, 2)
    assert matrix.row(1).tobytes() == sigs[2].tobytes()
    assert hits_by_slot(matrix.search(sigs[2], 0.01)) == {1: (0.0, 0)}
    assert hits_by_slot(matrix.search(sigs[1], 0.3)) == {}

    matrix.kill(0)
    matrix.replace(0, sigs[3])  # a dead slot comes back to life
    assert (matrix.used, matrix.live) == (2, 2)
    assert matrix.alive.tolist() == [True, True]
    assert hits_by_slot(matrix.search(sigs[3], 0.01)) == {0: (0.0, 0)}
    assert hits_by_slot(matrix.search(sigs[0], 0.3)) == {}


def test_search_is_exact(rng: np.random.Generator) -> None:
    """Distances are bit-identical to signature.distance; orientation is the best row."""
    matrix = SignatureMatrix()
    sigs = random_signatures(rng, 300)
    for i in range(0, 300, 3):
        sigs[i + 1] = perturb(rng, sigs[i], 0.05)
        sigs[i + 2] = perturb(rng, sigs[i], 0.2)
    sigs[7] = 0
    matrix.append(sigs)
    rows = dict(enumerate(sigs))
    queries = random_signatures(rng, 8)
    queries[3] = perturb(rng, sigs[30], 0.1)
    queries[5] = sigs[60]
    queries[6] = 0
    for cutoff in (0.01, 0.3, 0.45, 1.0, 1.01):
        for q in (queries, queries[5], queries[[6]], sigs[:1]):
            got = hits_by_slot(matrix.search(q, cutoff))
            assert got == brute(rows, q, cutoff)
    got = hits_by_slot(matrix.search(queries, 0.45))
    assert got[60] == (0.0, 5)
    assert got[30][1] == 3
    for slot, (d, row) in got.items():
        assert d == signature.distance(queries[row], sigs[slot])
        assert d == min(signature.distance(q, sigs[slot]) for q in queries)


def test_search_zero_rows_are_at_distance_one() -> None:
    matrix = SignatureMatrix()
    zero = np.zeros(LENGTH, dtype=np.int8)
    one = np.ones(LENGTH, dtype=np.int8)
    matrix.append(np.stack([zero, one]))
    assert hits_by_slot(matrix.search(zero, 1.0)) == {}
    assert hits_by_slot(matrix.search(zero, 1.5)) == {0: (1.0, 0), 1: (1.0, 0)}
    assert hits_by_slot(matrix.search(np.stack([zero, one]), 1.5)) == {0: (1.0, 0), 1: (0.0, 1)}


def test_search_ties_between_rows_report_the_first(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    sig = random_signatures(rng, 1)[0]
    matrix.append(sig)
    queries = random_signatures(rng, 8)
    queries[2] = queries[6] = sig
    assert hits_by_slot(matrix.search(queries, 0.5)) == {0: (0.0, 2)}


def test_search_cutoff_is_strict(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    base = random_signatures(rng, 1)[0]
    near = perturb(rng, base, 0.1)
    matrix.append(near)
    d = signature.distance(base, near)
    assert hits_by_slot(matrix.search(base, d)) == {}
    assert hits_by_slot(matrix.search(base, float(np.nextafter(d, 1.0)))) == {0: (d, 0)}


def test_search_allowed_mask(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    sigs = random_signatures(rng, 10)
    matrix.append(sigs)
    matrix.kill(4)
    allowed = np.zeros(10, dtype=bool)
    allowed[[1, 4, 7, 9]] = True
    got = hits_by_slot(matrix.search(sigs, 2.0, allowed))
    assert got.keys() == {1, 7, 9}  # 4 is allowed but dead
    assert all(d == 0.0 and row == slot for slot, (d, row) in got.items())
    assert hits_by_slot(matrix.search(sigs, 2.0, np.zeros(10, dtype=bool))) == {}
    assert hits_by_slot(matrix.search(sigs, 2.0, np.ones(10, dtype=bool))).keys() == (
        set(range(10)) - {4}
    )


def test_search_empty() -> None:
    matrix = SignatureMatrix()
    hits = matrix.search(np.ones(LENGTH, dtype=np.int8), 2.0)
    assert len(hits.slots) == len(hits.distances) == len(hits.orientations) == 0
    assert hits.slots.dtype == np.int64 and hits.orientations.dtype == np.int64
    assert hits.distances.dtype == np.float64


def test_growth_across_capacity(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix(capacity=16)
    start = matrix.nbytes
    sigs = random_signatures(rng, 300)
    slots = [int(matrix.append(sigs[i])[0]) for i in range(40)]
    slots += matrix.append(sigs[40:300]).tolist()
    assert slots == list(range(300))
    assert (matrix.used, matrix.live) == (300, 300)
    assert matrix.nbytes > start
    assert matrix.nbytes >= 300 * (LENGTH + 4 + 1)
    for slot in (0, 15, 16, 17, 39, 40, 299):
        assert matrix.row(slot).tobytes() == sigs[slot].tobytes()
    got = hits_by_slot(matrix.search(sigs[[0, 16, 299]], 0.01))
    assert got == {0: (0.0, 0), 16: (0.0, 1), 299: (0.0, 2)}


def test_search_across_chunks(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are scored in chunks; hits and masks line up across chunk boundaries."""
    monkeypatch.setattr(scan, "_CHUNK_ROWS", 7)
    matrix = SignatureMatrix()
    sigs = random_signatures(rng, 50)
    for i in range(0, 50, 2):
        sigs[i + 1] = perturb(rng, sigs[i], 0.1)
    matrix.append(sigs)
    for slot in range(0, 14):  # the first two chunks entirely dead
        matrix.kill(slot)
    allowed = np.ones(50, dtype=bool)
    allowed[30:40] = False
    queries = sigs[[6, 20, 34, 48]]
    rows = {s: sigs[s] for s in range(14, 50) if allowed[s]}
    assert hits_by_slot(matrix.search(queries, 0.45, allowed)) == brute(rows, queries, 0.45)
    assert set(hits_by_slot(matrix.search(queries, 0.45, allowed))) == {20, 21, 48, 49}


def test_search_more_rows_than_a_chunk(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    n = scan._CHUNK_ROWS * 2 + 100
    sigs = random_signatures(rng, n)
    matrix.append(sigs)
    queries = sigs[[0, scan._CHUNK_ROWS - 1, scan._CHUNK_ROWS, n - 1]]
    got = hits_by_slot(matrix.search(queries, 0.01))
    assert got == {0: (0.0, 0), scan._CHUNK_ROWS - 1: (0.0, 1), scan._CHUNK_ROWS: (0.0, 2)} | {
        n - 1: (0.0, 3)
    }


def test_compact(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix(capacity=16)
    sigs = random_signatures(rng, 40)
    matrix.append(sigs)
    dead = [0, 3, 4, 17, 39]
    for slot in dead:
        matrix.kill(slot)
    kept = [s for s in range(40) if s not in dead]
    old_of_new = matrix.compact()
    assert old_of_new.tolist() == kept
    assert old_of_new.dtype == np.int64
    assert (matrix.used, matrix.live) == (35, 35)
    assert matrix.alive.tolist() == [True] * 35
    for new, old in enumerate(kept):
        assert matrix.row(new).tobytes() == sigs[old].tobytes()
    got = hits_by_slot(matrix.search(sigs[[5, 39]], 0.01))
    assert got == {kept.index(5): (0.0, 0)}
    # and it keeps working: appends after the survivors, kills, another compaction
    assert matrix.append(sigs[:2]).tolist() == [35, 36]
    matrix.kill(0)
    assert matrix.compact().tolist() == list(range(1, 37))
    assert matrix.row(0).tobytes() == sigs[kept[1]].tobytes()
    assert matrix.row(35).tobytes() == sigs[1].tobytes()
    assert hits_by_slot(matrix.search(sigs[0], 0.01)) == {34: (0.0, 0)}


def test_compact_everything_dead(rng: np.random.Generator) -> None:
    matrix = SignatureMatrix()
    sigs = random_signatures(rng, 5)
    matrix.append(sigs)
    for slot in range(5):
        matrix.kill(slot)
    assert matrix.compact().tolist() == []
    assert (matrix.used, matrix.live) == (0, 0)
    assert hits_by_slot(matrix.search(sigs, 2.0)) == {}
    assert matrix.append(sigs[0]).tolist() == [0]


def test_nbytes_counts_the_arrays() -> None:
    matrix = SignatureMatrix(capacity=1000)
    assert matrix.nbytes == 1000 * (LENGTH + 4 + 1 + 8)  # rows, norms, liveness, keys


# -- top ---------------------------------------------------------------------------------


def make_hits(distances: list[float]) -> Hits:
    n = len(distances)
    return Hits(
        np.arange(n, dtype=np.int64), np.array(distances, dtype=np.float64), np.zeros(n, np.int64)
    )


def test_top_keeps_ties_with_the_last() -> None:
    hits = make_hits([0.3, 0.1, 0.2, 0.2, 0.4, 0.2, 0.05])
    assert sorted(top(hits, 1).tolist()) == [6]
    assert sorted(top(hits, 2).tolist()) == [1, 6]
    assert sorted(top(hits, 3).tolist()) == [1, 2, 3, 5, 6]  # every 0.2
    assert sorted(top(hits, 5).tolist()) == [1, 2, 3, 5, 6]
    assert sorted(top(hits, 6).tolist()) == [0, 1, 2, 3, 5, 6]
    assert sorted(top(hits, 7).tolist()) == list(range(7))
    assert sorted(top(hits, 100).tolist()) == list(range(7))
    assert top(make_hits([]), 5).tolist() == []
    assert sorted(top(make_hits([0.1] * 5), 2).tolist()) == list(range(5))


def test_top_of_nothing_is_nothing() -> None:
    assert top(make_hits([0.3, 0.1, 0.2]), 0).tolist() == []
