"""Value objects that cross layers: records and matches between the service and the
stores, and the footprint of a reduced decode between ``images`` and ``signature``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMBEDDING_DIMENSION",
    "METHODS",
    "Footprint",
    "Match",
    "Metadata",
    "Record",
    "as_stored",
    "score_of",
]

Metadata = dict[str, Any]

EMBEDDING_DIMENSION = 1280
"""Length of an image embedding (EfficientNet-Lite0's pooled features)."""

METHODS = ("signature", "embedding", "hybrid")
"""How a search compares images: the Goldberg signature (copies), the CNN embedding
(look-alikes and crops), or both fused."""


def as_stored(embeddings: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Embedding values as every store keeps them: rounded to float16, held as float32
    (exact either way), so an embedding reads back as it was written, in any store."""
    rounded: npt.NDArray[np.float32] = (
        np.asarray(embeddings, dtype=np.float32).astype(np.float16).astype(np.float32)
    )
    return rounded


def score_of(distance: float) -> float:
    """Match's score: 100 × (1 − distance); 100 is identical. For signatures the distance
    is image-match's normalised distance; for embeddings it is 1 − cosine similarity."""
    return 100.0 * (1.0 - distance)


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One stored image: its key, its signature (int8[648]), its metadata and, when the
    collection has embeddings, its unit-length embedding (float32[1280], values that
    float16 holds exactly, so every backend stores it without loss)."""

    filepath: str
    signature: npt.NDArray[np.int8]
    metadata: Metadata | None = None
    created: float | None = None
    updated: float | None = None
    embedding: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """One search result. ``orientation`` names the transform of the query image under
    which it matched (one of ``signature.ORIENTATIONS``, "identity" if not turned);
    ``method`` says what found it, and so what ``distance`` means (see ``score_of``)."""

    filepath: str
    distance: float
    orientation: str = "identity"
    metadata: Metadata | None = field(default=None, compare=False)
    method: str = "signature"

    @property
    def score(self) -> float:
        return score_of(self.distance)

    def to_json(self) -> dict[str, Any]:
        """The result object of the HTTP API and of ``lookalike search --json``."""
        return {
            "score": self.score,
            "filepath": self.filepath,
            "metadata": self.metadata,
            "distance": self.distance,
            "orientation": self.orientation,
            "method": self.method,
        }


@dataclass(frozen=True, slots=True)
class Footprint:
    """Where the pixels of a reduced decode lie on the full-size picture: along each axis
    (rows, columns), pixel i covers the full-size pixels from ``scale × i − offset`` up
    to ``scale × (i + 1) − offset``, clipped to ``shape`` (the full size). The offset is
    0 where the reduced grid starts at the picture's first pixel; a flip anchors it at
    the other end."""

    scale: int
    shape: tuple[int, int]
    offsets: tuple[int, int] = (0, 0)

    def turned(self, transposed: bool, flip_rows: bool, flip_columns: bool) -> Footprint:
        """The footprint after transposing, then flipping rows and/or columns."""
        shape, offsets = self.shape, self.offsets
        if transposed:
            shape, offsets = (shape[1], shape[0]), (offsets[1], offsets[0])
        flips = (flip_rows, flip_columns)
        return Footprint(
            self.scale,
            shape,
            (
                offsets[0] if not flips[0] else self._far_offset(shape[0], offsets[0]),
                offsets[1] if not flips[1] else self._far_offset(shape[1], offsets[1]),
            ),
        )

    @property
    def reduced_shape(self) -> tuple[int, int]:
        """(height, width) of the reduced pixels."""
        return self.reduced_size(self.shape[0]), self.reduced_size(self.shape[1])

    def reduced_size(self, full: int) -> int:
        """Reduced pixels along an axis of ``full`` pixels (libjpeg rounds up)."""
        return -(-full // self.scale)

    def _far_offset(self, full: int, offset: int) -> int:
        return self.scale * self.reduced_size(full) - full - offset
