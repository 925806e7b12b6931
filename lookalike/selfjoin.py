"""A store's self-join as the service asks for it: the pairs of stored images a search
would match, by method, with search's cutoffs and semantics (``search.SearchOptions``),
and what grouping them needs (``duplicates``): each image's sizes and time, a measure of
two images that are not paired directly.

``signature`` pairs are the store's signature join (turned copies too, with
``orientations``); ``embedding`` pairs its embedding join (identity orientation: a stored
embedding is of the picture as stored); ``hybrid`` takes both and keeps each pair at the
better of its distances, the embedding's scaled as a hybrid search scales it, and drops a
pair only the signature found, unsure, that the embeddings call unrelated (``vetoed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .backends import Backend
from .backends.base import Vectors, check_embedding_queries
from .backends.join import TURNS
from .duplicates import Image, Pair
from .orientations import ORIENTATIONS
from .search import SIGNATURE_SURE, SearchOptions
from .signature import distances
from .vectors import cosine_distances

__all__ = ["Joined", "join"]

Progress = Callable[[int, int], object]


@dataclass(frozen=True)
class Joined:
    """The pairs, the images they name, and how far apart any two of those images are."""

    pairs: list[Pair]
    images: dict[str, Image]
    signatures: dict[str, npt.NDArray[np.int8]]
    embeddings: dict[str, npt.NDArray[np.float32]]
    options: SearchOptions
    orientations: bool

    def measure(self, first: str, second: str) -> tuple[float, str, str]:
        """(distance, orientation, method) of two images by the options' method."""
        found = []
        if self.options.method != "embedding" and first in self.signatures:
            turns = TURNS if self.orientations else TURNS[:1]
            rows = np.stack([self.signatures[first][turn] for turn in turns])
            table = distances(rows, self.signatures[second])
            best = int(np.argmin(table))
            found.append((float(table[best]), ORIENTATIONS[best], "signature"))
        both = first in self.embeddings and second in self.embeddings
        if self.options.method != "signature" and both:
            d = _cosine(self.embeddings[first], self.embeddings[second])
            if self.options.method == "hybrid":
                d = min(d * self.options.hybrid_scale, 1.0)
            found.append((d, "identity", "embedding"))
        return min(found, default=(1.0, "identity", self.options.method))


def join(
    backend: Backend,
    options: SearchOptions,
    *,
    orientations: bool = True,
    nprobe: int = 16,
    progress: Progress | None = None,
) -> Joined:
    """The pairs of ``backend``'s images closer than the options' cutoffs."""
    method, where = options.method, options.where
    pairs: dict[tuple[str, str], Pair] = {}
    signatures: dict[str, npt.NDArray[np.int8]] = {}
    embeddings: dict[str, npt.NDArray[np.float32]] = {}
    created: dict[str, float] = {}
    if method != "embedding":
        vectors, found = backend.pairs(
            "signature",
            options.signature_cutoff,
            where=where,
            orientations=orientations,
            nprobe=nprobe,
            progress=progress,
        )
        _remember(vectors, signatures, created)
        for a, b, d, o in zip(
            found.first, found.second, found.distances, found.orientations, strict=True
        ):
            first, second = vectors.filepaths[a], vectors.filepaths[b]
            pairs[(first, second)] = Pair(first, second, float(d), ORIENTATIONS[o])
    if method != "signature":
        vectors, found = backend.pairs(
            "embedding", options.embedding_cutoff, where=where, nprobe=nprobe
        )
        _remember(vectors, embeddings, created)
        for a, b, d in zip(found.first, found.second, found.distances, strict=True):
            first, second = vectors.filepaths[a], vectors.filepaths[b]
            distance = min(float(d) * options.hybrid_scale, 1.0) if method == "hybrid" else float(d)
            pair = Pair(first, second, distance, "identity", "embedding")
            kept = pairs.get((first, second))
            if kept is None or (pair.distance, pair.method) < (kept.distance, kept.method):
                pairs[(first, second)] = pair
    if method == "hybrid":
        pairs = {key: p for key, p in pairs.items() if not _vetoed(p, embeddings, options)}
    named = {path for pair in pairs.values() for path in (pair.first, pair.second)}
    sizes = backend.previews(sorted(named), thumbnails=False)
    images = {
        path: Image(
            path,
            created.get(path),
            *((s.width, s.height, s.file_bytes) if (s := sizes.get(path)) else (None,) * 3),
        )
        for path in named
    }
    ordered = sorted(pairs.values(), key=lambda p: (p.first, p.second))
    return Joined(ordered, images, signatures, embeddings, options, orientations)


def _remember(vectors: Vectors, rows: dict[str, Any], created: dict[str, float]) -> None:
    for i, path in enumerate(vectors.filepaths):
        rows[path] = vectors.rows[i]
        created[path] = float(vectors.created[i])


def _vetoed(
    pair: Pair, embeddings: dict[str, npt.NDArray[np.float32]], options: SearchOptions
) -> bool:
    """As ``search.vetoed``: a pair only the signature found, at a distance it is unsure
    of, whose embeddings (both stored) call the pictures unrelated."""
    if pair.method != "signature" or pair.distance < SIGNATURE_SURE:
        return False
    if pair.first not in embeddings or pair.second not in embeddings:
        return False
    return _cosine(embeddings[pair.first], embeddings[pair.second]) >= options.veto_distance


def _cosine(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]) -> float:
    """The embedding distance a search by the first image's embedding reports."""
    return float(cosine_distances(check_embedding_queries(first), second[None])[0][0])
