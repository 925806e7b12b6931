"""Value objects that cross the service/backend seam."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Match", "Metadata", "Record", "score_of"]

Metadata = dict[str, Any]


def score_of(distance: float) -> float:
    """Match's score: 100 × (1 − normalised distance); 100 is identical."""
    return 100.0 * (1.0 - distance)


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One stored image: its key, its signature (int8[648]) and its metadata."""

    filepath: str
    signature: npt.NDArray[np.int8]
    metadata: Metadata | None = None
    created: float | None = None
    updated: float | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """One search result. ``orientation`` names the transform of the query image under
    which it matched (one of ``signature.ORIENTATIONS``, "identity" if not turned)."""

    filepath: str
    distance: float
    orientation: str = "identity"
    metadata: Metadata | None = field(default=None, compare=False)

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
        }
