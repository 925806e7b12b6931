"""Spherical k-means over rows scaled to unit length: how the SQLite store's IVF index
groups signatures into lists, and how the self-join (``join``) groups any rows. Flat
Lloyd iterations, or two levels for many lists; nearest centroids found a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FLAT_KMEANS_LISTS", "cluster", "nearest", "train", "unit_signatures"]

FLAT_KMEANS_LISTS = 2048  # above this, centroids are trained in two levels


def cluster(
    rows: npt.NDArray[Any],
    nlist: int,
    *,
    unit: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]] | None = None,
    iterations: int = 10,
    sample: int = 100_000,
    seed: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Spherical k-means of any rows, as the index clusters signatures: the centroids and
    each row's nearest. ``unit`` scales a block of rows to unit length (signatures' by
    default); it is applied a chunk at a time, so big collections are never copied whole."""
    to_unit = unit or unit_signatures
    n = len(rows)
    lists = max(1, min(nlist, n))
    rng = np.random.default_rng(seed)
    size = min(n, max(sample, lists))  # (a few dozen rows a list place them well)
    training = to_unit(rows[np.sort(rng.choice(n, size=size, replace=False))])
    centroids = train(training, lists, iterations, rng)
    groups = _Groups(centroids) if len(centroids) > FLAT_KMEANS_LISTS else None
    assignment = np.empty(n, dtype=np.int64)
    for start in range(0, n, 4096):  # (chunks of a few MB: a join's memory is counted)
        x = to_unit(rows[start : start + 4096])
        assignment[start : start + 4096] = (
            _nearest_unit(x, centroids) if groups is None else groups.nearest(x)
        )
    return centroids, assignment


def unit_signatures(signatures: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
    x = signatures.astype(np.float32)
    lengths = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(lengths, 1.0, out=lengths)
    unit: npt.NDArray[np.float32] = x / lengths
    return unit


def train(
    x: npt.NDArray[np.float32], k: int, iterations: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """``k`` centroids for the sample ``x``: flat k-means, or for many lists two levels —
    √k coarse cells, then each cell split in proportion to its share of the sample — so
    that training and assigning cost ~2·√k dot products per row instead of k."""
    if k <= FLAT_KMEANS_LISTS:
        return _kmeans(x, k, iterations, rng)
    coarse = _kmeans(x, int(np.sqrt(k)), iterations, rng)
    cell = _nearest_unit(x, coarse)
    sizes = np.bincount(cell, minlength=len(coarse))
    shares = np.maximum(1, np.round(sizes / len(x) * k)).astype(int)
    shares = np.minimum(shares, np.maximum(sizes, 1))
    parts = [
        _kmeans(x[cell == c], int(shares[c]), iterations, rng)
        for c in range(len(coarse))
        if sizes[c]
    ]
    return np.concatenate(parts)


def _kmeans(
    x: npt.NDArray[np.float32], k: int, iterations: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Spherical k-means (Lloyd); empty clusters are re-seeded from random points."""
    centroids = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iterations):
        assignment = np.argmax(x @ centroids.T, axis=1)
        counts = np.bincount(assignment, minlength=k)
        empty = counts == 0
        sums = np.zeros_like(centroids)
        # Per-cluster sums over the rows sorted by cluster: far faster than np.add.at.
        sums[~empty] = np.add.reduceat(
            x[np.argsort(assignment, kind="stable")], (np.cumsum(counts) - counts)[~empty], axis=0
        )
        sums[empty] = x[rng.choice(len(x), size=int(empty.sum()), replace=False)]
        lengths = np.linalg.norm(sums, axis=1, keepdims=True)
        np.maximum(lengths, 1e-12, out=lengths)
        centroids = (sums / lengths).astype(np.float32)
    return centroids


def nearest(
    signatures: npt.NDArray[np.int8], centroids: npt.NDArray[np.float32], chunk: int = 16_384
) -> npt.NDArray[np.int64]:
    """The nearest centroid of every signature, in chunks; with many centroids, the
    nearest among those of the few coarse groups nearest the row."""
    groups = _Groups(centroids) if len(centroids) > FLAT_KMEANS_LISTS else None
    out = np.empty(len(signatures), dtype=np.int64)
    for start in range(0, len(signatures), chunk):
        x = unit_signatures(signatures[start : start + chunk])
        out[start : start + chunk] = (
            _nearest_unit(x, centroids) if groups is None else groups.nearest(x)
        )
    return out


def _nearest_unit(
    x: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32]
) -> npt.NDArray[np.int64]:
    nearest: npt.NDArray[np.int64] = np.argmax(x @ centroids.T, axis=1)
    return nearest


class _Groups:
    """Centroids grouped under coarse means, to find a row's nearest without trying all."""

    def __init__(self, centroids: npt.NDArray[np.float32]) -> None:
        self.centroids = centroids
        self.means = _kmeans(centroids, int(np.sqrt(len(centroids))), 5, np.random.default_rng(0))
        group = _nearest_unit(centroids, self.means)
        self.members = [np.flatnonzero(group == g) for g in range(len(self.means))]

    def nearest(self, x: npt.NDArray[np.float32], tries: int = 3) -> npt.NDArray[np.int64]:
        near_groups = np.argsort(-(x @ self.means.T), axis=1)[:, :tries]
        best = np.full(len(x), -np.inf, dtype=np.float32)
        out = np.zeros(len(x), dtype=np.int64)
        for g, members in enumerate(self.members):
            rows = np.flatnonzero((near_groups == g).any(axis=1))
            if not len(rows) or not len(members):
                continue
            scores = x[rows] @ self.centroids[members].T
            pick = scores.argmax(axis=1)
            value = scores[np.arange(len(rows)), pick]
            better = value > best[rows]
            best[rows[better]] = value[better]
            out[rows[better]] = members[pick[better]]
        return out
