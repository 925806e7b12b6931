"""The self-join's parts: the turns of a signature, the probed path of large collections."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from lookalike import signature
from lookalike.backends import join
from lookalike.backends.join import INVERSE, TURNS, embedding_pairs, signature_pairs
from lookalike.orientations import ORIENTATIONS, turn

from .support import near, perturb, random_signatures, unit_vectors


@pytest.mark.parametrize("name", ["astronaut", "camera", "coffee"])
def test_a_turned_signature_is_the_turned_pictures(name: str) -> None:
    """For pictures whose crop is symmetric, turning the stored signature gives exactly
    the signature of the turned picture, for each of the 8 orientations."""
    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    stored = signature.signature(pixels)
    for o in range(len(ORIENTATIONS)):
        np.testing.assert_array_equal(stored[TURNS[o]], signature.signature(turn(pixels, o)))


def test_inverse_orientations_undo_each_other(rng: np.random.Generator) -> None:
    sig = random_signatures(rng, 1)[0]
    for o, back in enumerate(INVERSE):
        np.testing.assert_array_equal(sig[TURNS[o]][TURNS[back]], sig)
    assert [ORIENTATIONS[INVERSE[o]] for o in (1, 3)] == ["rot270", "rot90"]


def test_a_turned_signature_of_another_crop_stays_close() -> None:
    """A picture that is not square: the turned signature is not the turned picture's
    exactly, but well within the default cutoff of it."""
    pixels = data.chelsea()
    stored = signature.signature(pixels)
    for o in range(len(ORIENTATIONS)):
        assert signature.distance(stored[TURNS[o]], signature.signature(turn(pixels, o))) < 0.2


def planted(rng: np.random.Generator, n: int) -> tuple[np.ndarray, set[tuple[int, int]]]:
    sigs = random_signatures(rng, n)
    pairs = set()
    for i in range(0, n - 2, 7):
        sigs[i + 1] = perturb(rng, sigs[i], 0.08)
        sigs[i + 2] = sigs[i][TURNS[1 + i % 7]]
        pairs |= {(i, i + 1), (i, i + 2), (i + 1, i + 2)}
    return sigs, pairs


def test_the_probed_path_finds_planted_pairs_at_their_exact_distances(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above EXHAUSTIVE_ROWS the join probes k-means lists: everything it reports is an
    exhaustive pair at the same distance and orientation, and, on random signatures
    (the hardest case for lists: nothing clusters), it keeps most planted pairs."""
    sigs, pairs = planted(rng, 3000)
    exhaustive = signature_pairs(sigs, 0.3)
    monkeypatch.setattr(join, "EXHAUSTIVE_ROWS", 500)
    progress: list[tuple[int, int]] = []
    probed = signature_pairs(sigs, 0.3, progress=lambda done, n: progress.append((done, n)))
    every, some = _as_dict(exhaustive), _as_dict(probed)
    assert pairs <= set(every)
    assert all(every[pair] == value for pair, value in some.items())
    assert len(pairs & set(some)) >= 0.9 * len(pairs)
    steps = [done for done, _ in progress]
    assert steps == sorted(set(steps)) and {n for _, n in progress} == {steps[-1]}
    assert steps[-1] == 8 * join.lists_for(3000) and len(progress) >= 8  # every list, turned
    wider = _as_dict(signature_pairs(sigs, 0.3, nprobe=200))  # every list: all of them
    assert wider == every
    # the probes and the exact measures in several chunks: the same pairs
    monkeypatch.setattr(join, "_PROBE_ROWS", 1024)
    monkeypatch.setattr(join, "_EXACT_CHUNK", 5)
    assert _as_dict(signature_pairs(sigs, 0.3, nprobe=200)) == every


def test_embedding_pairs_probed_and_exhaustive_agree(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = unit_vectors(rng, 1200)
    for i in range(0, 1200, 6):
        vectors[i + 1] = near(rng, vectors[i], 0.97)
    exhaustive = embedding_pairs(vectors, 0.1)
    monkeypatch.setattr(join, "EXHAUSTIVE_ROWS", 300)
    probed = embedding_pairs(vectors, 0.1)
    monkeypatch.setattr(join, "_PROBE_ROWS", 500)
    assert _as_dict(embedding_pairs(vectors, 0.1)) == _as_dict(probed)
    planted_pairs = {(i, i + 1) for i in range(0, 1200, 6)}
    assert planted_pairs <= set(_as_dict(exhaustive))
    assert planted_pairs <= set(_as_dict(probed))
    assert all(_as_dict(exhaustive)[pair] == value for pair, value in _as_dict(probed).items())


def test_a_cutoff_beyond_one_is_refused(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="cutoff"):
        signature_pairs(random_signatures(rng, 3), 1.5)


def _as_dict(pairs: join.Pairs) -> dict[tuple[int, int], tuple[float, int]]:
    columns = (pairs.first, pairs.second, pairs.distances, pairs.orientations)
    return {(int(a), int(b)): (float(d), int(o)) for a, b, d, o in zip(*columns, strict=True)}
