"""The Milvus store on a real Milvus Lite, beyond the contract suite (which runs on it too).

Milvus Lite runs inside the test process, one server per file. What runs here is the code a
Milvus server gets; what Milvus Lite cannot show is how a server's own parser and index read
the same requests (``milvus.queries`` explains the choices made for that).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="install lookalike[milvus]")
pytest.importorskip("milvus_lite", reason="install lookalike[milvus]")

from milvus_lite.search.filter import parse_expr
from milvus_lite.search.filter.ast import CmpOp, MetaAccess, Or, StringLit
from milvus_lite.server_manager import server_manager_instance

from lookalike import signature
from lookalike.backends import open_backend
from lookalike.backends.memory import MemoryBackend
from lookalike.backends.milvus import MilvusBackend
from lookalike.backends.milvus.queries import (
    filter_expression,
    in_expression,
    literal,
    parse_url,
    portable_key,
    signature_bound,
)
from lookalike.backends.milvus.rows import preview_row
from lookalike.config import Settings
from lookalike.errors import BackendUnavailable, ConfigError, InvalidRequest
from lookalike.records import Preview, Record
from lookalike.vectors import EMBEDDING_DIMENSION

from .conftest import milvus_url
from .support import perturb, random_signatures

EVERYTHING = 10**9

EVIL = [
    'x" || $meta["m:kind"] != "',
    "x' || filepath != 'y",
    "back\\slash\\",
    '\\"',
    "quote\"double'single",
    "]) or (1 == 1",
    "$meta",
    "&& true",
    "new\nline\ttab\rreturn",
    "\\u4e2d and 中文",
    "emoji 🐱‍👤 ünïcödé",
    "\x01\x1f control",
    "",
]


def lite_collection(store: MilvusBackend, name: str | None = None) -> Any:
    """Milvus Lite's own collection object, to wait for its background index builds."""
    path = os.path.abspath(store.target.lite or "")
    _, db, _ = server_manager_instance._servers[path]
    return db.get_collection(name or store.name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MilvusBackend]:
    backend = open_backend(milvus_url(tmp_path / "store.db"))
    assert isinstance(backend, MilvusBackend)
    yield backend
    backend.close()


# -- URLs and settings ----------------------------------------------------------------------


def test_urls() -> None:
    lite = parse_url("milvus:///data/images.db")
    assert (lite.uri, lite.lite) == ("data/images.db", "data/images.db")
    absolute = parse_url("milvus:////srv/lookalike/images.db")
    assert absolute.lite == "/srv/lookalike/images.db"
    server = parse_url("milvus://milvus.internal:19530")
    assert (server.uri, server.lite) == ("http://milvus.internal:19530", None)
    assert parse_url("milvus+https://in01.zillizcloud.com").uri == "https://in01.zillizcloud.com"
    assert parse_url("milvus+http://h:1/prod").uri == "http://h:1/prod"
    secret = parse_url("milvus+https://root:s3cret@h:443")
    assert secret.uri == "https://root:s3cret@h:443"
    assert "s3cret" not in secret.shown and "***" in secret.shown
    for bad in (
        "milvus://",
        "milvus:///",
        "milvus:///images",  # Milvus Lite files end in .db
        "milvus:///data/.db",
        "milvus+https:///x.db",
        "milvus://h:19530?x=1",
        "milvus://h:99999",
        "http://h:19530",
    ):
        with pytest.raises(ConfigError):
            parse_url(bad)


def test_open_backend_reads_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(backend="milvus:///nested/dir/images.db").replace(
        milvus_collection="photos_v2", milvus_candidates=7, milvus_ef=99, milvus_index="FLAT"
    )
    backend = open_backend(settings.store, settings)
    try:
        assert isinstance(backend, MilvusBackend)
        assert (tmp_path / "nested" / "dir" / "images.db").is_dir()  # relative to the cwd
        assert (backend.name, backend.vectors_name) == ("photos_v2", "photos_v2_embeddings")
        assert (backend.candidates, backend.ef, backend.index) == (7, 99, "FLAT")
        assert backend.stats()["collection"] == "photos_v2"
    finally:
        backend.close()
    with pytest.raises(ConfigError):
        open_backend(milvus_url(tmp_path / "y.db"), Settings().replace(milvus_collection="a-b"))
    with pytest.raises(ConfigError):
        Settings().replace(milvus_index="IVF_PQ")
    with pytest.raises(ConfigError):
        Settings().replace(milvus_candidates=0)


def test_a_foreign_collection_is_refused(tmp_path: Path) -> None:
    from pymilvus import DataType, MilvusClient

    url = milvus_url(tmp_path / "foreign.db")
    client = MilvusClient(str(tmp_path / "foreign.db"))
    schema = MilvusClient.create_schema(auto_id=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
    client.create_collection("images", schema=schema)
    client.close()
    with pytest.raises(ConfigError, match="not a lookalike collection"):
        MilvusBackend(url)


# -- expressions: nothing a filepath, key or value holds can become an operator -------------


@pytest.mark.parametrize("value", EVIL, ids=repr)
def test_a_literal_reads_back_as_itself(value: str) -> None:
    tree = parse_expr(f"filepath == {literal(value)}")
    assert isinstance(tree, CmpOp) and isinstance(tree.right, StringLit)
    assert tree.right.value == value
    listed = parse_expr(in_expression("filepath", [value, "plain"]))
    assert [element.value for element in listed.values.elements] == [value, "plain"]


def test_filter_expressions() -> None:
    assert filter_expression(None) == filter_expression({}) == ""
    assert filter_expression({"kind": "cat"}) == '$meta["m:kind"] == "cat"'
    assert filter_expression({"ok": True}) == '$meta["m:ok"] == true'
    assert filter_expression({"n": 1}) == '($meta["m:n"] == 1 || $meta["m:n"] == 1.0)'
    assert filter_expression({"n": -2.0}) == '($meta["m:n"] == -2 || $meta["m:n"] == -2.0)'
    assert filter_expression({"n": 1.5}) == '$meta["m:n"] == 1.5'
    both = filter_expression({"kind": "cat", "n": 2**62})
    assert both.count("&&") == 1 and "4611686018427387904" in both
    # keys Milvus servers read differently from what they are are left to the backend
    for key in ('say "hi"', "it's", "a[0]", "a/b", "~x", "back\\slash", "tab\tkey", ""):
        assert not portable_key(key)
        assert filter_expression({key: 1}) == ""
    for key in ("ключ 🐱", "a.b", "$.n", "%", "a == 1 || b"):
        assert portable_key(key)
        tree = parse_expr(filter_expression({key: "v"}))
        assert isinstance(tree, CmpOp) and isinstance(tree.left, MetaAccess)
        assert tree.left.key == "m:" + key


@pytest.mark.parametrize("value", EVIL, ids=repr)
def test_a_filter_value_is_one_comparison(value: str) -> None:
    tree = parse_expr(filter_expression({"kind": value}))
    assert isinstance(tree, CmpOp) and tree.op == "=="
    assert isinstance(tree.left, MetaAccess) and tree.left.key == "m:kind"
    assert isinstance(tree.right, StringLit) and tree.right.value == value


def test_a_number_filter_is_two_comparisons() -> None:
    tree = parse_expr(filter_expression({"n": 3}))
    assert isinstance(tree, Or)


def test_filter_injection(store: MilvusBackend, rng: np.random.Generator) -> None:
    """Metadata full of quotes, backslashes, brackets and operators is stored and filtered
    literally, under portable and unportable keys alike."""
    sig = random_signatures(rng, 1)[0]
    keys = ["kind", 'say "hi"', "x[0]", "back\\slash", "ключ"]
    records = [
        Record(f"r{i}", sig, {key: value for key in keys} | {"i": i})
        for i, value in enumerate(EVIL)
    ]
    records.append(Record("other", sig, {"kind": "cat", "i": -1}))
    store.add_many(records)
    for i, value in enumerate(EVIL):
        for key in keys:
            got = store.search(sig, limit=EVERYTHING, max_distance=0.5, where={key: value})
            assert [m.filepath for m in got] == [f"r{i}"], (key, value)
            assert got[0].metadata == records[i].metadata
    assert store.search(sig, limit=5, max_distance=0.5, where={"kind": "dog"}) == []
    both = store.search(sig, limit=5, max_distance=0.5, where={"kind": EVIL[0], "i": 0})
    assert [m.filepath for m in both] == ["r0"]
    assert store.count() == len(EVIL) + 1


def test_odd_filepaths_are_keys_not_expressions(
    store: MilvusBackend, rng: np.random.Generator
) -> None:
    sigs = random_signatures(rng, len(EVIL) + 1)
    names = [f"p{value}" for value in EVIL]
    store.add_many(Record(name, sig) for name, sig in zip(names, sigs, strict=False))
    store.add(Record("victim", sigs[-1]))
    for name in names:
        assert store.delete(name) is True
    assert store.list(0, EVERYTHING) == ["victim"]
    assert store.get("victim") is not None


# -- values ---------------------------------------------------------------------------------


def test_metadata_is_kept_exactly(store: MilvusBackend, rng: np.random.Generator) -> None:
    sig = random_signatures(rng, 1)[0]
    kinds: dict[str, Any] = {
        "big": {"n": 2**62, "least": -(2**63), "list": [2**63 - 1, 1.5, 1e300]},
        "empty": {},
        "none": None,
        "nested": {"a": {"b": [1, None, "c", {"d": -0.0}]}, "t": True},
    }
    for name, metadata in kinds.items():
        store.add(Record(name, sig, metadata))
    for name, metadata in kinds.items():
        record = store.get(name)
        assert record is not None and record.metadata == metadata
        assert json.dumps(record.metadata) == json.dumps(metadata)
    found = store.search(sig, limit=5, max_distance=0.5, where={"n": 2**62 * 1.0})
    assert [m.filepath for m in found] == ["big"]  # as 2**62 == float(2**62) in Python
    with pytest.raises(InvalidRequest, match="64 bits"):  # beyond what Milvus keeps
        store.add(Record("huge", sig, {"n": 2**70}))
    with pytest.raises(InvalidRequest):
        store.add(Record("long", sig, {"text": "x" * 70_000}))
    with pytest.raises(InvalidRequest):
        store.add(Record("路" * 30_000, sig))  # 90,000 bytes of UTF-8
    assert store.count() == len(kinds)


def test_blank_signatures(store: MilvusBackend, rng: np.random.Generator) -> None:
    """An all-zero signature (a flat image) has no cosine: it is stored as a placeholder
    vector and ranked as the zeros it is."""
    zero = np.zeros(signature.LENGTH, dtype=np.int8)
    sigs = random_signatures(rng, 30)
    store.add_many([Record("blank", zero)] + [Record(f"s{i}", s) for i, s in enumerate(sigs)])
    record = store.get("blank")
    assert record is not None and not record.signature.any()
    assert store.search(zero, limit=5, max_distance=1.0) == []
    assert [(m.filepath, m.distance) for m in store.search(zero, limit=2, max_distance=1.5)] == [
        ("blank", 1.0),
        ("s0", 1.0),
    ]
    everything = store.search(np.stack([sigs[3], zero]), limit=EVERYTHING, max_distance=1.5)
    assert len(everything) == 31 and everything[0].filepath == "s3"


def test_a_half_written_embedding_is_ignored(
    store: MilvusBackend, rng: np.random.Generator
) -> None:
    """An embedding row whose version is not its record's — what a write that failed
    between the two collections leaves — is never returned."""
    vectors = rng.normal(size=(2, EMBEDDING_DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors.astype(np.float16).astype(np.float32)
    sig = random_signatures(rng, 1)[0]
    store.add(Record("a", sig, {"k": 1}, embedding=vectors[0]))
    store.add(Record("b", sig))
    # as if an add of "b" with an embedding had written only its embedding row
    store._client.upsert(
        store.vectors_name,
        [{"filepath": "b", "embedding": vectors[1].tolist(), "version": 1, "m:k": 1}],
    )
    assert [m.filepath for m in store.search_embedding(vectors[0], limit=5, max_distance=2.0)] == [
        "a"
    ]
    assert store.search_embedding(vectors[1], limit=5, max_distance=0.1) == []
    record = store.get("b")
    assert record is not None and record.embedding is None


def test_a_half_written_preview_is_ignored(store: MilvusBackend, rng: np.random.Generator) -> None:
    """A preview row whose version is not its record's — what a write that failed before
    its record was written leaves — is not served; the record's own preview is."""
    sig = random_signatures(rng, 1)[0]
    store.add(Record("a", sig, preview=Preview(40, 30, 900, b"\xff\xd8jpeg")))
    store.add(Record("b", sig))
    stray = preview_row("b", Preview(10, 10, 100, b"\xff\xd8stray"), version=1)
    store._client.upsert(store.previews_name, [stray])
    assert store.previews(["a", "b"]) == {"a": Preview(40, 30, 900, b"\xff\xd8jpeg")}


def test_a_store_made_before_previews_opens_without_them(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """A store whose previews collection is missing (made by an earlier lookalike) opens,
    keeps its records, answers no previews for them, and keeps those of new adds."""
    url = milvus_url(tmp_path / "old.db")
    sig = random_signatures(rng, 1)[0]
    old = MilvusBackend(url)
    old.add(Record("old", sig, {"k": 1}))
    old._client.request(old._client.milvus.drop_collection, old.previews_name)
    assert not old._client.request(old._client.milvus.has_collection, old.previews_name)
    old.close()
    reopened = MilvusBackend(url)
    try:
        assert reopened.count() == 1 and reopened.previews(["old"]) == {}
        reopened.add(Record("new", sig, preview=Preview(5, 6, 7)))
        assert reopened.previews(["old", "new"]) == {"new": Preview(5, 6, 7)}
        assert sorted(m.filepath for m in reopened.search(sig, limit=5, max_distance=0.1)) == [
            "new",
            "old",
        ]
    finally:
        reopened.close()


def test_a_previews_collection_without_dynamic_fields_keeps_no_hashes(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previews collection made before content hashes were kept (no dynamic fields)
    opens and keeps sizes and thumbnails; the hash and file time are dropped, not fatal."""
    from lookalike.backends.milvus import client

    made = client.schema

    def old_schema(kind: str) -> Any:
        built = made(kind)
        if kind == "previews":
            built = type(built)(fields=built.fields, enable_dynamic_field=False)
        return built

    url = milvus_url(tmp_path / "old.db")
    monkeypatch.setattr(client, "schema", old_schema)
    MilvusBackend(url).close()
    monkeypatch.setattr(client, "schema", made)
    sig = random_signatures(rng, 1)[0]
    reopened = MilvusBackend(url)
    try:
        hashed = Preview(5, 6, 7, b"\xff\xd8x", sha256="ab" * 32, modified=1.5)
        reopened.add(Record("new", sig, preview=hashed))
        assert reopened.previews(["new"]) == {"new": Preview(5, 6, 7, b"\xff\xd8x")}
    finally:
        reopened.close()
    fresh = MilvusBackend(milvus_url(tmp_path / "new.db"))
    try:  # and a collection made now keeps them
        fresh.add(Record("new", sig, preview=hashed))
        assert fresh.previews(["new"]) == {"new": hashed}
    finally:
        fresh.close()


# -- search: exact re-rank, complete candidates, recall of the default index ---------------


def oracle_store(rng: np.random.Generator, n: int) -> tuple[list[Record], np.ndarray]:
    sigs = random_signatures(rng, n)
    for i in range(0, n, 5):  # near-copies, so that cutoffs up to 0.45 have hits
        sigs[i + 1] = perturb(rng, sigs[i], 0.1)
        sigs[i + 2] = perturb(rng, sigs[i], 0.03)
    records = [Record(f"img/{i:04d}", sigs[i], {"g": i % 3}) for i in range(n)]
    return records, sigs


def queries(rng: np.random.Generator, sigs: np.ndarray, count: int) -> Iterator[np.ndarray]:
    for j in range(count):
        near = perturb(rng, sigs[rng.integers(len(sigs))], 0.1)
        if j % 2:
            yield np.stack([near, *random_signatures(rng, 7)])  # 8 orientations, one near
        else:
            yield near[None, :]


def test_escalation_finds_everything_an_exact_index_holds(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """With FLAT (exact) and a single candidate per row at first, every answer still equals
    brute force: the search asks for more until nothing left out can belong."""
    store = MilvusBackend(milvus_url(tmp_path / "flat.db"), index="FLAT", candidates=1)
    reference = MemoryBackend()
    try:
        records, sigs = oracle_store(rng, 600)
        store.add_many(records)
        reference.add_many(records)
        for query in queries(rng, sigs, 6):
            for cutoff, limit, where in [
                (0.45, 10, None),
                (0.3, 3, {"g": 1}),
                (0.72, 25, None),
                (1.0, EVERYTHING, {"g": 2}),
            ]:
                options: dict[str, Any] = {"limit": limit, "max_distance": cutoff, "where": where}
                assert store.search(query, **options) == reference.search(query, **options)
    finally:
        store.close()


@pytest.mark.slow
def test_recall_of_the_default_index(tmp_path: Path, rng: np.random.Generator) -> None:
    """Default settings (HNSW, M=16, ef 128+, 32 candidates first), a few thousand random
    signatures, queries near a stored one (and 7 unrelated rows): the best 10 within the
    default cutoff and within wide ones, against brute force. Every distance returned is
    the exact one; recall@10 at least 0.99."""
    store = open_backend(milvus_url(tmp_path / "recall.db"))
    assert isinstance(store, MilvusBackend)
    reference = MemoryBackend()
    try:
        records, sigs = oracle_store(rng, 3000)
        store.add_many(records)
        reference.add_many(records)
        store.reindex()
        lite_collection(store)._wait_for_bg()  # searched through HNSW, not brute force
        expected_total = found_total = 0
        for query in queries(rng, sigs, 40):
            for cutoff, where in [(0.45, None), (0.72, None), (1.0, {"g": 1})]:
                options: dict[str, Any] = {"limit": 10, "max_distance": cutoff, "where": where}
                expected = {m.filepath: m for m in reference.search(query, **options)}
                got = store.search(query, **options)
                for m in got:
                    if m.filepath in expected:
                        assert m == expected[m.filepath]
                        assert m.metadata == expected[m.filepath].metadata
                    else:  # one the index missed makes room for the next best: still exact
                        assert m.distance == reference_distance(query, sigs, m.filepath)
                expected_total += len(expected)
                found_total += len(expected.keys() & {m.filepath for m in got})
        assert expected_total > 500
        assert found_total / expected_total >= 0.99
    finally:
        store.close()


def reference_distance(query: np.ndarray, sigs: np.ndarray, filepath: str) -> float:
    stored = sigs[int(filepath.split("/")[1])]
    return min(signature.distance(row, stored) for row in query)


def test_the_completeness_bound() -> None:
    """d >= sqrt((1 - cos) / 2), equality for equal norms: the bound the search stops on."""
    rng = np.random.default_rng(7)
    for _ in range(2000):
        a, b = rng.integers(-2, 3, size=(2, signature.LENGTH))
        a[: rng.integers(0, 600)] = 0  # norms far apart as well as near
        cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
        assert signature.distance(a, b) >= signature_bound(cosine)
    a = rng.integers(-2, 3, size=signature.LENGTH)
    assert signature.distance(a, -a) == pytest.approx(signature_bound(-1.0), abs=1e-4)


# -- list order, persistence, one process per Milvus Lite file -----------------------------


@pytest.mark.parametrize("exclusive", [True, False], ids=["kept-in-memory", "read-each-time"])
def test_list_order_at_depth(tmp_path: Path, rng: np.random.Generator, exclusive: bool) -> None:
    store = MilvusBackend(milvus_url(tmp_path / "order.db"), exclusive=exclusive)
    try:
        n = 1500
        sigs = random_signatures(rng, n + 10)
        names = [f"n{(i * 7919) % 10_000:05d}" for i in range(n)]  # not sorted
        store.add_many(Record(name, sig) for name, sig in zip(names, sigs, strict=False))
        store.add_many(Record(name, sigs[-1], {"replaced": True}) for name in names[::7])
        for name in names[3::11]:
            store.delete(name)
        readded = names[3::11][:20]
        store.add_many(Record(name, sigs[-2]) for name in readded)
        gone = set(names[3::11])
        expected = [name for name in names if name not in gone] + readded
        assert store.count() == len(expected)
        assert store.list(0, EVERYTHING) == expected
        for offset in (0, 1, 999, 1000, len(expected) - 3, len(expected), 10**6):
            assert store.list(offset, 37) == expected[offset : offset + 37]
        assert store.list(5, 0) == []
    finally:
        store.close()


def test_persistence_across_reopen(tmp_path: Path, rng: np.random.Generator) -> None:
    url = milvus_url(tmp_path / "kept.db")
    sigs = random_signatures(rng, 2100)
    vector = rng.normal(size=EMBEDDING_DIMENSION).astype(np.float32)
    vector = (vector / np.linalg.norm(vector)).astype(np.float16).astype(np.float32)
    first = MilvusBackend(url)
    first.add_many(Record(f"r{i}", sigs[i], {"i": i}) for i in range(1500))  # flushed, and not
    first.add_many(Record(f"r{i}", sigs[i], {"i": i}) for i in range(1500, 2000))
    first.add(Record("with-embedding", sigs[2000], embedding=vector))
    first.delete("r5")
    before = first.get("r7")
    first.close()

    again = MilvusBackend(url)
    try:
        assert again.count() == 2000
        assert again.list(0, 3) == ["r0", "r1", "r2"]
        assert again.list(1997, 10) == ["r1998", "r1999", "with-embedding"]
        record = again.get("r7")
        assert record is not None and before is not None
        assert (record.created, record.metadata) == (before.created, before.metadata)
        assert record.signature.tobytes() == sigs[7].tobytes()
        assert again.get("r5") is None
        [match] = again.search(sigs[1999], limit=5, max_distance=0.3)
        assert (match.filepath, match.distance) == ("r1999", 0.0)
        found = again.search_embedding(vector, limit=5, max_distance=0.1)
        assert [m.filepath for m in found] == ["with-embedding"]
        again.add(Record("r0", sigs[2001]))  # a replace keeps its place
        again.add(Record("new", sigs[2002]))  # a new one goes last, after the reopen too
        assert again.list(0, 2) == ["r0", "r1"]
        assert again.list(1999, 5) == ["with-embedding", "new"]
    finally:
        again.close()


def test_distinct_marks_are_a_collection_made_by_the_first_mark(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """A store that never marks has no fourth collection (and deletes without one); the
    marks persist across a reopen, a second store of the process sees one made by the
    first, and they go with either image, filepaths that look like expressions included."""
    url = milvus_url(tmp_path / "marks.db")
    odd = 'x" or first != "'
    sigs = random_signatures(rng, 4)
    first = MilvusBackend(url)
    first.add_many(Record(p, sigs[i]) for i, p in enumerate(("a", "b", odd, "c")))
    first.delete("c")
    assert first.distinct() == [] and not first.unmark_distinct("a", "b")
    assert not first._client.exists(first.distinct_name)
    second = MilvusBackend(url)
    assert second.distinct() == []  # looked, found none
    first.mark_distinct("b", "a")
    first.mark_distinct(odd, "a")
    assert second.distinct() == [("a", "b"), ("a", odd)]
    second.close()
    first.close()

    again = MilvusBackend(url)
    try:
        assert again.distinct() == [("a", "b"), ("a", odd)]
        again.delete(odd)
        assert again.distinct() == [("a", "b")]
    finally:
        again.close()


def test_a_second_process_is_told_the_file_is_in_use(tmp_path: Path) -> None:
    url = milvus_url(tmp_path / "busy.db")
    holder = MilvusBackend(url)
    code = (
        "import sys\n"
        "from lookalike.backends.milvus import MilvusBackend\n"
        "from lookalike.errors import BackendUnavailable\n"
        "try:\n"
        f"    MilvusBackend({url!r}, timeout=3)\n"
        "except BackendUnavailable as error:\n"
        "    print(error)\n"
        "    sys.exit(7)\n"
    )
    try:
        busy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert busy.returncode == 7, busy.stderr
        assert "one process at a time" in busy.stdout
    finally:
        holder.close()
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr  # closed: the next process may open it


def test_two_backends_of_one_process_share_the_file(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    url = milvus_url(tmp_path / "shared.db")
    one, two = MilvusBackend(url), MilvusBackend(url)
    sigs = random_signatures(rng, 3)
    one.add(Record("a", sigs[0]))
    assert two.list() == ["a"]
    two.add(Record("b", sigs[1]))
    one.close()  # the other keeps the server
    assert two.count() == 2 and two.list() == ["a", "b"]
    two.close()


def test_a_closed_store_leaves_no_connection_behind(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """pymilvus keeps a shared connection open by address after its clients close; a later
    Milvus Lite server given the same port then met the stale channel ("Fail connecting
    to server", seen once in CI). Each store's connection is its own and closes with it."""
    from pymilvus.client.connection_manager import ConnectionManager

    manager = ConnectionManager.get_instance()
    before = set(manager._registry), set(manager._dedicated)
    store = MilvusBackend(milvus_url(tmp_path / "closing.db"))
    store.add(Record("a", random_signatures(rng, 1)[0]))
    assert (set(manager._registry), set(manager._dedicated)) != before  # it had one
    store.close()
    assert (set(manager._registry), set(manager._dedicated)) == before


# -- an unavailable server ------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


def test_an_unreachable_server_is_unavailable() -> None:
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        open_backend(f"milvus://127.0.0.1:{port}", Settings().replace(milvus_timeout=2.0))
    with pytest.raises(BackendUnavailable) as raised:
        MilvusBackend(f"milvus+https://user:pw1@127.0.0.1:{port}", timeout=1.0)
    assert "pw1" not in str(raised.value)
    assert time.monotonic() - started < 60  # failed, rather than hung


def test_a_server_that_goes_away_is_unavailable(tmp_path: Path, rng: np.random.Generator) -> None:
    store = MilvusBackend(milvus_url(tmp_path / "gone.db"), timeout=1.0)
    sig = random_signatures(rng, 1)[0]
    store.add(Record("a", sig))
    server_manager_instance.release_server(str(tmp_path / "gone.db"))  # Milvus Lite stops
    try:
        for call in (
            lambda: store.search(sig, limit=5, max_distance=0.5),
            lambda: store.add(Record("b", sig)),
            store.count,
        ):
            with pytest.raises(BackendUnavailable, match=r"gone\.db"):
                call()
    finally:
        store.close()


# -- end to end: the HTTP API and the command line ------------------------------------------


@pytest.fixture
def http_service(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    import httpx
    import uvicorn

    from lookalike.api import create_app
    from lookalike.service import Lookalike

    running: list[tuple[Any, threading.Thread, Lookalike]] = []

    def start(**overrides: Any) -> tuple[str, Lookalike]:
        settings = Settings(backend=milvus_url(tmp_path / "api.db")).replace(**overrides)
        service = Lookalike(settings)
        port = closed_port()
        config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="error")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.01)
        running.append((server, thread, service))
        return f"http://127.0.0.1:{port}", service

    with httpx.Client(timeout=30) as client:
        yield lambda **overrides: (client, *start(**overrides))
    for server, thread, service in running:
        server.should_exit = True
        thread.join(timeout=10)
        service.close()


def test_http_api_end_to_end(
    http_service: Callable[..., Any],
    photo_bytes: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, url, service = http_service(milvus_timeout=1.0)
    for name, data in photo_bytes.items():
        answer = client.post(
            f"{url}/add",
            files={"image": (f"{name}.jpg", data)},
            data={"filepath": f"photos/{name}.jpg", "metadata": json.dumps({"who": name})},
        )
        assert answer.status_code == 200, answer.text
    assert client.get(f"{url}/count").json()["result"] == [len(photo_bytes)]
    assert client.get(f"{url}/list", params={"limit": 2}).json()["result"] == [
        f"photos/{name}.jpg" for name in list(photo_bytes)[:2]
    ]
    found = client.post(f"{url}/search", files={"image": ("q.jpg", photo_bytes["chelsea"])})
    [best, *_] = found.json()["result"]
    assert (best["filepath"], best["score"], best["metadata"]) == (
        "photos/chelsea.jpg",
        100.0,
        {"who": "chelsea"},
    )
    filtered = client.post(
        f"{url}/search",
        files={"image": ("q.jpg", photo_bytes["chelsea"])},
        data={"filter": json.dumps({"who": "coffee"})},
    )
    assert filtered.json()["result"] == []
    assert client.get(f"{url}/stats").json()["result"][0]["backend"] == "milvus"
    deleted = client.request("DELETE", f"{url}/delete", params={"filepath": "photos/chelsea.jpg"})
    assert deleted.status_code == 200
    assert client.get(f"{url}/count").json()["result"] == [len(photo_bytes) - 1]
    # Milvus stops: the API answers 503, and keeps serving
    assert service.backend.target.lite is not None
    server_manager_instance.release_server(os.path.abspath(service.backend.target.lite))
    down = client.post(f"{url}/search", files={"image": ("q.jpg", photo_bytes["coffee"])})
    assert down.status_code == 503
    assert down.json()["status"] == "fail"
    # the client is told the store is unavailable; what Milvus said, and where, is logged
    assert down.json()["error"] == ["the store is not available right now; try again later"]
    assert service.backend.target.lite not in down.text
    assert any("Milvus" in r.getMessage() for r in caplog.records)
    assert client.get(f"{url}/ping").status_code == 200


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env["LOOKALIKE_BACKEND"] = url
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).parents[2],
    )


def test_command_line_end_to_end(tmp_path: Path, photo_files: dict[str, Path]) -> None:
    url = milvus_url(tmp_path / "cli.db")
    folder = next(iter(photo_files.values())).parent
    added = run_cli(url, "add", str(folder), "--workers", "2")
    assert added.returncode == 0, added.stderr
    assert f"added {len(photo_files)} images, 0 failed" in added.stdout
    assert run_cli(url, "count").stdout.strip() == str(len(photo_files))
    found = run_cli(url, "search", str(photo_files["coffee"]), "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["filepath"] == str(photo_files["coffee"])
    listed = run_cli(url, "list", "--limit", "100").stdout.split()
    assert sorted(listed) == sorted(map(str, photo_files.values()))
    info = run_cli(url, "info", "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["backend"] == "milvus"
    assert run_cli(url, "delete", str(photo_files["coffee"])).returncode == 0
    assert run_cli(url, "count").stdout.strip() == str(len(photo_files) - 1)
    unreachable = run_cli(f"milvus://127.0.0.1:{closed_port()}", "count")
    assert unreachable.returncode == 5, unreachable.stderr  # store unavailable
