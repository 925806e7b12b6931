"""``lookalike export`` and ``lookalike import`` on real stores: SQLite files, a Milvus
Lite file and the memory store (within one process). Round trips keep every field and
every search answer; a malformed line is named; an import killed with SIGKILL resumes."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends.support import perturb, random_signatures, unit_vectors

from lookalike import Settings
from lookalike.backends.base import Backend
from lookalike.cli import main
from lookalike.records import Record
from lookalike.service import Lookalike

from .test_cli import user_environment

N = 47  # records of the source store: 6 photos, "tagged", 40 with embeddings


def lookalike(store: str, *args: str) -> tuple[int, str, str]:
    """``lookalike --store STORE ARGS`` through ``main`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--store", store, *args], environ=user_environment())
    return code, out.getvalue(), err.getvalue()


def sqlite(path: Path) -> str:
    return "sqlite:///" + str(path)


@pytest.fixture
def source(tmp_path: Path, photo_files: dict[str, Path]) -> str:
    """A SQLite store of real photos (previews with thumbnails and content hashes, some
    metadata) and of records with embeddings, two of them marked distinct."""
    url = sqlite(tmp_path / "source.db")
    with Lookalike(Settings(backend=url)) as service:
        files = [(p.name, p) for p in photo_files.values()]
        assert len(files) == N - 41
        assert all(r.error is None for r in service.add_files(files, workers=1))
        service.add("tagged", next(iter(photo_files.values())).read_bytes(), {"tag": "ü", "n": 3})
        rng = np.random.default_rng(5)
        sigs, vectors = random_signatures(rng, 40), unit_vectors(rng, 40)
        service.add_many(
            Record(f"vec/{i}", sig, {"i": i}, embedding=v)
            for i, (sig, v) in enumerate(zip(sigs, vectors, strict=True))
        )
        service.mark_distinct("vec/0", "vec/1")
    return url


def everything(backend: Backend) -> dict[str, Any]:
    """Every field of every record, the list order and the marks."""
    paths = backend.list(0, 10_000)
    previews = backend.previews(paths)
    records = {}
    for path in paths:
        r = backend.get(path)
        assert r is not None
        embedding = None if r.embedding is None else r.embedding.tobytes()
        records[path] = (
            r.signature.tobytes(), r.metadata, r.created, r.updated, embedding, previews.get(path)
        )  # fmt: skip
    return {"order": paths, "records": records, "marks": backend.distinct()}


def answers(backend: Backend, queries: np.ndarray, vectors: np.ndarray) -> list[Any]:
    found = [
        [(m.filepath, m.distance) for m in backend.search(q, limit=10, max_distance=0.6)]
        for q in queries
    ]
    found += [
        [(m.filepath, m.distance) for m in backend.search_embedding(v, limit=5, max_distance=1.0)]
        for v in vectors
    ]
    return found


def opened(url: str) -> Lookalike:
    return Lookalike(Settings(backend=url))


def test_sqlite_to_milvus_lite_to_sqlite_keeps_every_field_and_answer(
    source: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "one.jsonl.gz", tmp_path / "two.jsonl"
    milvus = "milvus:///" + str(tmp_path / "milvus.db")
    back = sqlite(tmp_path / "back.db")
    code, out, err = lookalike(source, "export", str(first))
    assert code == 0, err
    assert out.startswith(f"exported {N} images")
    with gzip.open(first) as compressed:
        assert compressed.readline().startswith(b'{"format": "lookalike-export"')
    assert lookalike(milvus, "import", str(first))[0] == 0
    code, out, _ = lookalike(milvus, "export", str(second))
    assert code == 0 and f"exported {N} images" in out
    code, out, err = lookalike(back, "import", str(second))
    assert code == 0, err
    assert "1 distinct marks (0 not kept)" in out
    with opened(source) as a, opened(milvus) as m, opened(back) as b:
        want, got = everything(a.backend), everything(b.backend)
        assert want["marks"] == [("vec/0", "vec/1")]
        assert want == got and everything(m.backend) == want
        rng = np.random.default_rng(9)
        stored = [a.backend.get(p) for p in ("vec/3", "tagged")]
        queries = np.stack([perturb(rng, r.signature, 0.05) for r in stored if r is not None])
        vectors = unit_vectors(rng, 3)
        assert answers(a.backend, queries, vectors) == answers(b.backend, queries, vectors)
        assert answers(a.backend, queries, vectors) == answers(m.backend, queries, vectors)


def test_sqlite_to_memory_to_sqlite_keeps_marks_and_every_field(
    source: str, tmp_path: Path
) -> None:
    exported = tmp_path / "all.jsonl"
    assert lookalike(source, "export", str(exported))[0] == 0
    back = sqlite(tmp_path / "back.db")
    with opened("memory://") as memory:  # the memory store lives in this service only
        with exported.open(encoding="utf-8") as lines:
            counts = memory.import_(lines)
        assert counts == {"imported": N, "skipped": 0, "marks": 1, "marks_skipped": 0}
        again = tmp_path / "again.jsonl"
        with again.open("w", encoding="utf-8") as out:
            assert memory.export(out) == N
    code, out, err = lookalike(back, "import", str(again))
    assert code == 0, err
    assert f"imported {N} images, 0 already there, 1 distinct marks (0 not kept)" in out
    with opened(source) as a, opened(back) as b:
        assert everything(a.backend) == everything(b.backend)


def test_a_malformed_line_is_named_and_the_lines_before_it_are_kept(
    source: str, tmp_path: Path
) -> None:
    exported = tmp_path / "all.jsonl"
    assert lookalike(source, "export", str(exported))[0] == 0
    lines = exported.read_text(encoding="utf-8").splitlines(keepends=True)
    cases = {
        "truncated": (lines[5][: len(lines[5]) // 2] + "\n", "line 6: not valid JSON"),
        "no signature": ('{"filepath": "x"}\n', "line 6: the record lacks 'signature'"),
        "short signature": ('{"filepath": "x", "signature": "AAAA"}\n', "648 bytes"),
        "bad base64": ('{"filepath": "x", "signature": "@@"}\n', "line 6: bad base64"),
    }
    for name, (bad, message) in cases.items():
        broken = tmp_path / f"{name}.jsonl"
        broken.write_text("".join(lines[:5]) + bad + "".join(lines[6:]), encoding="utf-8")
        target = sqlite(tmp_path / f"{name}.db")
        code, _, err = lookalike(target, "import", str(broken))
        assert code == 2 and message in err, (name, err)
        assert "Traceback" not in err
        with opened(target) as t:
            assert t.count() == 4, name  # lines 2 to 5
    not_export = tmp_path / "other.jsonl"
    not_export.write_text('{"hello": 1}\n', encoding="utf-8")
    code, _, err = lookalike(sqlite(tmp_path / "x.db"), "import", str(not_export))
    assert code == 2 and "line 1: not a lookalike export" in err
    later = tmp_path / "later.jsonl"
    later.write_text('{"format": "lookalike-export", "version": 99}\n', encoding="utf-8")
    code, _, err = lookalike(sqlite(tmp_path / "x.db"), "import", str(later))
    assert code == 2 and "export version 99" in err
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress("".join(lines).encode())[:-40])
    code, _, err = lookalike(sqlite(tmp_path / "cut.db"), "import", str(cut))
    assert code == 2 and "cannot read" in err, err


def test_an_import_killed_with_sigkill_resumes_where_it_stopped(tmp_path: Path) -> None:
    """The export is fed through a pipe: the import is killed while it waits for more,
    after two batches were stored; run again, it skips those and stores the rest."""
    rng = np.random.default_rng(3)
    source = sqlite(tmp_path / "source.db")
    with opened(source) as service:
        service.add_many(
            Record(f"r/{i}", sig, {"i": i}) for i, sig in enumerate(random_signatures(rng, 5000))
        )
    exported = tmp_path / "all.jsonl"
    assert lookalike(source, "export", str(exported))[0] == 0
    lines = exported.read_text(encoding="utf-8").splitlines(keepends=True)
    pipe, target = tmp_path / "pipe", tmp_path / "target.db"
    os.mkfifo(pipe)
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "--store", sqlite(target), "import", str(pipe)],
        env=user_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with pipe.open("w", encoding="utf-8") as feed:
            feed.writelines(lines[:2501])  # the header and 2,500 records
            feed.flush()
            deadline = time.monotonic() + 60
            while stored(target) < 2000:  # two batches of 1,000 written, the third waits
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    except BrokenPipeError:
        pass
    finally:
        if process.poll() is None:
            process.kill()
    assert stored(target) == 2000
    code, out, err = lookalike(sqlite(target), "import", str(exported))
    assert code == 0, err
    assert "imported 3000 images, 2000 already there" in out
    with opened(source) as a, opened(sqlite(target)) as b:
        assert everything(a.backend) == everything(b.backend)


def stored(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM images").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is not made yet
            return 0


def test_the_export_format_is_as_documented(source: str, tmp_path: Path) -> None:
    exported = tmp_path / "all.jsonl"
    assert lookalike(source, "export", str(exported))[0] == 0
    lines = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    header, records, marks = lines[0], lines[1:-1], lines[-1:]
    assert header["format"] == "lookalike-export" and header["version"] == 1
    assert header["count"] == N == len(records)
    assert marks == [{"distinct": ["vec/0", "vec/1"]}]
    keys = {"filepath", "metadata", "signature", "embedding", "created", "updated", "preview"}
    assert all(set(r) == keys for r in records)
    photo = next(r for r in records if r["filepath"] == "tagged")
    assert photo["metadata"] == {"tag": "ü", "n": 3} and photo["embedding"] is None
    assert set(photo["preview"]) == {
        "width", "height", "bytes", "media_type", "thumbnail", "sha256", "modified",
    }  # fmt: skip
    assert len(photo["preview"]["sha256"]) == 64 and photo["preview"]["thumbnail"]
    assert all(
        r["preview"] is None and r["embedding"] for r in records if r["filepath"].startswith("vec/")
    )
    assert not (tmp_path / "all.jsonl.partial").exists()
