"""The Goldberg image signature, computed exactly as image-match 1.1.2 computes it.

Goldberg, Sasha, Kamal & Huang, "An image signature for any kind of image" (ICIP 2002):
the grey image is cropped to the region that holds 5–95 % of its variation, a 9×9 grid
of P×P patches is averaged, each grid point is compared with its 8 neighbours and the
differences are quantised to {-2, -1, 0, 1, 2}: 648 small integers.

Every step reproduces image-match's floating-point arithmetic (same grey formula, same
summation orders, same percentile rules), so signatures are bit-identical to the ones
stored in existing image-match and Match indices: ``reference`` is that pipeline. The
speed comes from computing only what decides the result (``certified``): an 8-bit
image's crop is decided by the exact integer luma of the few lines where its limits
sit, unless rounding could tip one (then the reference path runs: whole float64 grey,
built in cache-sized stripes), and a single signature computes the float64 grey of the
81 patches' pixels only. ``reduced`` estimates the full-size signature from a JPEG
decoded at reduced scale.

Pure NumPy; no image decoding here (see ``images``).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from ..orientations import LAYOUTS, ORIENTATIONS, turn
from ..records import Footprint
from .certified import certified_signatures
from .reduced import estimated_signatures
from .reference import (
    GRID,
    LENGTH,
    FloatArray,
    Signature,
    grey,
    reference_orientations,
    reference_signature,
)

__all__ = [
    "GRID",
    "LENGTH",
    "ORIENTATIONS",
    "WORD_COUNT",
    "WORD_LENGTH",
    "distance",
    "distances",
    "grey",
    "orientations",
    "signature",
    "turn",
    "words",
]

WORD_LENGTH: Final = 16
WORD_COUNT: Final = 63


def signature(
    image: npt.NDArray[np.uint8] | FloatArray, footprint: Footprint | None = None
) -> Signature:
    """The 648-value signature of an 8-bit RGB image (H×W×3) or a float grey image (H×W).

    With a ``footprint`` (an RGB image decoded at reduced scale, see
    ``images.decode_reduced``), the signature the full-size picture would have, estimated:
    its crop, grid and patches laid on the reduced pixels by their footprint.
    """
    if footprint is not None:
        estimated: Signature = estimated_signatures(image, footprint, LAYOUTS[:1])[0]
        return estimated
    certain = certified_signatures(image, LAYOUTS[:1])
    return certain[0] if certain is not None else reference_signature(image)


def orientations(
    image: npt.NDArray[np.uint8] | FloatArray, footprint: Footprint | None = None
) -> Signature:
    """Signatures of the image under the 8 symmetries of the square, shape (8, 648).

    Row ``i`` is the signature of ``ORIENTATIONS[i]`` applied to the image, computed as
    if that transformed image had been stored, so a stored picture that was rotated or
    mirrored is found at distance 0 by one of the rows. ``footprint`` as for ``signature``.
    """
    if footprint is not None:
        return estimated_signatures(image, footprint, LAYOUTS)
    certain = certified_signatures(image, LAYOUTS)
    return certain if certain is not None else reference_orientations(image)


def distance(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Normalised distance ||a - b|| / (||a|| + ||b||): 0 identical, < 0.40 very likely a copy.

    Two featureless (all-zero) signatures are at distance 1, as image-match treats them.
    Opposite signatures are at 1 too: the quotient's rounding can exceed 1 by an ulp,
    and scores (100 × (1 − distance)) must not go below 0.
    """
    x = np.asarray(a, dtype=np.int64)
    y = np.asarray(b, dtype=np.int64)
    denominator = np.linalg.norm(x) + np.linalg.norm(y)
    if denominator == 0:
        return 1.0
    return min(float(np.linalg.norm(y - x) / denominator), 1.0)


def distances(stored: npt.NDArray[np.int8], query: npt.ArrayLike) -> FloatArray:
    """Normalised distance from ``query`` to each row of ``stored`` (float64, exact; at
    most 1, as ``distance``)."""
    q = np.asarray(query, dtype=np.int64)
    s = stored.astype(np.int64)
    diff = np.sqrt(np.einsum("ij,ij->i", s - q, s - q).astype(np.float64))
    denominator = np.sqrt(np.einsum("ij,ij->i", s, s).astype(np.float64)) + np.sqrt(float(q @ q))
    with np.errstate(invalid="ignore", divide="ignore"):
        result: FloatArray = np.minimum(diff / denominator, 1.0)
    result[denominator == 0] = 1.0
    return result


def words(sig: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """image-match's 63 ``simple_word_*`` integers for Elasticsearch term search.

    Words of 16 values start at ``linspace(0, 648, 63, endpoint=False)``; the last ones
    run past the end and are padded with zeros. Values are squashed to {-1, 0, 1} and
    read as base-3 numbers, least significant digit first.
    """
    s = np.sign(np.asarray(sig, dtype=np.int64))
    padded = np.concatenate([s, np.zeros(WORD_LENGTH, dtype=np.int64)])
    starts = np.linspace(0, s.shape[0], WORD_COUNT, endpoint=False).astype(np.int64)
    windows = padded[starts[:, None] + np.arange(WORD_LENGTH)]
    result: npt.NDArray[np.int64] = (windows + 1) @ (3 ** np.arange(WORD_LENGTH, dtype=np.int64))
    return result
