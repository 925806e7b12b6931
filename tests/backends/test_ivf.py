"""The inverted-file index: exact when every list is probed, high recall on realistic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike import signature
from lookalike.backends.scan import SignatureMatrix
from lookalike.backends.sqlite import ivf
from lookalike.backends.sqlite.ivf import IvfIndex

from .support import perturb, random_signatures, smooth_signatures


def brute_force(stored, queries, cutoff):
    matrix = SignatureMatrix()
    matrix.append(stored)
    hits = matrix.search(queries, cutoff)
    return dict(zip(hits.slots.tolist(), hits.distances.tolist(), strict=True))


def test_probing_every_list_is_exactly_brute_force(rng):
    stored = random_signatures(rng, 3000)
    keys = np.arange(3000) * 7
    index = IvfIndex.build(stored, keys, nlist=40)
    assert sorted(index.keys.tolist()) == keys.tolist()
    for _ in range(5):
        queries = np.stack([perturb(rng, stored[rng.integers(3000)], 0.3) for _ in range(8)])
        hits = index.search(queries, 0.7, nprobe=index.nlist)
        got = {int(index.keys[p]) // 7: d for p, d in zip(hits.slots, hits.distances, strict=True)}
        assert got == brute_force(stored, queries, 0.7)  # same rows, distances to the last bit


def test_near_duplicates_are_found_with_few_probes(rng):
    stored = smooth_signatures(rng, 1500)
    index = IvfIndex.build(stored, np.arange(1500), nlist=60, seed=1)
    found = 0
    trials = 200
    for i in rng.choice(1500, size=trials, replace=False):
        query = perturb(rng, stored[i], 0.1)[None, :]
        hits = index.search(query, signature.distance(query[0], stored[i]) + 1e-9, nprobe=6)
        found += int(i) in {int(index.keys[p]) for p in hits.slots}
    assert found / trials >= 0.98


def test_candidates_are_the_probed_lists_in_order(rng):
    stored = random_signatures(rng, 500)
    index = IvfIndex.build(stored, np.arange(500), nlist=25)
    queries = random_signatures(rng, 3)
    positions = index.candidates(queries, nprobe=4)
    unit = queries / np.maximum(np.linalg.norm(queries.astype(float), axis=1, keepdims=True), 1)
    probed = set()
    for row in unit @ index.centroids.T:
        probed |= set(np.argsort(-row)[:4].tolist())
    expected = [p for i in sorted(probed) for p in range(index.offsets[i], index.offsets[i + 1])]
    assert positions.tolist() == expected


def test_allowed_mask_and_cutoff(rng):
    stored = random_signatures(rng, 400)
    index = IvfIndex.build(stored, np.arange(400), nlist=10)
    allowed = np.zeros(400, dtype=bool)
    allowed[::2] = True
    hits = index.search(stored[:8], 1.0, nprobe=10, allowed=allowed)
    assert hits.slots.size and allowed[hits.slots].all()
    assert (hits.distances < 1.0).all()


def test_save_and_load_memory_mapped(tmp_path: Path, rng):
    stored = random_signatures(rng, 800)
    index = IvfIndex.build(stored, np.arange(800) + 10, nlist=16)
    index.save(tmp_path / "ivf", version=42)
    loaded, header = IvfIndex.load(tmp_path / "ivf")
    assert header["version"] == 42 and header["count"] == 800
    assert isinstance(loaded.rows, np.memmap)
    query = stored[:8]
    a, b = index.search(query, 0.8, 4), loaded.search(query, 0.8, 4)
    assert a.slots.tolist() == b.slots.tolist()
    assert a.distances.tolist() == b.distances.tolist()


def test_a_flipped_byte_is_caught_by_the_checksum(tmp_path: Path, rng):
    index = IvfIndex.build(random_signatures(rng, 100), np.arange(100), nlist=4)
    folder = tmp_path / "ivf"
    index.save(folder)
    rows = folder / "rows.npy"
    data = bytearray(rows.read_bytes())
    data[-1] ^= 1  # a signature value changes; the shapes stay right
    rows.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"rows\.npy does not match its checksum"):
        IvfIndex.load(folder)


def test_inconsistent_or_missing_files_are_refused(tmp_path: Path, rng):
    index = IvfIndex.build(random_signatures(rng, 100), np.arange(100), nlist=4)
    folder = tmp_path / "ivf"
    index.save(folder)
    np.save(folder / "keys.npy", np.arange(99))  # one key short
    header = json.loads((folder / "header.json").read_text())
    header["crc32"]["keys"] = ivf.crc32(folder / "keys.npy")  # a checksum that agrees
    (folder / "header.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="inconsistent"):
        IvfIndex.load(folder)
    (folder / "norms.npy").unlink()
    with pytest.raises(ValueError, match="no usable index"):
        IvfIndex.load(folder)
    with pytest.raises(ValueError, match="no usable index"):
        IvfIndex.load(tmp_path / "missing")


def test_position_of_finds_each_key_and_misses_others(rng):
    keys = rng.choice(10_000, size=300, replace=False)
    index = IvfIndex.build(random_signatures(rng, 300), keys, nlist=8)
    positions = index.position_of(keys)
    assert (index.keys[positions] == keys).all()
    absent = np.setdiff1d(np.arange(10_000), keys)[:50]
    assert (index.position_of(absent) == -1).all()


@pytest.mark.parametrize("nlist", [49, 58, 64, 67])
def test_two_level_training_keeps_probing_exact_and_recall_high(
    rng, monkeypatch, tmp_path: Path, nlist: int
):
    """Past FLAT_KMEANS_LISTS lists, centroids come from two levels of k-means and rows
    are assigned through coarse groups; lowered here so a small set takes that path. The
    cells' shares are rounded, so the lists may not number exactly ``nlist``: the saved
    index must still be consistent."""
    monkeypatch.setattr(ivf, "FLAT_KMEANS_LISTS", 16)
    stored = smooth_signatures(np.random.default_rng(3), 1500)  # 49, 58, 64: fewer lists
    index = IvfIndex.build(stored, np.arange(1500), nlist=nlist, seed=1)
    assert abs(index.nlist - nlist) <= 8 and int(index.offsets[-1]) == 1500
    assert len(index.offsets) == index.nlist + 1
    index.save(tmp_path / "two-level")
    assert IvfIndex.load(tmp_path / "two-level")[0].nlist == index.nlist
    queries = stored[:8]
    hits = index.search(queries, 0.6, nprobe=index.nlist)
    got = dict(zip(index.keys[hits.slots].tolist(), hits.distances.tolist(), strict=True))
    assert got == brute_force(stored, queries, 0.6)
    found = 0
    for i in rng.choice(1500, size=200, replace=False):
        query = perturb(rng, stored[i], 0.1)[None, :]
        hits = index.search(query, signature.distance(query[0], stored[i]) + 1e-9, nprobe=8)
        found += int(i) in {int(index.keys[p]) for p in hits.slots}
    assert found / 200 >= 0.95


def test_candidates_gathered_in_several_blocks_give_the_same_answer(rng, monkeypatch):
    stored = random_signatures(rng, 2000)
    index = IvfIndex.build(stored, np.arange(2000), nlist=20)
    queries = np.stack([perturb(rng, stored[i], 0.2) for i in range(8)])
    whole = index.search(queries, 0.7, nprobe=20)
    monkeypatch.setattr(ivf, "GATHER_ROWS", 64)  # 2,000 candidates in 32 blocks
    blocks = index.search(queries, 0.7, nprobe=20)
    assert blocks.slots.tolist() == whole.slots.tolist()
    assert blocks.distances.tolist() == whole.distances.tolist()
    got = dict(zip(index.keys[blocks.slots].tolist(), blocks.distances.tolist(), strict=True))
    assert got == brute_force(stored, queries, 0.7)
