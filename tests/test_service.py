"""The service on a real SQLite store: images in, matches out."""

from __future__ import annotations

import os
import signal
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike import InvalidImage, InvalidRequest, NotFound, Settings, signature
from lookalike.records import BatchItem
from lookalike.service import Lookalike


@pytest.fixture
def service(tmp_path: Path) -> Lookalike:
    settings = Settings(backend="sqlite:///" + str(tmp_path / "store.db"))
    with Lookalike(settings) as service:
        yield service


def test_add_then_search_finds_the_same_picture_with_score_100(service, photo_bytes):
    service.add("cat.jpg", photo_bytes["chelsea"], {"source": "test"})
    service.add("coffee.jpg", photo_bytes["coffee"])
    matches = service.search(photo_bytes["chelsea"])
    assert [m.filepath for m in matches] == ["cat.jpg"]
    assert matches[0].score == 100.0
    assert matches[0].metadata == {"source": "test"}
    assert matches[0].orientation == "identity"


def test_search_finds_edited_copies_and_says_how_they_were_turned(service, photo_bytes, edit):
    for name, content in photo_bytes.items():
        service.add(name, content)
    smaller = edit("rocket", lambda im: im.resize((im.width // 2, im.height // 2)))
    assert service.search(smaller)[0].filepath == "rocket"
    turned = edit("astronaut", lambda im: im.transpose(Image.Transpose.ROTATE_90))
    best = service.search(turned)[0]
    assert best.filepath == "astronaut"
    assert best.orientation == "rot270"  # turning the query back by 270° undoes it
    assert best.score > 90
    assert service.search(turned, all_orientations=False) == []


def test_unrelated_picture_is_not_found(service, photo_bytes):
    service.add("cat", photo_bytes["chelsea"])
    assert service.search(photo_bytes["coins"]) == []


def test_cutoffs_limit_and_filter(service, photo_bytes, edit):
    service.add("a", photo_bytes["coffee"], {"shop": "north"})
    service.add("b", edit("coffee", lambda im: im.resize((300, 200))), {"shop": "south"})
    assert [m.filepath for m in service.search(photo_bytes["coffee"])] == ["a", "b"]
    assert [m.filepath for m in service.search(photo_bytes["coffee"], limit=1)] == ["a"]
    assert [m.filepath for m in service.search(photo_bytes["coffee"], min_score=99.99)] == ["a"]
    filtered = service.search(photo_bytes["coffee"], where={"shop": "south"})
    assert [m.filepath for m in filtered] == ["b"]
    with pytest.raises(InvalidRequest):
        service.search(photo_bytes["coffee"], limit=0)
    with pytest.raises(InvalidRequest):
        service.search(photo_bytes["coffee"], min_score=101)


def test_default_cutoff_is_0_45(service, photo_bytes):
    service.add("cat", photo_bytes["chelsea"])
    query = photo_bytes["astronaut"]
    d = signature.distance(service.signature(photo_bytes["chelsea"]), service.signature(query))
    found = service.search(query, all_orientations=False, max_distance=d + 1e-9)
    assert [m.filepath for m in found] == ["cat"]
    assert service.search(query, all_orientations=False, max_distance=d) == []
    assert (d < 0.45) == bool(service.search(query, all_orientations=False))


def test_search_by_stored_filepath(service, photo_bytes):
    service.add("cat", photo_bytes["chelsea"])
    assert [m.filepath for m in service.search_stored("cat")] == ["cat"]
    with pytest.raises(NotFound):
        service.search_stored("dog")


def test_compare_scores_like_match(service, photo_bytes, edit):
    same = service.compare(photo_bytes["chelsea"], photo_bytes["chelsea"])
    assert same.score == 100.0
    other = service.compare(photo_bytes["chelsea"], photo_bytes["coins"])
    assert other.score < 55
    mirrored = edit("chelsea", lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert service.compare(photo_bytes["chelsea"], mirrored).score < 70
    turned = service.compare(photo_bytes["chelsea"], mirrored, all_orientations=True)
    assert turned.score > 95 and turned.orientation == "mirror"


def test_replace_delete_count_list(service, photo_bytes):
    service.add("x", photo_bytes["chelsea"])
    service.add("y", photo_bytes["coins"])
    service.add("x", photo_bytes["coffee"], {"v": 2})
    assert service.count() == 2
    assert service.list() == ["x", "y"]
    assert service.search(photo_bytes["coffee"])[0].filepath == "x"
    assert service.search(photo_bytes["chelsea"]) == []
    service.delete("x")
    assert service.list() == ["y"]
    with pytest.raises(NotFound):
        service.delete("x")
    with pytest.raises(InvalidRequest):
        service.list(offset=-1)


def test_bad_inputs_raise_the_errors_of_the_tree_and_store_nothing(service, tmp_path):
    with pytest.raises(InvalidImage):
        service.add("bad", b"definitely not an image")
    with pytest.raises(InvalidRequest):
        service.add("", b"x")
    with pytest.raises(InvalidRequest):
        service.add("m", b"x", metadata=["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(InvalidImage):
        service.search(tmp_path / "missing.jpg")
    assert service.count() == 0


def test_image_limits_come_from_settings(tmp_path, photo_bytes):
    settings = Settings(backend="memory://", max_image_bytes=1000)
    with Lookalike(settings) as small, pytest.raises(InvalidImage, match="limit"):
        small.add("a", photo_bytes["chelsea"])


def test_add_files_signs_in_parallel_and_reports_failures(service, photo_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff truncated")
    files = [(str(p), p) for p in photo_files.values()] + [("broken", broken)]
    results = list(service.add_files(files, workers=2, batch=2))
    assert [r.filepath for r in results] == [name for name, _ in files]
    assert [r.filepath for r in results if r.error] == ["broken"]
    assert service.count() == len(photo_files)
    for name, path in photo_files.items():
        stored = service.get(str(path)).signature
        assert np.array_equal(stored, service.signature(path)), name


def test_add_files_without_workers_gives_the_same_store(service, photo_files):
    files = [(p.name, p) for p in photo_files.values()]
    assert all(r.error is None for r in service.add_files(files, workers=1))
    assert sorted(service.list(limit=100)) == sorted(p.name for p in photo_files.values())


def batch_store(tmp_path: Path, name: str, workers: int) -> Lookalike:
    store = "sqlite:///" + str(tmp_path / f"{name}.db")
    return Lookalike(Settings(backend=store, ingest_workers=workers))


def test_a_batch_signed_by_worker_processes_stores_what_one_process_stores(tmp_path, photo_bytes):
    """The signing processes (two) and this process (one worker) give the same records,
    previews included, and the same outcome per item: a bad and a blank image fail alone,
    an unchanged one is not signed again."""
    blank = BytesIO()
    Image.new("RGB", (64, 48), "grey").save(blank, "PNG")
    items = [
        BatchItem(f"{name}.jpg", content, metadata={"n": i})
        for i, (name, content) in enumerate(photo_bytes.items())
    ]
    items += [BatchItem("broken.jpg", b"\xff\xd8\xff truncated"),
              BatchItem("blank.png", blank.getvalue())]  # fmt: skip
    answers, stores = {}, {}
    for name, workers in (("pooled", 2), ("here", 1)):
        with batch_store(tmp_path, name, workers) as service:
            assert (service._signer is not None) == (workers > 1)
            answers[name] = service.add_batch(items)
            again = service.add_batch(items[:2])
            assert [a["status"] for a in again] == ["unchanged", "unchanged"]
            paths = service.list(limit=100)
            stores[name] = {p: (service.get(p), service.backend.previews([p])[p]) for p in paths}
    assert answers["pooled"] == answers["here"]
    statuses = [a["status"] for a in answers["pooled"]]
    assert statuses == ["added"] * len(photo_bytes) + ["failed", "failed"]
    assert "no detail for the signature" in answers["pooled"][-1]["error"]
    assert stores["pooled"].keys() == stores["here"].keys() == {i.filepath for i in items[:-2]}
    for path, (record, preview) in stores["pooled"].items():
        other, other_preview = stores["here"][path]
        assert record.signature.tobytes() == other.signature.tobytes()
        assert record.metadata == other.metadata and preview == other_preview
        assert preview.thumbnail and preview.sha256


def test_a_signing_process_that_dies_fails_its_items_and_the_next_batch_works(
    tmp_path, photo_bytes
):
    """A worker killed with SIGKILL (as the OOM killer would) fails the items it was
    given, with a message; the service starts new workers for the next batch."""
    items = [BatchItem(f"{n}.jpg", c) for n, c in photo_bytes.items()]
    with batch_store(tmp_path, "killed", 2) as service:
        assert service.add_batch(items[:2])[0]["status"] == "added"
        pool = service._signer._pool
        victim = next(iter(pool._processes.values()))  # one is enough: the pool breaks
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        failed = service.add_batch(items[2:])
        assert {a["status"] for a in failed} == {"failed"}
        assert "worker process died" in failed[0]["error"]
        assert service.count() == 2
        assert {a["status"] for a in service.add_batch(items[2:])} == {"added"}
        assert service.count() == len(items)


def test_add_files_again_window_by_window_reports_every_file_once(
    service, photo_files, edit, monkeypatch
):
    """Files are checked against the store and signed a window at a time: each file is
    reported once, the unchanged ones as unchanged, the changed one stored anew."""
    import lookalike.service

    monkeypatch.setattr(lookalike.service, "_FILE_WINDOW", 2)
    files = sorted((p.name, p) for p in photo_files.values())
    assert all(r.error is None and not r.unchanged for r in service.add_files(files, workers=1))
    changed_name, changed_path = files[len(files) // 2]
    changed_path.write_bytes(edit(changed_path.stem, lambda im: im.resize((64, 48))))
    again = list(service.add_files(files, workers=1))
    assert sorted(r.filepath for r in again) == [name for name, _ in files]
    assert [r.filepath for r in again if not r.unchanged] == [changed_name]
    assert all(r.error is None for r in again)
    assert np.array_equal(service.get(changed_name).signature, service.signature(changed_path))


def test_collapse_keeps_the_best_result_per_metadata_value(service, photo_bytes, edit):
    """The blog's relation_id: several listings of one product show up once."""
    smaller = edit("chelsea", lambda im: im.resize((im.width // 2, im.height // 2)))
    service.add("listing/1", photo_bytes["chelsea"], {"product": "cat-poster"})
    service.add("listing/2", smaller, {"product": "cat-poster"})
    service.add("listing/3", smaller, {"product": "other"})
    service.add("listing/4", smaller)  # no product: stands for itself
    service.add("listing/5", smaller, {"product": ["a", 1]})
    service.add("listing/6", photo_bytes["chelsea"], {"product": ["a", 1]})
    everything = [m.filepath for m in service.search(photo_bytes["chelsea"])]
    assert sorted(everything) == [f"listing/{i}" for i in range(1, 7)]
    collapsed = [m.filepath for m in service.search(photo_bytes["chelsea"], collapse="product")]
    # the exact copies come first (distance 0), then the smaller copies
    assert collapsed[:2] == ["listing/1", "listing/6"]
    assert sorted(collapsed[2:]) == ["listing/3", "listing/4"]
    assert len(service.search(photo_bytes["chelsea"], collapse="product", limit=1)) == 1
    with pytest.raises(InvalidRequest, match="collapse"):
        service.search(photo_bytes["chelsea"], collapse="")


def test_fast_decoding_stores_what_full_decoding_finds(tmp_path):
    """LOOKALIKE_FAST_DECODE: a 2000 px JPEG is decoded at half size, and its signature
    still lands where the full-size decode's does, in add, search and compare."""
    with Image.fromarray(data.rocket()) as rocket:
        big = rocket.resize((2000, 1408))
    buffer = BytesIO()
    big.save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    store = "sqlite:///" + str(tmp_path / "store.db")
    with Lookalike(Settings(backend=store, fast_decode=True)) as fast:
        assert fast.pixels(jpeg).shape == (704, 1000, 3)
        fast.add("rocket.jpg", jpeg)
        found = fast.search(jpeg)
        assert [m.filepath for m in found] == ["rocket.jpg"] and found[0].distance == 0.0
        turned = Image.open(BytesIO(jpeg)).transpose(Image.Transpose.ROTATE_90)
        buffer = BytesIO()
        turned.save(buffer, "JPEG", quality=90)
        assert fast.search(buffer.getvalue())[0].distance <= 0.05
    with Lookalike(Settings(backend=store)) as exact:
        stored = exact.get("rocket.jpg").signature
        assert signature.distance(stored, exact.signature(jpeg)) <= 0.05
        assert exact.search(jpeg)[0].filepath == "rocket.jpg"
        assert exact.compare(jpeg, jpeg).distance == 0.0
