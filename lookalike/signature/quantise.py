"""The last steps of the signature, shared by every path: each grid point's differences
with its 8 neighbours, quantised to {-2, -1, 0, 1, 2} exactly as image-match does it."""

from __future__ import annotations

from functools import lru_cache
from typing import Final, cast

import numpy as np
import numpy.typing as npt

__all__ = ["neighbour_differences", "percentile_position", "quantise_rows"]

Signature = npt.NDArray[np.int8]
FloatArray = npt.NDArray[np.float64]

_IDENTICAL_TOLERANCE: Final = 2 / 255.0
_LEVELS: Final = 2
_LEVEL_FRACTIONS: Final = (0, 50, 100)  # percentiles splitting a sign into _LEVELS
# Neighbour offsets (row, column) in image-match's order: upper-left, up, upper-right,
# left, right, lower-left, down, lower-right.
_NEIGHBOURS: Final = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_differences(means: FloatArray) -> FloatArray:
    """Grey level of each grid point minus that of each of its 8 neighbours (0 off the grid)."""
    rows, columns = means.shape
    out = np.zeros((rows, columns, len(_NEIGHBOURS)), dtype=np.float64)
    for k, (dy, dx) in enumerate(_NEIGHBOURS):
        ys = slice(max(0, -dy), rows - max(0, dy))
        xs = slice(max(0, -dx), columns - max(0, dx))
        ny = slice(ys.start + dy, ys.stop + dy)
        nx = slice(xs.start + dx, xs.stop + dx)
        out[ys, xs, k] = means[ys, xs] - means[ny, nx]
    return out


def quantise_rows(d: FloatArray) -> Signature:
    """For each row of ``d`` (signatures × 648): zero the near-equal differences, then
    split each sign into 2 equally populated levels.

    Levels are assigned one after the other, a later level overwriting an earlier one where
    their closed intervals overlap: image-match does so, and identity depends on it.
    """
    near = np.abs(d) < _IDENTICAL_TOLERANCE
    d[near] = 0.0
    featureless = cast(npt.NDArray[np.bool_], near.all(axis=1))
    bounds = np.zeros((2, d.shape[0], _LEVELS + 1))  # positive, then negative (descending)
    for i, row in enumerate(d):
        if not featureless[i]:
            bounds[0, i] = _level_bounds(row[row > 0.0])
            bounds[1, i] = _level_bounds(row[row < 0.0])[::-1]
    for level in range(_LEVELS):
        low, high = bounds[0, :, level, None], bounds[0, :, level + 1, None]
        d[(d >= low) & (d <= high)] = level + 1
    for level in range(_LEVELS):
        high, low = bounds[1, :, level, None], bounds[1, :, level + 1, None]
        d[(d <= high) & (d >= low)] = -(level + 1)
    d[featureless] = 0.0
    return d.astype(np.int8)


def _level_bounds(values: FloatArray) -> tuple[float, ...]:
    """``np.percentile(values, linspace(0, 100, _LEVELS + 1))``, bit for bit, faster.

    The 0th and 100th percentiles are the extremes; the others are NumPy's lerp of two
    neighbouring order statistics, computed with NumPy's own position and formula.
    """
    inner = [percentile_position(values.size, f) for f in _LEVEL_FRACTIONS[1:-1]]
    if any(position is None for position in inner):
        return tuple(np.percentile(values, _LEVEL_FRACTIONS).tolist())
    ks = [k for k, _ in cast(list[tuple[int, float]], inner)]
    ordered = np.partition(values, sorted({*ks, *(k + 1 for k in ks)}))
    bounds = [float(values.min())]
    for k, t in cast(list[tuple[int, float]], inner):
        a, b = float(ordered[k]), float(ordered[k + 1])
        gap = b - a
        bounds.append(b - gap * (1 - t) if t >= 0.5 else a + gap * t)
    bounds.append(float(values.max()))
    return tuple(bounds)


@lru_cache(maxsize=4096)  # sizes seen in practice are few; requests choose them
def percentile_position(size: int, percentile: int) -> tuple[int, float] | None:
    """NumPy's (k, t) for a percentile of ``size`` sorted values: it is the lerp of entries
    k and k + 1 with weight t, read from NumPy itself on step arrays (lerp(0, 1, t) is t
    exactly; lerp(1, 1, t) is 1). None at the last entry, or if no k is confirmed."""
    positions = np.arange(size)
    estimate = int(percentile / 100 * (size - 1))
    for k in (estimate, estimate - 1, estimate + 1):
        if not 0 <= k < size - 1:
            continue
        t = float(np.percentile((positions > k).astype(np.float64), percentile))
        if 0.0 <= t < 1.0 and np.percentile((positions >= k).astype(np.float64), percentile) == 1:
            return k, t
    return None
