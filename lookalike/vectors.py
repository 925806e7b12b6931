"""The embedding space, pure NumPy: its one dimension, how values are kept, the one distance.

Shared by the model (``embeddings``), which makes embeddings, and the stores, which keep
and search them, so that neither imports the other. Stores keep embeddings as float16
(``as_stored`` rounds them so; nothing is lost), and every store, exact or approximate,
reports the distance of :func:`cosine_distances`, computed exactly (in integers): a
distance does not depend on the store that found the record, nor on what else was
scored with it.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["EMBEDDING_DIMENSION", "as_stored", "cosine_distances"]

EMBEDDING_DIMENSION: Final = 1280
"""Length of an image embedding (EfficientNet-Lite0's pooled features)."""

_EXACT_BLOCK = 1024  # rows scored exactly at once: 1024 × 1280 int64 = 10 MB
_FIXED = 2.0**24  # every float16 value is an integer multiple of 2**-24


def as_stored(embeddings: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Embedding values as every store keeps them: rounded to float16, held as float32
    (exact either way), so an embedding reads back as it was written, in any store."""
    rounded: npt.NDArray[np.float32] = (
        np.asarray(embeddings, dtype=np.float32).astype(np.float16).astype(np.float32)
    )
    return rounded


def cosine_distances(
    queries: npt.NDArray[np.float32], rows: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """For each row, 1 − its best cosine similarity to any query row, and which row that was.

    The one definition of the embedding distance. Stored values are float16 (rows are
    rounded as stores keep them), so each is an integer multiple of 2**-24; query values
    are rounded to that grid. Dot products and squared norms of those integers are exact
    in int64 (values within ±2, 1280 of them: below 2**60), and only the last steps round:
    ``cos = dot / (sqrt(‖row‖²) · sqrt(‖query‖²))``, each term converted to float64 once.
    So a row's distance depends on that row and the query alone, never on which other
    rows share its batch, their order or the BLAS. A zero row (or query) is at 1.
    """
    q = _fixed(queries)
    q_norms = np.sqrt(np.einsum("ij,ij->i", q, q).astype(np.float64))
    rows16 = np.asarray(rows).reshape(-1, EMBEDDING_DIMENSION)
    distances = np.empty(len(rows16), dtype=np.float64)
    best = np.empty(len(rows16), dtype=np.int64)
    for start in range(0, len(rows16), _EXACT_BLOCK):
        block = _fixed(as_stored(rows16[start : start + _EXACT_BLOCK]))
        norms = np.sqrt(np.einsum("ij,ij->i", block, block).astype(np.float64))
        denominators = norms[:, None] * q_norms[None, :]
        dots = (block @ q.T).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.where(denominators > 0, dots / denominators, 0.0)
        pick = np.argmax(similarity, axis=1)
        best[start : start + len(block)] = pick
        distances[start : start + len(block)] = 1.0 - similarity[np.arange(len(block)), pick]
    return np.clip(distances, 0.0, 2.0), best


def _fixed(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Values as integer multiples of 2**-24 (exact for float16 values); at most 2 each,
    which keeps 1280 products of two of them summed within int64."""
    scaled = np.asarray(values, dtype=np.float64) * _FIXED
    if not np.all(np.abs(scaled) <= 2 * _FIXED):  # also refuses NaN
        raise ValueError("embedding values must be finite and at most 2 in magnitude")
    fixed: npt.NDArray[np.int64] = np.rint(scaled).astype(np.int64)
    return fixed
