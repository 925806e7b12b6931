"""The Backend contract (``lookalike/backends/base.py``), checked on every store in STORES.

The exactness oracle at the end compares every store with a brute-force search written
here (integer sums, one square root, one division: the arithmetic of
``signature.distance``), and with ``memory``, the reference backend.
"""

from __future__ import annotations

import math
import threading
import time
import unicodedata
from typing import Any

import numpy as np
import pytest

from lookalike import signature
from lookalike.backends import Backend
from lookalike.backends.memory import MemoryBackend
from lookalike.errors import ConfigError, InvalidRequest, NotFound
from lookalike.records import MAX_THUMBNAIL_BYTES, Preview, Record
from lookalike.signature import LENGTH, ORIENTATIONS
from lookalike.vectors import EMBEDDING_DIMENSION

from .support import (
    Mirror,
    exact_cosine_distances,
    found,
    near,
    orientation_row,
    perturb,
    random_signatures,
    unit_vectors,
)

EVERYTHING = 10**9


def all_paths(backend: Backend) -> list[str]:
    return backend.list(0, EVERYTHING)


def exact(backend: Backend, sig: np.ndarray, **options: Any) -> list[str]:
    """Filepaths stored with exactly this signature (or within a tiny cutoff)."""
    options.setdefault("limit", EVERYTHING)
    options.setdefault("max_distance", 1e-9)
    return [m.filepath for m in backend.search(sig[None, :], **options)]


# -- the protocol ------------------------------------------------------------------------


def test_is_a_backend(backend: Backend) -> None:
    assert isinstance(backend, Backend)


def test_empty_store(backend: Backend, rng: np.random.Generator) -> None:
    assert backend.count() == 0
    assert backend.list() == []
    assert backend.get("nothing") is None
    assert backend.delete("nothing") is False
    assert backend.search(random_signatures(rng, 8), limit=10, max_distance=2.0) == []


# -- add / get / replace -----------------------------------------------------------------


def test_add_get_round_trip(backend: Backend, rng: np.random.Generator) -> None:
    sig = random_signatures(rng, 1)[0]
    metadata = {"title": "Chat 🐱", "n": 3, "x": 2.5, "ok": True, "nested": {"a": [1, None]}}
    before = time.time()
    backend.add(Record("cats/1.jpg", sig.copy(), metadata))
    after = time.time()

    record = backend.get("cats/1.jpg")
    assert record is not None
    assert record.filepath == "cats/1.jpg"
    assert record.signature.dtype == np.int8
    assert record.signature.shape == (LENGTH,)
    assert record.signature.tobytes() == sig.tobytes()
    assert record.metadata == metadata
    assert record.created is not None and record.updated is not None
    assert before <= record.created <= record.updated <= after
    assert backend.count() == 1
    assert backend.get("cats/2.jpg") is None


def test_add_without_metadata(backend: Backend, rng: np.random.Generator) -> None:
    backend.add(Record("a", random_signatures(rng, 1)[0]))
    record = backend.get("a")
    assert record is not None
    assert record.metadata is None


def test_add_stores_values_not_references(backend: Backend, rng: np.random.Generator) -> None:
    """Changing the caller's signature or metadata after add must not change the store."""
    sig = random_signatures(rng, 1)[0]
    metadata: dict[str, Any] = {"kind": "cat"}
    backend.add(Record("a", sig, metadata))
    original = sig.copy()
    sig[:] = 0
    metadata["kind"] = "dog"

    record = backend.get("a")
    assert record is not None
    assert record.signature.tobytes() == original.tobytes()
    assert record.metadata == {"kind": "cat"}
    assert exact(backend, original, where={"kind": "cat"}) == ["a"]
    assert exact(backend, original, where={"kind": "dog"}) == []


def test_replace_keeps_created_and_bumps_updated(
    backend: Backend, rng: np.random.Generator
) -> None:
    old, new = random_signatures(rng, 2)
    backend.add(Record("a", old, {"v": 1}))
    first = backend.get("a")
    assert first is not None
    time.sleep(0.01)
    backend.add(Record("a", new, {"v": 2}))
    second = backend.get("a")
    assert second is not None

    assert second.signature.tobytes() == new.tobytes()
    assert second.metadata == {"v": 2}
    assert second.created == first.created
    assert second.updated is not None and first.updated is not None
    assert second.updated > first.updated


def test_a_record_given_its_times_keeps_them(backend: Backend, rng: np.random.Generator) -> None:
    """An import writes records with the times they had: kept as given, also over an
    existing record; a later add without times keeps the creation time."""
    first, second = random_signatures(rng, 2)
    backend.add(Record("old", first))
    backend.add_many(
        [
            Record("imported", first, created=1_000.5, updated=2_000.25),
            Record("old", second, created=500.0, updated=600.0),
        ]
    )
    for path, times in {"imported": (1_000.5, 2_000.25), "old": (500.0, 600.0)}.items():
        got = backend.get(path)
        assert got is not None and (got.created, got.updated) == times, path
    backend.add(Record("imported", second))
    again = backend.get("imported")
    assert again is not None and again.created == 1_000.5
    assert again.updated is not None and again.updated > 2_000.25


def test_get_many_is_get_for_many(backend: Backend, rng: np.random.Generator) -> None:
    sigs = random_signatures(rng, 3)
    vector = unit_vectors(rng, 1)[0]
    backend.add_many(
        [
            Record("a", sigs[0], {"k": 1}),
            Record("b", sigs[1], embedding=vector),
            Record("c", sigs[2]),
        ]
    )
    backend.delete("c")
    found = backend.get_many(["b", "missing", "a", "c"])
    assert sorted(found) == ["a", "b"]
    for path, record in found.items():
        single = backend.get(path)
        assert single is not None and record.filepath == path
        assert record.signature.tobytes() == single.signature.tobytes()
        assert (record.metadata, record.created, record.updated) == (
            single.metadata, single.created, single.updated,
        )  # fmt: skip
    embedding = found["b"].embedding
    assert embedding is not None and np.array_equal(embedding, vector.astype(np.float16))
    assert found["a"].embedding is None
    assert backend.get_many([]) == {}


def test_replace_is_searched_with_the_new_signature(
    backend: Backend, rng: np.random.Generator
) -> None:
    old, new, other = random_signatures(rng, 3)
    backend.add(Record("a", old, {"v": 1}))
    backend.add(Record("b", other))
    assert exact(backend, old) == ["a"]  # searched once before it changes
    backend.add(Record("a", new, {"v": 2}))

    assert backend.count() == 2
    assert all_paths(backend) == ["a", "b"]
    [match] = backend.search(new[None, :], limit=10, max_distance=0.3)
    assert (match.filepath, match.distance, match.metadata) == ("a", 0.0, {"v": 2})
    assert backend.search(old[None, :], limit=10, max_distance=0.3) == []
    assert exact(backend, new, where={"v": 2}) == ["a"]
    assert exact(backend, new, where={"v": 1}) == []


def test_replace_can_clear_metadata(backend: Backend, rng: np.random.Generator) -> None:
    sig = random_signatures(rng, 1)[0]
    backend.add(Record("a", sig, {"v": 1}))
    backend.add(Record("a", sig))
    record = backend.get("a")
    assert record is not None
    assert record.metadata is None
    assert exact(backend, sig, where={"v": 1}) == []
    assert exact(backend, sig) == ["a"]


# -- add_many ----------------------------------------------------------------------------


def test_add_many_more_than_a_batch(backend: Backend, rng: np.random.Generator) -> None:
    n = 5000 * 2 + 7
    sigs = random_signatures(rng, n)
    records = (Record(f"img/{i:05d}", sigs[i], {"i": i}) for i in range(n))  # an iterator
    assert backend.add_many(records) == n
    assert backend.count() == n
    assert all_paths(backend) == [f"img/{i:05d}" for i in range(n)]
    for i in (0, 4999, 5000, 5001, 9999, 10000, n - 1):
        record = backend.get(f"img/{i:05d}")
        assert record is not None
        assert record.signature.tobytes() == sigs[i].tobytes()
        assert record.metadata == {"i": i}
        assert exact(backend, sigs[i]) == [f"img/{i:05d}"]


def test_add_many_empty_and_duplicates(backend: Backend, rng: np.random.Generator) -> None:
    assert backend.add_many([]) == 0
    assert backend.count() == 0
    a1, b, a2 = random_signatures(rng, 3)
    assert backend.add_many([Record("a", a1), Record("b", b), Record("a", a2, {"last": 1})]) == 3
    assert backend.count() == 2
    assert all_paths(backend) == ["a", "b"]
    record = backend.get("a")
    assert record is not None
    assert record.signature.tobytes() == a2.tobytes()
    assert record.metadata == {"last": 1}
    assert exact(backend, a1) == []
    assert exact(backend, a2) == ["a"]


def test_add_many_replaces_existing(backend: Backend, rng: np.random.Generator) -> None:
    sigs = random_signatures(rng, 6)
    backend.add_many(Record(p, s) for p, s in zip("abc", sigs[:3], strict=True))
    assert backend.add_many([Record("b", sigs[3]), Record("d", sigs[4])]) == 2
    assert all_paths(backend) == ["a", "b", "c", "d"]
    assert exact(backend, sigs[1]) == []
    assert exact(backend, sigs[3]) == ["b"]


# -- delete ------------------------------------------------------------------------------


def test_delete(backend: Backend, rng: np.random.Generator) -> None:
    sigs = random_signatures(rng, 3)
    backend.add_many(
        [Record("a", sigs[0], {"k": 1}), Record("b", sigs[1], {"k": 1}), Record("c", sigs[2])]
    )
    assert backend.delete("b") is True
    assert backend.delete("b") is False
    assert backend.delete("never") is False

    assert backend.get("b") is None
    assert backend.count() == 2
    assert all_paths(backend) == ["a", "c"]
    assert exact(backend, sigs[1]) == []
    assert exact(backend, sigs[1], where={"k": 1}) == []
    everything = backend.search(sigs, limit=EVERYTHING, max_distance=2.0)
    assert sorted(m.filepath for m in everything) == ["a", "c"]

    assert backend.delete("a") is True
    assert backend.delete("c") is True
    assert backend.count() == 0
    assert backend.list() == []
    assert backend.search(sigs, limit=EVERYTHING, max_distance=2.0) == []


def test_delete_then_add_again(backend: Backend, rng: np.random.Generator) -> None:
    old, new = random_signatures(rng, 2)
    backend.add(Record("a", old, {"v": 1}))
    backend.delete("a")
    backend.add(Record("a", new))
    record = backend.get("a")
    assert record is not None
    assert record.signature.tobytes() == new.tobytes()
    assert record.metadata is None
    assert exact(backend, old) == []
    assert exact(backend, new) == ["a"]
    assert backend.count() == 1


# -- list --------------------------------------------------------------------------------


def test_list_is_insertion_order(backend: Backend, rng: np.random.Generator) -> None:
    names = ["m", "b", "z", "a", "k"]  # not sorted: order must come from insertion
    sigs = random_signatures(rng, 8)
    for name, sig in zip(names, sigs, strict=False):
        backend.add(Record(name, sig))
    assert all_paths(backend) == names

    backend.add(Record("z", sigs[5]))  # a replace keeps its place
    assert all_paths(backend) == names

    backend.delete("b")  # delete and add again: moves to the end
    backend.add(Record("b", sigs[6]))
    assert all_paths(backend) == ["m", "z", "a", "k", "b"]

    backend.delete("m")
    assert all_paths(backend) == ["z", "a", "k", "b"]
    backend.add(Record("new", sigs[7]))
    assert all_paths(backend) == ["z", "a", "k", "b", "new"]


def test_list_default_page(backend: Backend, rng: np.random.Generator) -> None:
    names = [f"{i:03d}" for i in range(25)]
    backend.add_many(Record(n, s) for n, s in zip(names, random_signatures(rng, 25), strict=True))
    assert backend.list() == names[:20]
    assert backend.list(20) == names[20:]


def test_list_paging_covers_everything_once(backend: Backend, rng: np.random.Generator) -> None:
    n = 257
    names = [f"p{(i * 7919) % 1000:04d}" for i in range(n)]  # distinct, not sorted
    sigs = random_signatures(rng, n)
    backend.add_many(Record(name, sig) for name, sig in zip(names, sigs, strict=True))
    for gone in names[::10]:
        backend.delete(gone)
    alive = [name for i, name in enumerate(names) if i % 10]

    for limit in (1, 7, 20, 100, 1000):
        pages = [backend.list(offset, limit) for offset in range(0, len(alive) + limit, limit)]
        assert all(len(page) <= limit for page in pages)
        assert [path for page in pages for path in page] == alive
    assert backend.list(len(alive), 20) == []
    assert backend.list(len(alive) + 100, 20) == []
    assert backend.list(len(alive) - 1, 20) == alive[-1:]
    assert backend.list(0, 0) == []


def test_new_images_never_shift_earlier_pages(backend: Backend, rng: np.random.Generator) -> None:
    sigs = random_signatures(rng, 60)
    backend.add_many(Record(f"{i:02d}", sigs[i]) for i in range(40))
    first, second = backend.list(0, 20), backend.list(20, 20)
    backend.add_many(Record(f"{i:02d}", sigs[i]) for i in range(40, 60))
    backend.add(Record("05", sigs[0]))  # a replace
    assert backend.list(0, 20) == first
    assert backend.list(20, 20) == second
    assert backend.list(40, 20) == [f"{i:02d}" for i in range(40, 60)]


# -- odd filepaths -----------------------------------------------------------------------

ODD_FILEPATHS = [
    "with space.jpg",
    "  leading and trailing  ",
    "quote'single",
    'quote"double',
    "semi;colon'); DROP TABLE images; --",
    "percent%20%s%%",
    "like_wild%_*?",
    "emoji 🐱‍👤🇫🇷.png",
    "ünïcödé/路径/файл.jpg",
    "back\\slash",
    "new\nline\ttab\r",
    "http://example.com/a.jpg?x=1&y=2#frag",
    "/absolute/path.jpg",
    "../relative/./path",
    "Case.jpg",
    "case.jpg",
    unicodedata.normalize("NFC", "café.jpg"),
    unicodedata.normalize("NFD", "café.jpg"),
    "x" * 1000,
    "路" * 1000,
]


def test_odd_filepaths(backend: Backend, rng: np.random.Generator) -> None:
    assert len(set(ODD_FILEPATHS)) == len(ODD_FILEPATHS)
    sigs = random_signatures(rng, len(ODD_FILEPATHS))
    for i, (path, sig) in enumerate(zip(ODD_FILEPATHS, sigs, strict=True)):
        backend.add(Record(path, sig, {"i": i}))
    assert backend.count() == len(ODD_FILEPATHS)
    assert all_paths(backend) == ODD_FILEPATHS
    for i, (path, sig) in enumerate(zip(ODD_FILEPATHS, sigs, strict=True)):
        record = backend.get(path)
        assert record is not None
        assert record.filepath == path
        assert record.signature.tobytes() == sig.tobytes()
        [match] = backend.search(sig[None, :], limit=5, max_distance=0.3)
        assert match.filepath == path
        assert match.metadata == {"i": i}
        assert exact(backend, sig, where={"i": i}) == [path]
    for path in ODD_FILEPATHS[::2]:
        assert backend.delete(path) is True
    assert all_paths(backend) == ODD_FILEPATHS[1::2]
    for path in ODD_FILEPATHS[::2]:
        assert backend.get(path) is None


# -- search ------------------------------------------------------------------------------


def test_exact_hit(backend: Backend, rng: np.random.Generator) -> None:
    sigs = random_signatures(rng, 20)
    backend.add_many(Record(f"{i}", s, {"i": i}) for i, s in enumerate(sigs))
    [match] = backend.search(sigs[7][None, :], limit=10, max_distance=0.45)
    assert match.filepath == "7"
    assert match.distance == 0.0
    assert match.score == 100.0
    assert orientation_row(match) == 0
    assert match.metadata == {"i": 7}


def test_one_dimensional_query_is_one_row(backend: Backend, rng: np.random.Generator) -> None:
    sigs = random_signatures(rng, 3)
    backend.add_many(Record(f"{i}", s) for i, s in enumerate(sigs))
    assert found(backend.search(sigs[1], limit=5, max_distance=0.5)) == [("1", 0.0, 0)]


def test_cutoff_is_strict(backend: Backend, rng: np.random.Generator) -> None:
    base = random_signatures(rng, 1)[0]
    near = perturb(rng, base)
    backend.add(Record("near", near))
    d = signature.distance(base, near)
    assert 0 < d < 0.45
    assert backend.search(base[None, :], limit=5, max_distance=d) == []
    [match] = backend.search(base[None, :], limit=5, max_distance=math.nextafter(d, 2.0))
    assert (match.filepath, match.distance) == ("near", d)
    assert match.score == pytest.approx(100 * (1 - d))


def test_results_are_best_first_and_limited(backend: Backend, rng: np.random.Generator) -> None:
    base = random_signatures(rng, 1)[0]
    mirror = Mirror()
    fractions = [0.02, 0.25, 0.05, 0.2, 0.1, 0.15, 0.22, 0.08, 0.01, 0.12]
    sigs = [perturb(rng, base, f) for f in fractions] + list(random_signatures(rng, 5))
    for i, sig in enumerate(sigs):  # the last 5 are unrelated: beyond 0.45
        backend.add(Record(f"r{i:02d}", sig))
        mirror.add(f"r{i:02d}", sig)

    everything = backend.search(base[None, :], limit=EVERYTHING, max_distance=0.45)
    distances = [m.distance for m in everything]
    assert distances == sorted(distances)
    assert len(everything) == 10  # the far ones are beyond 0.45
    for limit in (1, 3, 9, 10, 11):
        got = backend.search(base[None, :], limit=limit, max_distance=0.45)
        assert found(got) == mirror.search(base, limit=limit, max_distance=0.45)
        assert len(got) == min(limit, 10)
    assert backend.search(base[None, :], limit=0, max_distance=0.45) == []


def test_ties_are_broken_by_filepath(backend: Backend, rng: np.random.Generator) -> None:
    base, other = random_signatures(rng, 2)
    names = ["k", "c", "x", "a", "q", "b"]
    for name in names:
        backend.add(Record(name, base))
    backend.add(Record("0-unrelated", other))
    near = perturb(rng, base, 0.05)
    backend.add(Record("zz-near", near))

    assert [m.filepath for m in backend.search(base, limit=3, max_distance=0.5)] == ["a", "b", "c"]
    got = backend.search(base, limit=EVERYTHING, max_distance=0.5)
    assert [m.filepath for m in got] == [*sorted(names), "zz-near"]
    # a tie that straddles the limit: one of the tied ones makes it, the smallest name
    backend.add(Record("0-near", near))
    got = backend.search(near, limit=2, max_distance=0.5)
    assert [(m.filepath, m.distance) for m in got] == [("0-near", 0.0), ("zz-near", 0.0)]
    got = backend.search(near, limit=3, max_distance=0.5)
    assert [m.filepath for m in got] == ["0-near", "zz-near", "a"]


def test_orientation_is_the_matching_query_row(backend: Backend, rng: np.random.Generator) -> None:
    queries = random_signatures(rng, len(ORIENTATIONS))
    backend.add(Record("turned-5", perturb(rng, queries[5], 0.05)))
    backend.add(Record("turned-2", queries[2]))
    backend.add(Record("turned-7", perturb(rng, queries[7], 0.1)))
    got = backend.search(queries, limit=10, max_distance=0.45)
    assert [(m.filepath, orientation_row(m)) for m in got] == [
        ("turned-2", 2),
        ("turned-5", 5),
        ("turned-7", 7),
    ]
    assert got[0].distance == 0.0
    for m in got:
        row = orientation_row(m)
        assert m.distance == signature.distance(queries[row], backend_signature(backend, m))
    # the same store, asked with a query block that has the matching row first
    got = backend.search(queries[[5, 0, 1]], limit=10, max_distance=0.45)
    assert [(m.filepath, orientation_row(m)) for m in got] == [("turned-5", 0)]


def backend_signature(backend: Backend, match: Any) -> np.ndarray:
    record = backend.get(match.filepath)
    assert record is not None
    return record.signature


def test_all_zero_signatures(backend: Backend, rng: np.random.Generator) -> None:
    zero = np.zeros(LENGTH, dtype=np.int8)
    sig = random_signatures(rng, 1)[0]
    backend.add(Record("zero", zero))
    backend.add(Record("sig", sig))
    assert signature.distance(zero, zero) == 1.0
    assert signature.distance(zero, sig) == 1.0

    for query in (zero, sig):
        assert [m.filepath for m in backend.search(query, limit=5, max_distance=1.0)] == (
            [] if query is zero else ["sig"]
        )
    assert found(backend.search(zero, limit=5, max_distance=1.5)) == [
        ("sig", 1.0, 0),
        ("zero", 1.0, 0),
    ]
    # a zero row among the query rows changes nothing for the others
    got = backend.search(np.stack([zero, sig]), limit=5, max_distance=1.0)
    assert found(got) == [("sig", 0.0, 1)]


def test_search_does_not_return_deleted_or_replaced(
    backend: Backend, rng: np.random.Generator
) -> None:
    base = random_signatures(rng, 1)[0]
    copies = [perturb(rng, base, 0.05) for _ in range(6)]
    for i, sig in enumerate(copies):
        backend.add(Record(f"c{i}", sig))
    backend.delete("c1")
    backend.delete("c4")
    backend.add(Record("c2", random_signatures(rng, 1)[0]))
    got = backend.search(base, limit=EVERYTHING, max_distance=0.45)
    assert sorted(m.filepath for m in got) == ["c0", "c3", "c5"]


# -- metadata filters --------------------------------------------------------------------

FILTER_RECORDS: dict[str, dict[str, Any] | None] = {
    "str": {"kind": "cat", "n": "1"},
    "int": {"kind": "dog", "n": 1},
    "float": {"kind": "cat", "n": 1.0},
    "float2": {"n": 1.5},
    "true": {"n": True, "flag": True},
    "false": {"n": 0, "flag": False},
    "zero-float": {"n": 0.0},
    "negative": {"n": -1},
    "large": {"n": 2**62},
    "none": None,
    "empty": {},
    "null": {"n": None, "kind": None},
    "nested": {"n": {"n": 1}, "kind": ["cat"], "a": {"b": "dot"}, "x": ["br"], "$": {"n": 1}},
    "odd-keys": {
        "it's": "q",
        'say "hi"': 1,
        "a.b": "dot",
        "x[0]": "br",
        "$.n": "dollar",
        "$": 2,
        "%": "pct",
        "'; DROP TABLE images; --": True,
    },
    "sqlish": {"kind": "x' OR 1=1 --"},
    "unicode": {"ключ": "значение 🐱", "kind": "chat"},
    "case": {"kind": "Cat"},
    "space": {"kind": "cat "},
}

FILTERS: list[tuple[dict[str, Any], set[str]]] = [
    ({"kind": "cat"}, {"str", "float"}),
    ({"kind": "Cat"}, {"case"}),
    ({"n": 1}, {"int", "float"}),
    ({"n": 1.0}, {"int", "float"}),
    ({"n": "1"}, {"str"}),
    ({"n": True}, {"true"}),
    ({"flag": True}, {"true"}),
    ({"flag": False}, {"false"}),
    ({"flag": 0}, set()),
    ({"flag": 1}, set()),
    ({"n": False}, set()),
    ({"n": 0}, {"false", "zero-float"}),
    ({"n": 0.0}, {"false", "zero-float"}),
    ({"n": 1.5}, {"float2"}),
    ({"n": -1}, {"negative"}),
    ({"n": -1.0}, {"negative"}),
    ({"n": 2**62}, {"large"}),
    ({"n": 2}, set()),
    ({"kind": "cat", "n": 1}, {"float"}),
    ({"kind": "dog", "n": 1.0}, {"int"}),
    ({"kind": "cat", "n": "1"}, {"str"}),
    ({"kind": "cat", "missing": 1}, set()),
    ({"missing": "cat"}, set()),
    ({"kind": "null"}, set()),
    ({"kind": "None"}, set()),
    ({"kind": ""}, set()),
    ({"it's": "q"}, {"odd-keys"}),
    ({'say "hi"': 1}, {"odd-keys"}),
    ({"a.b": "dot"}, {"odd-keys"}),
    ({"x[0]": "br"}, {"odd-keys"}),
    ({"$.n": "dollar"}, {"odd-keys"}),
    ({"$": 2}, {"odd-keys"}),
    ({"%": "pct"}, {"odd-keys"}),
    ({"'; DROP TABLE images; --": True}, {"odd-keys"}),
    ({"kind": "x' OR 1=1 --"}, {"sqlish"}),
    ({"kind": "x' OR '1'='1"}, set()),
    ({"kind": "cat' OR 'a'='a"}, set()),
    ({"x' OR 1=1 --": 1}, set()),
    ({"kind": "%"}, set()),
    ({"n": '{"n": 1}'}, set()),  # a JSON text is not the object it spells
    ({"n": '{"n":1}'}, set()),
    ({"kind": '["cat"]'}, set()),
    ({"kind": "null"}, set()),
    ({"flag": "true"}, set()),
    ({"n": "true"}, set()),
    ({"kind": "c%"}, set()),
    ({"ключ": "значение 🐱"}, {"unicode"}),
    ({"kind": "cat", "ключ": "значение 🐱"}, set()),
    ({}, set(FILTER_RECORDS)),
]


@pytest.fixture
def filtered(backend: Backend, rng: np.random.Generator) -> tuple[Backend, np.ndarray]:
    """Every FILTER_RECORDS entry stored with the same signature."""
    sig = random_signatures(rng, 1)[0]
    backend.add_many(Record(name, sig, metadata) for name, metadata in FILTER_RECORDS.items())
    return backend, sig


@pytest.mark.parametrize(("where", "expected"), FILTERS, ids=[repr(w) for w, _ in FILTERS])
def test_where(
    filtered: tuple[Backend, np.ndarray], where: dict[str, Any], expected: set[str]
) -> None:
    backend, sig = filtered
    got = backend.search(sig, limit=EVERYTHING, max_distance=0.5, where=where)
    assert [m.filepath for m in got] == sorted(expected)
    for m in got:
        assert m.metadata == FILTER_RECORDS[m.filepath]
    assert backend.count() == len(FILTER_RECORDS)  # nothing was dropped, whatever the filter


def test_where_combines_with_cutoff_and_limit(backend: Backend, rng: np.random.Generator) -> None:
    base = random_signatures(rng, 1)[0]
    mirror = Mirror()
    for i in range(40):
        sig = perturb(rng, base, 0.01 * (i % 20))
        metadata = {"group": i % 3, "even": i % 2 == 0}
        backend.add(Record(f"r{i:02d}", sig, metadata))
        mirror.add(f"r{i:02d}", sig, metadata)
    for where in ({"group": 1}, {"group": 2, "even": True}, {"even": False}):
        for limit, cutoff in ((3, 0.45), (100, 0.1), (5, 0.2)):
            got = backend.search(base, limit=limit, max_distance=cutoff, where=where)
            assert got, "the case should have hits"
            assert found(got) == mirror.search(base, limit=limit, max_distance=cutoff, where=where)


INVALID_FILTERS: list[Any] = [
    {"a": {"b": 1}},
    {"a": [1]},
    {"a": None},
    {"a": (1,)},
    {1: "a"},
    {"": 1},
    {None: 1},
    ["a"],
    "a=1",
]


@pytest.mark.parametrize("where", INVALID_FILTERS, ids=repr)
def test_invalid_filter_is_refused(backend: Backend, rng: np.random.Generator, where: Any) -> None:
    sig = random_signatures(rng, 1)[0]
    backend.add(Record("a", sig, {"a": 1}))
    with pytest.raises(InvalidRequest):
        backend.search(sig, limit=5, max_distance=0.5, where=where)


def test_nul_characters_are_refused_in_filepaths_metadata_and_filters(
    backend: Backend, rng: np.random.Generator
) -> None:
    """SQL JSON functions cut strings at NUL, so no backend accepts NUL where it would
    have to compare it: the record or the filter is refused, and nothing is stored."""
    sig = random_signatures(rng, 1)[0]
    with pytest.raises(InvalidRequest):
        backend.add(Record("nul\x00byte", sig))
    with pytest.raises(InvalidRequest):
        backend.add(Record("nul", sig, {"kind": "cat\x00dog"}))
    with pytest.raises(InvalidRequest):
        backend.add(Record("nul", sig, {"nested": [{"k\x00": 1}]}))
    backend.add(Record("cat", sig, {"kind": "cat", "path": "C:\\u0000 is not a NUL"}))
    with pytest.raises(InvalidRequest):
        backend.search(sig, limit=5, max_distance=0.5, where={"kind": "cat\x00dog"})
    assert exact(backend, sig, where={"kind": "cat"}) == ["cat"]
    assert backend.count() == 1


def test_integers_beyond_64_bits_are_refused_in_metadata_and_filters(
    backend: Backend, rng: np.random.Generator
) -> None:
    """Python and JSON integers are unbounded, the stores' integers are not: such a value
    is refused as an invalid request, in metadata and in a filter, never a driver error."""
    sig = random_signatures(rng, 1)[0]
    with pytest.raises(InvalidRequest, match="64 bits"):
        backend.add(Record("big", sig, {"n": 2**70}))
    backend.add(Record("small", sig, {"n": 1}))
    with pytest.raises(InvalidRequest, match="64-bit"):
        backend.search(sig, limit=5, max_distance=0.5, where={"n": 2**70})
    got = backend.search(sig, limit=5, max_distance=0.5, where={"n": 1})
    assert [m.filepath for m in got] == ["small"]


def test_non_finite_metadata_does_not_break_filters(
    backend: Backend, rng: np.random.Generator
) -> None:
    """json.loads accepts NaN and Infinity, so such metadata can arrive from a request.
    The store may refuse it (ValueError or InvalidRequest); if it stores it, filtered
    searches over the other records must keep working."""
    sig = random_signatures(rng, 1)[0]
    backend.add(Record("good", sig, {"k": 1}))
    try:
        backend.add(Record("nan", sig, {"x": float("nan"), "k": 1}))
        backend.add(Record("inf", sig, {"x": float("inf"), "k": 2}))
    except (ValueError, InvalidRequest):
        stored = {"good"}
    else:
        stored = {"good", "nan", "inf"}
    got = backend.search(sig, limit=5, max_distance=0.5, where={"k": 1})
    assert {m.filepath for m in got} == {"good", "nan"} & stored
    assert backend.count() == len(stored)


# -- wrong shapes ------------------------------------------------------------------------

BAD_SIGNATURES = [
    np.zeros(LENGTH - 1, dtype=np.int8),
    np.zeros(LENGTH + 1, dtype=np.int8),
    np.zeros((1, LENGTH), dtype=np.int8),
    np.zeros((2, LENGTH // 2), dtype=np.int8),
    np.zeros(0, dtype=np.int8),
    np.int8(1),
]


@pytest.mark.parametrize("bad", BAD_SIGNATURES, ids=lambda b: f"shape{np.shape(b)}")
def test_wrong_signature_shape_is_refused(
    backend: Backend, rng: np.random.Generator, bad: np.ndarray
) -> None:
    good = random_signatures(rng, 2)
    with pytest.raises(ValueError):
        backend.add(Record("bad", bad))
    with pytest.raises(ValueError):
        backend.add_many([Record("bad", bad)])
    assert backend.get("bad") is None
    backend.add(Record("good", good[0]))
    assert backend.count() == 1
    assert exact(backend, good[0]) == ["good"]


BAD_QUERIES = [
    np.zeros(LENGTH - 1, dtype=np.int8),
    np.zeros((1, LENGTH + 1), dtype=np.int8),
    np.zeros((2, LENGTH // 2), dtype=np.int8),
    np.zeros((0, LENGTH), dtype=np.int8),
    np.zeros((2, 2, LENGTH), dtype=np.int8),
    np.zeros((len(ORIENTATIONS) + 1, LENGTH), dtype=np.int8),
]


@pytest.mark.parametrize("bad", BAD_QUERIES, ids=lambda b: f"shape{np.shape(b)}")
def test_wrong_query_shape_is_refused(
    backend: Backend, rng: np.random.Generator, bad: np.ndarray
) -> None:
    """Queries are (k, 648), one row per orientation, 1 <= k <= 8 (or one 648-vector);
    anything else is a ValueError, not silently reshaped into other rows."""
    backend.add(Record("a", random_signatures(rng, 1)[0]))
    with pytest.raises(ValueError):
        backend.search(bad, limit=5, max_distance=2.0)


# -- threads -----------------------------------------------------------------------------


def test_concurrent_writers_and_readers(backend: Backend, rng: np.random.Generator) -> None:
    sigs = random_signatures(rng, 400)
    errors: list[BaseException] = []

    def write(part: int) -> None:
        try:
            for i in range(part, 400, 4):
                backend.add(Record(f"t{i:03d}", sigs[i], {"part": part}))
                if i % 8 == part:
                    assert exact(backend, sigs[i]) == [f"t{i:03d}"]
                    assert backend.count() >= 1
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert backend.count() == 400
    assert sorted(all_paths(backend)) == [f"t{i:03d}" for i in range(400)]
    for i in range(0, 400, 7):
        assert exact(backend, sigs[i], where={"part": i % 4}) == [f"t{i:03d}"]
        assert exact(backend, sigs[i], where={"part": (i + 1) % 4}) == []


# -- the exactness oracle ----------------------------------------------------------------

CUTOFFS = [0.05, 0.2, 0.3, 0.45, 0.72, 1.0, 1.5]
LIMITS = [1, 7, 50, EVERYTHING]
ORACLE_FILTERS: list[dict[str, Any] | None] = [
    None,
    {"group": 1},
    {"group": 2, "flag": True},
    {"name": "n7"},
    {"flag": False},
]


def oracle_queries(rng: np.random.Generator, mirror: Mirror) -> list[np.ndarray]:
    """One-row queries (a stored signature, near-copies, an unrelated one, all zeros) and
    8-row ones (near-copies of several records among unrelated rows and a zero row)."""
    stored = [sig for sig, _ in mirror.records.values()]
    pick = rng.choice(len(stored), size=10, replace=False)
    queries: list[np.ndarray] = [stored[pick[0]]]
    queries += [
        perturb(rng, stored[i], fraction)
        for i, fraction in zip(pick[1:4], (0.03, 0.08, 0.15), strict=True)
    ]
    queries += [random_signatures(rng, 1)[0], np.zeros(LENGTH, dtype=np.int8)]
    for k in range(3):
        rows = random_signatures(rng, 8)
        for row, i in zip((0, 3, 7)[: k + 1], pick[4 + 2 * k :], strict=False):
            rows[row] = perturb(rng, stored[i], 0.1)
        if k == 2:
            rows[6] = 0
            rows[2] = stored[pick[0]]
        queries.append(rows)
    return queries


def check_oracle(
    backend: Backend, reference: MemoryBackend, mirror: Mirror, rng: np.random.Generator
) -> int:
    """Search answers of ``backend`` equal the brute-force ones and memory's."""
    assert backend.count() == reference.count() == len(mirror.records)
    assert all_paths(backend) == all_paths(reference) == list(mirror.records)
    allowed = [None if w is None else mirror.matching(w) for w in ORACLE_FILTERS]
    combos = [(c, lim) for c in CUTOFFS for lim in LIMITS]
    checked = 0
    for query in oracle_queries(rng, mirror):
        table = mirror.distances(query)
        for where, allow in zip(ORACLE_FILTERS, allowed, strict=True):
            # a sample of cutoff × limit, larger without a filter; the default-like one always
            sample = rng.choice(len(combos), size=5 if where is None else 2, replace=False)
            for n, (cutoff, limit) in enumerate([(0.45, 7)] + [combos[i] for i in sample]):
                options: dict[str, Any] = {"limit": limit, "max_distance": cutoff, "where": where}
                expected = mirror.select(table, limit, cutoff, allow)
                got = backend.search(query, **options)
                assert found(got) == expected, (cutoff, limit, where)
                for m in got:
                    assert m.metadata == mirror.records[m.filepath][1]
                if n == 0 and backend is not reference:
                    assert found(reference.search(query, **options)) == expected
                checked += 1
        # and distances are signature.distance itself, for a sample of the hits
        q = np.asarray(query).reshape(-1, LENGTH)
        for m in backend.search(query, limit=20, max_distance=1.5)[::4]:
            stored = mirror.records[m.filepath][0]
            assert m.distance == min(signature.distance(row, stored) for row in q)
            assert m.distance == signature.distance(q[orientation_row(m)], stored)
    return checked


def oracle_metadata(rng: np.random.Generator, i: int) -> dict[str, Any] | None:
    if i % 11 == 0:
        return None
    return {
        "group": int(rng.integers(0, 4)),
        "flag": bool(rng.integers(0, 2)),
        "name": f"n{i % 13}",
    }


@pytest.mark.slow
def test_exactness_oracle(backend: Backend, rng: np.random.Generator) -> None:
    reference = MemoryBackend()
    mirror = Mirror()

    def add(records: list[Record]) -> None:
        assert backend.add_many(records) == reference.add_many(records) == len(records)
        for record in records:
            mirror.add(record.filepath, record.signature, record.metadata)

    def delete(path: str) -> None:
        assert backend.delete(path) == reference.delete(path) == mirror.delete(path)

    n = 3000
    sigs = random_signatures(rng, n)
    # near-copies of stored signatures, so that cutoffs between 0.05 and 0.45 have hits
    for i in range(0, n, 5):
        sigs[i + 1] = perturb(rng, sigs[i], 0.1)
        sigs[i + 2] = perturb(rng, sigs[i], 0.03)
    sigs[100] = sigs[200] = sigs[300]  # exact duplicates tie
    sigs[400] = 0
    add([Record(f"img/{i:04d}", sigs[i], oracle_metadata(rng, i)) for i in range(n)])
    # replaces (in place and as near-copies), deletes, and some re-adds
    for i in rng.choice(n, size=100, replace=False):
        path = f"img/{i:04d}"
        add([Record(path, perturb(rng, sigs[(i + 1) % n], 0.08), oracle_metadata(rng, i))])
    deleted = [f"img/{i:04d}" for i in rng.choice(n, size=300, replace=False)]
    for path in deleted:
        delete(path)
    delete("never-stored")
    add([Record(path, sigs[int(path[4:])]) for path in deleted[:50]])

    checked = check_oracle(backend, reference, mirror, rng)
    assert checked > 150

    # the other regime: many records gone (enough for SQLite to compact), then growth again
    for path in list(mirror.records)[:1100]:
        delete(path)
    for path in list(mirror.records)[::20]:  # records every store has loaded by now
        add([Record(path, perturb(rng, mirror.records[path][0], 0.1), {"group": 9})])
    add([Record(f"more/{i}", sig, oracle_metadata(rng, i)) for i, sig in enumerate(sigs[:300])])
    check_oracle(backend, reference, mirror, rng)


def test_stats_tell_the_size_index_and_memory(backend: Backend, rng: np.random.Generator) -> None:
    empty = backend.stats()
    assert {"backend", "count", "index", "memory_bytes"} <= set(empty)
    assert empty["count"] == 0
    backend.add_many(Record(f"s{i}", sig) for i, sig in enumerate(random_signatures(rng, 3000)))
    backend.delete("s0")
    full = backend.stats()
    assert full["count"] == backend.count() == 2999
    # an index shared between processes is not private memory, but holds the signatures
    assert full["memory_bytes"] + full.get("index_shared_bytes", 0) >= 2999 * LENGTH
    assert full["backend"] == empty["backend"] and isinstance(full["index"], str)


# -- previews: sizes and thumbnails ----------------------------------------------------


def a_preview(rng: np.random.Generator, size: int = 12_000, **fields: Any) -> Preview:
    """A preview with a thumbnail of random bytes (stores keep them opaque): all 256 byte
    values, NULs included, as binary fields must."""
    values: dict[str, Any] = {
        "width": int(rng.integers(1, 10_000)),
        "height": int(rng.integers(1, 10_000)),
        "file_bytes": int(rng.integers(1, 2**40)),
        "thumbnail": rng.integers(0, 256, size, dtype=np.uint8).tobytes(),
        "media_type": "image/jpeg",
        "sha256": rng.bytes(32).hex(),
        "modified": float(rng.uniform(0, 2e9)),  # a file time: any float, kept exactly
    }
    return Preview(**{**values, **fields})


def test_preview_round_trip(backend: Backend, rng: np.random.Generator) -> None:
    preview = a_preview(rng, media_type="image/webp")
    sizes_only = a_preview(rng, thumbnail=None)
    unhashed = a_preview(rng, sha256=None, modified=None)  # as a store written before kept
    backend.add(Record("with", random_signatures(rng, 1)[0], preview=preview))
    backend.add(Record("sizes", random_signatures(rng, 1)[0], preview=sizes_only))
    backend.add(Record("unhashed", random_signatures(rng, 1)[0], preview=unhashed))

    assert backend.previews(["with", "sizes", "unhashed"]) == {
        "with": preview,
        "sizes": sizes_only,
        "unhashed": unhashed,
    }
    assert backend.previews(["with"], thumbnails=False) == {"with": preview.without_thumbnail()}
    stored = backend.get("with")
    assert stored is not None and stored.preview is None  # read apart, never by get
    assert backend.previews([]) == {}


def test_preview_absent(backend: Backend, rng: np.random.Generator) -> None:
    """A record added without a preview (as by a version that kept none) has none; a
    filepath not stored has none; neither fails the others."""
    backend.add(Record("plain", random_signatures(rng, 1)[0]))
    backend.add(Record("shown", random_signatures(rng, 1)[0], preview=a_preview(rng)))
    found = backend.previews(["plain", "nothing", "shown"])
    assert list(found) == ["shown"]


def test_preview_replaced_on_re_add(backend: Backend, rng: np.random.Generator) -> None:
    sig = random_signatures(rng, 1)[0]
    first, second = a_preview(rng), a_preview(rng, media_type="image/png")
    backend.add(Record("a", sig, preview=first))
    backend.add(Record("a", sig, preview=second))
    assert backend.previews(["a"]) == {"a": second}
    backend.add_many([Record("a", sig, preview=first)])
    assert backend.previews(["a"]) == {"a": first}
    backend.add(Record("a", sig))  # another image under the name: the old preview is wrong
    assert backend.previews(["a"]) == {}
    assert backend.count() == 1


def test_preview_deleted_with_the_record(backend: Backend, rng: np.random.Generator) -> None:
    sig = random_signatures(rng, 1)[0]
    backend.add(Record("a", sig, preview=a_preview(rng)))
    backend.add(Record("b", sig, preview=a_preview(rng)))
    assert backend.delete("a")
    assert list(backend.previews(["a", "b"])) == ["b"]
    backend.add(Record("a", sig))  # deleted, then added again without one
    assert list(backend.previews(["a", "b"])) == ["b"]


def test_previews_of_many_records(backend: Backend, rng: np.random.Generator) -> None:
    """More filepaths than one query of a store takes (SQLite's 500 per IN list)."""
    sigs = random_signatures(rng, 700)
    previews = {f"p/{i}": a_preview(rng, thumbnail=None) for i in range(700)}
    backend.add_many(
        Record(path, sigs[i], preview=previews[path]) for i, path in enumerate(previews)
    )
    asked = [*previews, "missing"]
    assert backend.previews(asked, thumbnails=False) == previews
    # the largest thumbnail kept
    big = a_preview(rng, size=MAX_THUMBNAIL_BYTES)
    backend.add(Record("big", sigs[0], preview=big))
    assert backend.previews(["big"]) == {"big": big}


def test_search_results_carry_no_thumbnail(backend: Backend, rng: np.random.Generator) -> None:
    sig = random_signatures(rng, 1)[0]
    backend.add(Record("a", sig, {"k": 1}, preview=a_preview(rng)))
    (match,) = backend.search(sig[None, :], limit=5, max_distance=0.1)
    assert match.filepath == "a" and match.metadata == {"k": 1}
    assert match.preview is None  # the service adds sizes; a store's search reads none


@pytest.mark.parametrize(
    "fields",
    [
        {"media_type": "text/html"},
        {"media_type": "image/svg+xml"},  # scripts run in SVG
        {"size": MAX_THUMBNAIL_BYTES + 1},
        {"thumbnail": b""},
        {"width": 0},
        {"height": -1},
        {"file_bytes": 0},
        {"width": True},
        {"height": 2.0},
        {"sha256": "A" * 64},
        {"sha256": "ab"},
        {"modified": float("nan")},
        {"modified": 17},
    ],
)
def test_invalid_previews_are_refused(
    backend: Backend, rng: np.random.Generator, fields: dict[str, Any]
) -> None:
    sig = random_signatures(rng, 1)[0]
    fields = dict(fields)  # the parameter is shared by every store's run
    size = fields.pop("size", 100)
    with pytest.raises(ValueError, match=r"preview|thumbnail"):
        backend.add(Record("bad", sig, preview=a_preview(rng, size=size, **fields)))
    assert backend.count() == 0
    assert backend.previews(["bad"]) == {}


# -- embeddings --------------------------------------------------------------------------


def brute_force_cosine(stored: dict[str, np.ndarray], queries: np.ndarray) -> dict[str, float]:
    """1 − the best cosine of each stored vector to any query row, by the exact definition
    (``support.exact_cosine_distances``): the value every store must report, to the bit."""
    paths = list(stored)
    matrix = np.stack([stored[p] for p in paths]) if paths else np.empty((0, 1))
    per_row = [exact_cosine_distances(q, matrix) for q in np.atleast_2d(queries)] if paths else []
    return {p: min(d[i] for d in per_row) for i, p in enumerate(paths)}


def test_embedding_round_trip_and_absence(backend: Backend, rng: np.random.Generator) -> None:
    vectors = unit_vectors(rng, 2)
    sigs = random_signatures(rng, 2)
    backend.add(Record("with", sigs[0], {"k": 1}, embedding=vectors[0]))
    backend.add(Record("without", sigs[1]))
    stored = backend.get("with")
    assert stored is not None and stored.embedding is not None
    np.testing.assert_array_equal(stored.embedding, vectors[0])
    without = backend.get("without")
    assert without is not None and without.embedding is None
    # a signature search finds both, whatever their embeddings
    assert exact(backend, sigs[1]) == ["without"]


def test_embedding_search_finds_only_records_with_embeddings(
    backend: Backend, rng: np.random.Generator
) -> None:
    vectors = unit_vectors(rng, 20)
    backend.add_many(
        Record(f"e{i}", sig, embedding=vectors[i] if i % 2 else None)
        for i, sig in enumerate(random_signatures(rng, 20))
    )
    matches = backend.search_embedding(vectors[3], limit=10, max_distance=0.01)
    assert [(m.filepath, m.method, m.orientation) for m in matches] == [
        ("e3", "embedding", "identity")
    ]
    assert matches[0].distance == pytest.approx(0.0, abs=1e-6)
    assert backend.search_embedding(vectors[4], limit=10, max_distance=0.5) == []
    everything = backend.search_embedding(vectors[3], limit=100, max_distance=2.0)
    assert sorted(m.filepath for m in everything) == sorted(f"e{i}" for i in range(1, 20, 2))


def test_embedding_results_are_exact_best_first_cut_and_limited(
    backend: Backend, rng: np.random.Generator
) -> None:
    query = unit_vectors(rng, 1)[0]
    cosines = [0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3]
    vectors = {f"c{i}": near(rng, query, c) for i, c in enumerate(cosines)}
    vectors["twin-b"] = vectors["twin-a"] = near(rng, query, 0.85)
    sigs = random_signatures(rng, len(vectors))
    backend.add_many(
        Record(path, sig, embedding=v) for (path, v), sig in zip(vectors.items(), sigs, strict=True)
    )
    truth = brute_force_cosine(vectors, query[None, :])
    cutoff = truth["c4"]  # strict: c4 itself is out
    matches = backend.search_embedding(query, limit=100, max_distance=cutoff)
    assert [m.filepath for m in matches] == ["c0", "c1", "c2", "twin-a", "twin-b", "c3"]
    for m in matches:
        assert m.distance == truth[m.filepath]
        assert m.score == pytest.approx(100 * (1 - truth[m.filepath]))
    limited = backend.search_embedding(query, limit=3, max_distance=cutoff)
    assert [m.filepath for m in limited] == ["c0", "c1", "c2"]


def test_embedding_orientation_is_the_matching_query_row(
    backend: Backend, rng: np.random.Generator
) -> None:
    vectors = unit_vectors(rng, 8)
    backend.add(Record("target", random_signatures(rng, 1)[0], embedding=vectors[5]))
    matches = backend.search_embedding(vectors, limit=5, max_distance=0.1)
    assert [(m.filepath, m.orientation) for m in matches] == [("target", ORIENTATIONS[5])]


def test_embedding_replace_and_delete(backend: Backend, rng: np.random.Generator) -> None:
    old, new = unit_vectors(rng, 2)
    sig = random_signatures(rng, 1)[0]
    backend.add(Record("p", sig, embedding=old))
    backend.add(Record("p", sig, embedding=new))
    assert [m.filepath for m in backend.search_embedding(new, limit=5, max_distance=0.1)] == ["p"]
    assert backend.search_embedding(old, limit=5, max_distance=0.5) == []
    backend.add(Record("p", sig))  # replaced by a record without an embedding
    assert backend.search_embedding(new, limit=5, max_distance=2.0) == []
    backend.add(Record("p", sig, embedding=old))  # and given one again
    assert [m.filepath for m in backend.search_embedding(old, limit=5, max_distance=0.1)] == ["p"]
    assert backend.delete("p")
    assert backend.search_embedding(old, limit=5, max_distance=2.0) == []
    assert backend.count() == 0


def test_embedding_search_with_filter(backend: Backend, rng: np.random.Generator) -> None:
    query = unit_vectors(rng, 1)[0]
    backend.add_many(
        Record(
            f"f{i}",
            sig,
            {"shop": "a" if i % 3 else "b", "n": i % 2},
            embedding=near(rng, query, 0.9),
        )
        for i, sig in enumerate(random_signatures(rng, 30))
    )
    for where in ({"shop": "b"}, {"shop": "a", "n": 1}, {"n": 1.0}, {"shop": "c"}):
        matches = backend.search_embedding(query, limit=100, max_distance=0.5, where=where)
        expected = sorted(
            f"f{i}"
            for i in range(30)
            if all({"shop": "a" if i % 3 else "b", "n": i % 2}[k] == v for k, v in where.items())
        )
        assert sorted(m.filepath for m in matches) == expected, where


@pytest.mark.parametrize(
    "embedding",
    [np.zeros(EMBEDDING_DIMENSION), np.ones(10), np.full(EMBEDDING_DIMENSION, np.nan)],
    ids=["zero", "short", "nan"],
)
def test_invalid_embeddings_are_refused(
    backend: Backend, rng: np.random.Generator, embedding: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="embedding"):
        backend.add(Record("bad", random_signatures(rng, 1)[0], embedding=embedding))
    assert backend.count() == 0
    with pytest.raises(ValueError, match="embedding"):
        backend.search_embedding(np.ones((9, EMBEDDING_DIMENSION)), limit=1, max_distance=1.0)


@pytest.mark.slow
def test_embedding_oracle(backend: Backend, rng: np.random.Generator) -> None:
    """Against brute force over a few thousand vectors: what a store returns is at the
    exact distance, and it misses at most 1 % of what it should return."""
    n = 3000
    vectors = unit_vectors(rng, n)
    for i in range(0, n, 6):  # clusters of look-alikes at varied similarity
        for j, c in enumerate((0.95, 0.85, 0.75, 0.65), start=1):
            vectors[i + j] = near(rng, vectors[i], c)
    stored = {f"v{i:04d}": vectors[i] for i in range(n)}
    backend.add_many(
        Record(path, sig, embedding=stored[path])
        for path, sig in zip(stored, random_signatures(rng, n), strict=True)
    )
    for path in [f"v{i:04d}" for i in rng.choice(n, size=200, replace=False)]:
        assert backend.delete(path)
        del stored[path]
    expected_total = found_total = 0
    for i in rng.choice(np.arange(0, n, 6), size=40, replace=False):
        queries = np.stack([near(rng, vectors[i], 0.97), unit_vectors(rng, 1)[0]])
        truth = brute_force_cosine(stored, queries)
        matches = backend.search_embedding(queries, limit=10, max_distance=0.4)
        for m in matches:
            assert m.distance == truth[m.filepath]
        expected = sorted((d, p) for p, d in truth.items() if d < 0.4)[:10]
        expected_total += len(expected)
        found_total += len({p for _, p in expected} & {m.filepath for m in matches})
    assert expected_total > 100
    assert found_total / expected_total >= 0.99


# -- the self-join and distinct marks ----------------------------------------------------


def oracle_pairs(
    rows: dict[str, np.ndarray], cutoff: float, turned: bool
) -> dict[tuple[str, str], tuple[float, int]]:
    """Every pair (by filepath order of the store's vectors) within the cutoff, by the
    arithmetic of ``signature.distance``, turning the first by each orientation."""
    from lookalike.backends.join import TURNS

    paths = list(rows)
    want = {}
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            turns = range(len(TURNS) if turned else 1)
            ds = [signature.distance(rows[a][TURNS[o]], rows[b]) for o in turns]
            best = min(ds)
            if best < cutoff:
                want[(a, b)] = (best, ds.index(best))
    return want


def joined(backend: Backend, column: str, cutoff: float, **options: Any) -> dict:
    vectors, pairs = backend.pairs(column, cutoff, **options)
    return {
        (vectors.filepaths[a], vectors.filepaths[b]): (float(d), int(o))
        for a, b, d, o in zip(
            pairs.first, pairs.second, pairs.distances, pairs.orientations, strict=True
        )
    }


def planted(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random signatures with near-copies, turned copies and turned near-copies planted."""
    from lookalike.backends.join import TURNS

    sigs = random_signatures(rng, n)
    for i in range(0, n - 3, 8):
        sigs[i + 1] = perturb(rng, sigs[i], 0.1)
        sigs[i + 2] = sigs[i][TURNS[1 + i % 7]]
        sigs[i + 3] = perturb(rng, sigs[i + 2], 0.25)
    return sigs


@pytest.mark.parametrize("turned", [True, False])
def test_the_self_join_finds_every_pair_exactly(
    backend: Backend, rng: np.random.Generator, turned: bool
) -> None:
    """Every pair within the cutoff, once, at the distance ``signature.distance`` gives,
    with the orientation that turns the first into the second; vectors in list order."""
    sigs = planted(rng, 48)
    backend.add_many(Record(f"img/{i:02d}", sigs[i], {"g": i % 2}) for i in range(48))
    backend.delete("img/05")
    vectors = backend.vectors("signature")
    assert vectors.filepaths == all_paths(backend)
    rows = {p: vectors.rows[i] for i, p in enumerate(vectors.filepaths)}
    assert all(np.array_equal(rows[p], sigs[int(p[4:])]) for p in rows)
    want = oracle_pairs(rows, 0.45, turned)
    assert joined(backend, "signature", 0.45, orientations=turned) == want
    assert len(want) >= 12 * (2 if turned else 1) - 3  # the planted ones, at least
    # a filter keeps the pairs of the records that pass it
    kept = {p: r for p, r in rows.items() if int(p[4:]) % 2 == 0}
    where = joined(backend, "signature", 0.45, orientations=turned, where={"g": 0})
    assert where == oracle_pairs(kept, 0.45, turned)


def test_the_self_join_of_embeddings(backend: Backend, rng: np.random.Generator) -> None:
    """Pairs of records that have an embedding, at the distance a search from the first
    one reports (``support.exact_cosine_distance``)."""
    vectors = unit_vectors(rng, 12)
    vectors[1] = near(rng, vectors[0], 0.95)
    vectors[2] = near(rng, vectors[0], 0.85)
    vectors[4] = near(rng, vectors[3], 0.9)
    sigs = random_signatures(rng, 13)
    records = [Record(f"e{i:02d}", sigs[i], embedding=vectors[i]) for i in range(12)]
    backend.add_many([*records, Record("no-embedding", sigs[12])])
    found = joined(backend, "embedding", 0.2)
    stored = backend.vectors("embedding")
    assert "no-embedding" not in stored.filepaths and len(stored.filepaths) == 12
    rows = dict(zip(stored.filepaths, stored.rows, strict=True))
    want = {}
    for i, a in enumerate(stored.filepaths):
        for b in stored.filepaths[i + 1 :]:
            d = exact_cosine_distances(rows[a], rows[b][None])[0]
            if d < 0.2:
                want[(a, b)] = (d, 0)
    assert found == want and {("e00", "e01"), ("e00", "e02"), ("e03", "e04")} <= set(found)


def test_distinct_marks(backend: Backend, rng: np.random.Generator) -> None:
    """Kept sorted, listed, removable, kept when an image is replaced, deleted with
    either image; refused for an image not stored or an image with itself."""
    sigs = random_signatures(rng, 3)
    backend.add_many(Record(p, sigs[i]) for i, p in enumerate(("b", "a", "c")))
    try:
        backend.mark_distinct("b", "a")
    except ConfigError:
        pytest.skip(f"{type(backend).__name__} keeps no distinct marks yet")
    backend.mark_distinct("a", "b")  # the same mark again
    backend.mark_distinct("c", "a")
    assert backend.distinct() == [("a", "b"), ("a", "c")]
    backend.add(Record("b", sigs[2]))  # replaced: still the same image
    assert backend.distinct() == [("a", "b"), ("a", "c")]
    assert backend.unmark_distinct("c", "a") and not backend.unmark_distinct("c", "a")
    assert backend.distinct() == [("a", "b")]
    with pytest.raises(NotFound):
        backend.mark_distinct("a", "missing")
    with pytest.raises(InvalidRequest):
        backend.mark_distinct("a", "a")
    backend.delete("b")
    assert backend.distinct() == []
    backend.add(Record("b", sigs[0]))  # added again: a new image, unmarked
    assert backend.distinct() == []
