"""The Goldberg image signature, computed exactly as image-match 1.1.2 computes it.

Goldberg, Sasha, Kamal & Huang, "An image signature for any kind of image" (ICIP 2002):
the grey image is cropped to the region that holds 5–95 % of its variation, a 9×9 grid
of P×P patches is averaged, each grid point is compared with its 8 neighbours and the
differences are quantised to {-2, -1, 0, 1, 2}: 648 small integers.

Every step below reproduces image-match's floating-point arithmetic (same grey formula,
same summation orders, same percentile rules), so signatures are bit-identical to the
ones stored in existing image-match and Match indices. The speed comes from computing
only what decides the result: an 8-bit image's crop is decided by the exact integer
luma of the few lines where its limits sit, unless rounding could tip one (then the
reference path runs: whole float64 grey, built in cache-sized stripes), and a single
signature computes the float64 grey of the 81 patches' pixels only.

Pure NumPy; no image decoding here (see ``images``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from .orientations import LAYOUTS, ORIENTATIONS, turn
from .records import Footprint

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

Signature = npt.NDArray[np.int8]
FloatArray = npt.NDArray[np.float64]

GRID: Final = 9
LENGTH: Final = GRID * GRID * 8
WORD_LENGTH: Final = 16
WORD_COUNT: Final = 63

_LOWER_PERCENTILE: Final = 5
_UPPER_PERCENTILE: Final = 95
_IDENTICAL_TOLERANCE: Final = 2 / 255.0
_LEVELS: Final = 2
_LEVEL_FRACTIONS: Final = (0, 50, 100)  # percentiles splitting a sign into _LEVELS
# scikit-image's rgb2gray (ITU-R BT.709), which image-match uses.
_LUMA: Final = np.array([0.2125, 0.7154, 0.0721])
_STRIPE_ROWS: Final = 64
_BUFFER: Final = 8192  # NumPy's ufunc buffer size, in elements

# Neighbour offsets (row, column) in image-match's order: upper-left, up, upper-right,
# left, right, lower-left, down, lower-right.
_NEIGHBOURS: Final = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def grey(rgb: npt.NDArray[np.uint8]) -> FloatArray:
    """Grey levels in [0, 1] of an 8-bit RGB image, as image-match (scikit-image) computes them."""
    return _grey_and_profiles(rgb, profiles=False)[0]


def signature(
    image: npt.NDArray[np.uint8] | FloatArray, footprint: Footprint | None = None
) -> Signature:
    """The 648-value signature of an 8-bit RGB image (H×W×3) or a float grey image (H×W).

    With a ``footprint`` (an RGB image decoded at reduced scale, see
    ``images.decode_reduced``), the signature the full-size picture would have, estimated:
    its crop, grid and patches laid on the reduced pixels by their footprint.
    """
    if footprint is not None:
        estimated: Signature = _estimated(image, footprint, LAYOUTS[:1])[0]
        return estimated
    certain = _certified(image, LAYOUTS[:1])
    return certain[0] if certain is not None else _reference_signature(image)


def orientations(
    image: npt.NDArray[np.uint8] | FloatArray, footprint: Footprint | None = None
) -> Signature:
    """Signatures of the image under the 8 symmetries of the square, shape (8, 648).

    Row ``i`` is the signature of ``ORIENTATIONS[i]`` applied to the image, computed as
    if that transformed image had been stored, so a stored picture that was rotated or
    mirrored is found at distance 0 by one of the rows. ``footprint`` as for ``signature``.
    """
    if footprint is not None:
        return _estimated(image, footprint, LAYOUTS)
    certain = _certified(image, LAYOUTS)
    return certain if certain is not None else _reference_orientations(image)


def _reference_signature(image: npt.NDArray[np.uint8] | FloatArray) -> Signature:
    """``signature`` the way image-match computes it, from the whole float64 grey image."""
    g, rows, columns = _grey_of(image)
    return _signature_from_profiles(g, rows, columns)


def _reference_orientations(image: npt.NDArray[np.uint8] | FloatArray) -> Signature:
    """``orientations`` from the whole float64 grey image, then from its transpose.

    The 8 images are 4 flips of the grey image and of its transpose; the crop profiles of
    a flip are the profiles of its base read backwards or summed the other way, and its
    patches are gathered from the base through flipped indices, with the same sums.
    """
    out = np.empty((len(LAYOUTS), LENGTH), dtype=np.int8)
    g = _grey_of(image, profiles=False)[0]  # _four_profiles below makes all it needs
    for transposed in (False, True):
        if transposed:
            # One whole grey at a time (8 bytes a pixel): the transpose's own grey, where
            # a pixel's grey does not depend on its place in a row; else a copy of g's.
            if _is_rgb8(image) and _grey_is_per_pixel():
                del g
                g = _grey_of(image.transpose(1, 0, 2), profiles=False)[0]
            else:
                g = np.ascontiguousarray(g.T)
        rows, rows_reversed, columns, columns_upward = _four_profiles(g)
        for i, (turned, flip_rows, flip_columns) in enumerate(LAYOUTS):
            if turned != transposed:
                continue
            row_profile = rows_reversed if flip_columns else rows
            column_profile = columns_upward if flip_rows else columns
            out[i] = _signature_from_profiles(
                g,
                row_profile[::-1] if flip_rows else row_profile,
                column_profile[::-1] if flip_columns else column_profile,
                flip_rows=flip_rows,
                flip_columns=flip_columns,
            )
    return out


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


# -- the pipeline -------------------------------------------------------------------------


def _grey_of(
    image: npt.NDArray[np.uint8] | FloatArray, *, profiles: bool = True
) -> tuple[FloatArray, ...]:
    """Grey image, and its crop profiles unless told not to, of an 8-bit RGB or float grey
    image; ValueError for anything else."""
    if image.size == 0:
        raise ValueError(f"cannot sign an empty image of shape {image.shape}")
    if _is_rgb8(image):
        return _grey_and_profiles(cast(npt.NDArray[np.uint8], image), profiles=profiles)
    if image.ndim == 2 and np.issubdtype(image.dtype, np.floating):
        g = np.ascontiguousarray(image, dtype=np.float64)
        return (g, *_profiles(g)) if profiles else (g,)
    raise ValueError(
        "expected an H×W×3 uint8 RGB image or an H×W float grey image in [0, 1], "
        f"got {image.dtype} {image.shape}"
    )


def _profiles(g: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-row and per-column sums of absolute neighbour differences (crop profiles)."""
    return _row_profiles(g)[0], _column_profile(g, upward=False)


def _four_profiles(g: FloatArray) -> tuple[FloatArray, ...]:
    """Row and column profiles of ``g`` and of its flips: rows summed as-is and reversed,
    columns summed downward and upward (each as the flipped image's own sum would run)."""
    rows, rows_reversed = _row_profiles(g, reversed_too=True)
    return (
        rows,
        rows_reversed,
        _column_profile(g, upward=False),
        _column_profile(g, upward=True),
    )


# The profiles are computed a stripe of rows at a time in small reused buffers: whole-image
# temporaries cost more in page faults than in arithmetic. Sums run exactly as NumPy runs
# them over the whole image (pairwise along each row, row after row down a column).


def _row_profiles(g: FloatArray, reversed_too: bool = False) -> tuple[FloatArray, ...]:
    """Each row's sum of |differences|, and the same summed from the row's other end."""
    height, width = g.shape
    rows = np.empty(height, dtype=np.float64)
    backwards = np.empty(height, dtype=np.float64)
    across = np.empty((_STRIPE_ROWS, max(width - 1, 0)), dtype=np.float64)
    flipped = np.empty_like(across)
    for start in range(0, height, _STRIPE_ROWS):
        stop = min(start + _STRIPE_ROWS, height)
        n = stop - start
        np.subtract(g[start:stop, 1:], g[start:stop, :-1], out=across[:n])
        np.abs(across[:n], out=across[:n])
        across[:n].sum(axis=1, out=rows[start:stop])
        if reversed_too:
            np.copyto(flipped[:n], across[:n, ::-1])
            flipped[:n].sum(axis=1, out=backwards[start:stop])
    return (rows, backwards) if reversed_too else (rows,)


def _column_profile(g: FloatArray, *, upward: bool) -> FloatArray:
    """Each column's sum of |differences|, accumulated row after row, down or up."""
    if g.shape[1] == 1:  # NumPy sums a single column as one 1-D array: pairwise
        steps = np.abs(np.diff(g[:, 0]))
        return np.array([np.ascontiguousarray(steps[::-1] if upward else steps).sum()])
    pairs = g.shape[0] - 1  # pair i is rows i and i + 1
    # Row 0 of ``stack`` carries the running sums into the next stripe.
    stack = np.zeros((_STRIPE_ROWS + 1, g.shape[1]), dtype=np.float64)
    starts = range(0, pairs, _STRIPE_ROWS)
    for lo in reversed(starts) if upward else starts:
        hi = min(lo + _STRIPE_ROWS, pairs)
        steps = stack[1 : hi - lo + 1]
        np.subtract(g[lo + 1 : hi + 1], g[lo:hi], out=steps)
        np.abs(steps, out=steps)
        if upward:
            steps[:] = steps[::-1]  # NumPy buffers the overlapping copy
        stack[0] = stack[: hi - lo + 1].sum(axis=0)
    column: FloatArray = stack[0].copy()
    return column


def _grey_and_profiles(
    rgb: npt.NDArray[np.uint8], *, profiles: bool = True
) -> tuple[FloatArray, ...]:
    """Grey image and both crop profiles in one pass of stripes that stay in cache.

    The arithmetic is the reference's: the grey of each pixel is the same BLAS dot product,
    each row profile is the same pairwise sum over one row, and the column profile is
    accumulated row after row exactly as NumPy's reduction over axis 0 does.
    """
    if not _is_rgb8(rgb):
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    g = np.empty((height, width), dtype=np.float64)
    rows = np.empty(height, dtype=np.float64)
    # Row 0 of ``stack`` carries the running column profile into the next stripe.
    stack = np.zeros((_STRIPE_ROWS + 1, width), dtype=np.float64)
    scaled = np.empty((_STRIPE_ROWS, width, 3), dtype=np.float64)
    across = np.empty((_STRIPE_ROWS, max(width - 1, 0)), dtype=np.float64)
    for start in range(0, height, _STRIPE_ROWS):
        stop = min(start + _STRIPE_ROWS, height)
        n = stop - start
        # Same shape as scikit-image's ``rgb @ coeffs``: NumPy picks its kernel by shape
        # (for one-pixel-wide images it skips BLAS), and the last bits depend on it.
        np.multiply(rgb[start:stop], 1.0 / 255, out=scaled[:n], dtype=np.float64)
        stripe = g[start:stop]
        np.matmul(scaled[:n], _LUMA, out=stripe)
        if not profiles:
            continue
        np.subtract(stripe[:, 1:], stripe[:, :-1], out=across[:n])
        np.abs(across[:n], out=across[:n])
        across[:n].sum(axis=1, out=rows[start:stop])
        first = max(start - 1, 0)
        steps = stop - first - 1
        if steps > 0:
            down = stack[1 : steps + 1]
            np.subtract(g[first + 1 : stop], g[first : stop - 1], out=down)
            np.abs(down, out=down)
            stack[0] = stack[: steps + 1].sum(axis=0)
    if not profiles:
        return (g,)
    columns = stack[0].copy() if width > 1 else _column_profile(g, upward=False)
    return g, rows, columns


def _signature_from_profiles(
    g: FloatArray,
    rows: FloatArray,
    columns: FloatArray,
    *,
    flip_rows: bool = False,
    flip_columns: bool = False,
) -> Signature:
    """The signature of ``g`` (read with its rows and/or columns reversed) from its profiles."""
    top, bottom = _crop_limits(rows, g.shape[0])
    left, right = _crop_limits(columns, g.shape[1])
    row_points, column_points = _grid(top, bottom), _grid(left, right)
    means = _patch_means(g, row_points, column_points, flip_rows, flip_columns)
    quantised: Signature = _quantise_rows(_differences(means).reshape(1, -1))[0]
    return quantised


@lru_cache(maxsize=4096)
def _grid(lower: int, upper: int) -> npt.NDArray[np.int_]:
    """The 9 grid positions strictly between two crop limits (read-only: shared)."""
    points = np.linspace(lower, upper, GRID + 2, dtype=int)[1:-1]
    points.flags.writeable = False
    return points


def _crop_limits(profile: FloatArray, size: int) -> tuple[int, int]:
    """Indices bounding the middle 90 % of the cumulative variation along one axis."""
    cumulative = np.cumsum(profile)
    low, high = np.percentile(cumulative, [_LOWER_PERCENTILE, _UPPER_PERCENTILE])
    lower = int(np.searchsorted(cumulative, low, side="right"))
    upper = int(np.searchsorted(cumulative, high, side="left"))
    if lower > upper:  # featureless along this axis: fall back to fixed margins
        lower = int(_LOWER_PERCENTILE / 100.0 * size)
        upper = int(_UPPER_PERCENTILE / 100.0 * size)
    return lower, upper


def _patch_means(
    pixels: FloatArray | npt.NDArray[np.uint8],
    row_points: npt.NDArray[np.int_],
    column_points: npt.NDArray[np.int_],
    flip_rows: bool = False,
    flip_columns: bool = False,
    transposed: bool = False,
) -> FloatArray:
    """Mean grey level of the P×P patch at each grid point, P = max(2, round(min side / 20)).

    ``pixels`` is the grey image, or the RGB image whose grey is computed here for the
    patches' pixels only (the grey of a pixel depends on nothing else). Points are in the
    coordinates of the image transposed, then with its rows and/or columns reversed.
    """
    height, width = pixels.shape[1::-1] if transposed else pixels.shape[:2]
    p = _patch_size(height, width)
    row_starts, row_sizes = _spans(row_points, p, height)
    column_starts, column_sizes = _spans(column_points, p, width)
    patch = (int(row_sizes[0]), int(column_sizes[0]))
    uniform = (row_sizes == patch[0]).all() and (column_sizes == patch[1]).all()
    if uniform and patch[0] * patch[1] <= _BUFFER:
        # NumPy sums a strided patch through one contiguous buffer of up to _BUFFER values,
        # that is exactly as the pairwise sum of the patch flattened: gather each patch
        # flattened, all 81 at once, and sum them so.
        rows = (row_starts[:, None] + np.arange(patch[0]))[:, None, :, None]
        columns = (column_starts[:, None] + np.arange(patch[1]))[None, :, None, :]
        gathered = _gather(pixels, rows, columns, flip_rows, flip_columns, transposed)
        flat = gathered.reshape(GRID * GRID, patch[0] * patch[1], *pixels.shape[2:])
        if flat.ndim == 3:
            flat = grey(cast(npt.NDArray[np.uint8], flat))
        means: FloatArray = (flat.sum(axis=1) / flat.shape[1]).reshape(GRID, GRID)
        return means
    # The patches side by side in one block. A strided view's sum depends on its shape
    # only, not on the array it is cut from: each patch of the block sums as the same
    # patch of the whole image would.
    rows = np.concatenate([np.arange(r, r + n) for r, n in zip(row_starts, row_sizes, strict=True)])
    columns = np.concatenate(
        [np.arange(c, c + n) for c, n in zip(column_starts, column_sizes, strict=True)]
    )
    block = _gather(pixels, rows[:, None], columns[None, :], flip_rows, flip_columns, transposed)
    if block.ndim == 3:
        block = grey(np.ascontiguousarray(block))
    means = np.empty((GRID, GRID), dtype=np.float64)
    row_offsets = np.concatenate([[0], np.cumsum(row_sizes)])
    column_offsets = np.concatenate([[0], np.cumsum(column_sizes)])
    for i in range(GRID):
        band = block[row_offsets[i] : row_offsets[i + 1]]
        for j in range(GRID):
            # The same reduction np.mean performs, without its per-call overhead.
            view = band[:, column_offsets[j] : column_offsets[j + 1]]
            means[i, j] = view.sum() / view.size
    return means


def _gather(
    pixels: FloatArray | npt.NDArray[np.uint8],
    rows: npt.NDArray[np.int_],
    columns: npt.NDArray[np.int_],
    flip_rows: bool,
    flip_columns: bool,
    transposed: bool,
) -> FloatArray | npt.NDArray[np.uint8]:
    """``turned[rows, columns]`` (broadcast) of the image turned as the layout says, read
    from ``pixels`` in one gather, without turning it."""
    height, width = pixels.shape[1::-1] if transposed else pixels.shape[:2]
    if flip_rows:
        rows = height - 1 - rows
    if flip_columns:
        columns = width - 1 - columns
    if transposed:
        rows, columns = columns, rows
    flat = rows * pixels.shape[1] + columns
    gathered: FloatArray | npt.NDArray[np.uint8] = pixels.reshape(-1, *pixels.shape[2:]).take(
        flat, axis=0
    )
    return gathered


def _patch_size(height: int, width: int) -> float:
    """P, the side of the patch averaged at each grid point (image-match's formula)."""
    return max(2.0, int(0.5 + min(height, width) / 20.0))


def _is_rgb8(image: npt.NDArray[Any]) -> bool:
    return image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def _spans(
    centres: npt.NDArray[np.int_], p: float, limit: int
) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.int_]]:
    """First pixel and length of the patch around each centre, clipped to the image."""
    starts = np.maximum(centres - p / 2, 0).astype(np.int64)
    stops = np.minimum(starts + p, limit).astype(np.int64)
    return starts, stops - starts


def _differences(means: FloatArray) -> FloatArray:
    """Grey level of each grid point minus that of each of its 8 neighbours (0 off the grid)."""
    out = np.zeros((GRID, GRID, len(_NEIGHBOURS)), dtype=np.float64)
    for k, (dy, dx) in enumerate(_NEIGHBOURS):
        ys = slice(max(0, -dy), GRID - max(0, dy))
        xs = slice(max(0, -dx), GRID - max(0, dx))
        ny = slice(ys.start + dy, ys.stop + dy)
        nx = slice(xs.start + dx, xs.stop + dx)
        out[ys, xs, k] = means[ys, xs] - means[ny, nx]
    return out


def _quantise_rows(d: FloatArray) -> Signature:
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
    inner = [_percentile_position(values.size, f) for f in _LEVEL_FRACTIONS[1:-1]]
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


# -- the certified path -------------------------------------------------------------------
# image-match crops at the 5th and 95th percentiles of the *values* of the cumulative
# profile, which is sorted: the limits sit at fixed positions (k + 1 of NumPy's (k, t)),
# and the profile decides them only through the lines there, which must rise clearly
# or be level. So the crop is read from the integer luma 2125 R + 7154 G + 721 B
# (image-match's weights × 10,000, exact in any arithmetic used here) of those few
# lines, against a bound on the reference's float64 rounding; first the bound that fits
# any picture of the size, then, if that is too loose, the picture's own from all its
# lines. If rounding could still change a limit, the reference path runs instead;
# otherwise the limits are the reference's, and the 81 patches get the reference's grey.
# Same signatures, without a float64 copy of the whole image.

_INTEGER_LUMA: Final = np.array([2125, 7154, 721], dtype=np.float32)
_INTEGER_SCALE: Final = 2_550_000.0  # 255 × 10,000: integer luma → grey in [0, 1]
_CERTIFIED_MIN_SIDE: Final = 32
_WHOLE_GREY_MAX_PIXELS: Final = 4_000_000  # a whole float64 grey of 32 MB at most


def _certified(
    image: npt.NDArray[np.uint8] | FloatArray, layouts: tuple[tuple[bool, bool, bool], ...]
) -> Signature | None:
    """Signatures of ``image`` under ``layouts``, or None where rounding could decide."""
    if not _is_rgb8(image):
        return None
    rgb = cast(npt.NDArray[np.uint8], image)
    height, width = rgb.shape[:2]
    if min(height, width) < _CERTIFIED_MIN_SIDE:
        return None

    # Only a level run (a border, a flat picture) asks whether lines are one colour: then
    # the whole axis is answered in one pass, once.
    @cache
    def one_colour(axis: int) -> npt.NDArray[np.bool_]:
        flat = rgb.reshape(height, width * 3)  # compared a whole row of bytes at a time
        stripes = range(0, height, _STRIPE_ROWS)  # temporaries of a stripe, not the image
        if axis == 0:  # each pixel of a row equals the one before it
            same = np.concatenate(
                [(flat[a : a + _STRIPE_ROWS, 3:] == flat[a : a + _STRIPE_ROWS, :-3]).all(axis=1)
                 for a in stripes]
            )  # fmt: skip
        else:  # each row equals the first, column by column
            equal = np.ones(width * 3, dtype=bool)
            for a in stripes:
                np.logical_and(
                    equal, (flat[a : a + _STRIPE_ROWS] == flat[0]).all(axis=0), out=equal
                )
            return cast(npt.NDArray[np.bool_], equal.reshape(width, 3).all(axis=1))
        return cast(npt.NDArray[np.bool_], same)

    def uniform_rows(lines: Lines) -> npt.NDArray[np.bool_]:
        return one_colour(0)[lines]

    def uniform_columns(lines: Lines) -> npt.NDArray[np.bool_]:
        return one_colour(1)[lines]

    # The limits sit near fixed positions (image-match takes percentiles of the
    # cumulative sums' values, which are sorted): the few lines there decide them,
    # against a rounding bound for the largest sums an image of this size can have.
    # Only if that bound is too loose are all the lines summed, for the actual bound.
    area = float(height * width)  # the largest sum of |grey steps| a profile can reach

    def row_lines(lines: Lines) -> FloatArray:
        return _line_profiles(rgb[lines])

    def column_lines(lines: Lines) -> FloatArray:
        return _line_profiles(rgb[:, lines].swapaxes(0, 1))

    grids = _certain_grids(
        layouts,
        (height, width),
        ((row_lines, uniform_rows, area), (column_lines, uniform_columns, area)),
    )
    if grids is None:
        rows, columns = _integer_profiles(rgb)
        grids = _certain_grids(
            layouts,
            (height, width),
            (
                (rows.__getitem__, uniform_rows, float(rows.sum()) / _INTEGER_SCALE),
                (columns.__getitem__, uniform_columns, float(columns.sum()) / _INTEGER_SCALE),
            ),
        )
    if grids is None:
        return None
    # One orientation needs the grey of its patches only; several share the whole grey,
    # unless it would be large (8 bytes a pixel): then each gathers its patches' own.
    patches_only = len(layouts) == 1 or height * width > _WHOLE_GREY_MAX_PIXELS
    pixels = rgb if patches_only and _grey_is_per_pixel() else grey(rgb)
    differences = np.empty((len(layouts), LENGTH), dtype=np.float64)
    for i, ((transposed, flip_rows, flip_columns), points) in enumerate(
        zip(layouts, grids, strict=True)
    ):
        means = _patch_means(pixels, *points, flip_rows, flip_columns, transposed)
        differences[i] = _differences(means).reshape(-1)
    return _quantise_rows(differences)


Lines = npt.NDArray[np.int64]
_Axis = tuple[Callable[[Lines], FloatArray], Callable[[Lines], npt.NDArray[np.bool_]], float]
"""For given lines: their integer-luma profiles, whether each is one colour; and a bound
on the profile's total, in grey levels."""


def _certain_grids(
    layouts: tuple[tuple[bool, bool, bool], ...],
    shape: tuple[int, int],
    axes: tuple[_Axis, _Axis],
) -> list[tuple[npt.NDArray[np.int_], npt.NDArray[np.int_]]] | None:
    """Grid points of each layout from certain crop limits, or None if one is undecided.

    The 8 layouts read the 2 axes in 2 directions: 4 pairs of limits, each found once."""

    @cache
    def limits(axis: int, backwards: bool) -> tuple[int, int] | None:
        size = shape[axis]
        return _certain_crop_limits(*_reading(axes[axis], size, backwards), shape)

    grids = []
    for transposed, flip_rows, flip_columns in layouts:
        vertical = limits(1 if transposed else 0, flip_rows)
        horizontal = limits(0 if transposed else 1, flip_columns)
        if vertical is None or horizontal is None:
            return None
        grids.append((_grid(*vertical), _grid(*horizontal)))
    return grids


def _reading(
    axis: _Axis, size: int, backwards: bool
) -> tuple[Callable[[Lines], FloatArray], Callable[[Lines], npt.NDArray[np.bool_]], int, float]:
    """An axis's lines, read from the far end if ``backwards``; and their count."""
    profile, uniform, total = axis
    if not backwards:
        return profile, uniform, size, total
    last = size - 1
    return (lambda lines: profile(last - lines)), (lambda lines: uniform(last - lines)), size, total


@cache
def _grey_is_per_pixel() -> bool:
    """Whether this NumPy and BLAS give a pixel the same grey wherever it sits in a row.

    The reference computes the grey a row at a time (a matrix-vector product per row);
    the patches' pixels are gathered into rows of other lengths. That is exact only if
    the product treats every element alike, which a kernel with a differently rounded
    tail would not: checked once per process, on rows of many lengths."""
    rgb = np.random.default_rng(1).integers(0, 256, (8, 1031, 3), dtype=np.uint8)
    reference = grey(rgb).reshape(-1)
    flat = rgb.reshape(-1, 3)
    for width in (3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 257):
        for start in (0, 1, 2, 3):
            count = (flat.shape[0] - start) // width * width
            rows = np.ascontiguousarray(flat[start : start + count].reshape(-1, width, 3))
            if not np.array_equal(grey(rows).reshape(-1), reference[start : start + count]):
                return False
    return True


def _line_profiles(lines: npt.NDArray[np.uint8]) -> FloatArray:
    """The integer-luma profile of each of n rows or columns (n × N × 3): exact."""
    luma = lines.astype(np.int64) @ _INTEGER_LUMA.astype(np.int64)
    profiles: FloatArray = np.abs(np.diff(luma, axis=1)).sum(axis=1).astype(np.float64)
    return profiles


def _integer_profiles(rgb: npt.NDArray[np.uint8]) -> tuple[FloatArray, FloatArray]:
    """Row and column profiles of the integer luma, exact (float64 holding integers)."""
    height, width = rgb.shape[:2]
    rows = np.empty(height, dtype=np.float64)
    columns = np.zeros(width, dtype=np.float64)
    scaled = np.empty((_STRIPE_ROWS, width, 3), dtype=np.float32)
    # Row 0 of ``luma`` holds the previous stripe's last row.
    luma = np.empty((_STRIPE_ROWS + 1, width), dtype=np.float32)
    across = np.empty((_STRIPE_ROWS, width - 1), dtype=np.float32)
    down = np.empty((_STRIPE_ROWS, width), dtype=np.float32)
    wide_across = np.empty((_STRIPE_ROWS, width - 1), dtype=np.float64)
    wide_down = np.empty((_STRIPE_ROWS, width), dtype=np.float64)
    ones_across = np.ones(width - 1, dtype=np.float64)
    ones_down = np.ones(_STRIPE_ROWS, dtype=np.float64)
    for start in range(0, height, _STRIPE_ROWS):
        stop = min(start + _STRIPE_ROWS, height)
        n = stop - start
        np.copyto(scaled[:n], rgb[start:stop], casting="unsafe")
        current = luma[1 : n + 1]
        np.matmul(scaled[:n], _INTEGER_LUMA, out=current)  # integers below 2**24: exact
        np.subtract(current[:, 1:], current[:, :-1], out=across[:n])
        np.abs(across[:n], out=across[:n])
        np.copyto(wide_across[:n], across[:n])
        np.matmul(wide_across[:n], ones_across, out=rows[start:stop])  # below 2**53: exact
        first = 0 if start else 1
        steps = n - first
        if steps > 0:
            np.subtract(luma[first + 1 : n + 1], luma[first:n], out=down[:steps])
            np.abs(down[:steps], out=down[:steps])
            np.copyto(wide_down[:steps], down[:steps])
            columns += ones_down[:steps] @ wide_down[:steps]
        luma[0] = luma[n]
    return rows, columns


def _certain_crop_limits(
    profile: Callable[[Lines], FloatArray],
    uniform: Callable[[Lines], npt.NDArray[np.bool_]],
    size: int,
    total: float,
    shape: tuple[int, int],
) -> tuple[int, int] | None:
    """``_crop_limits`` of the reference profile that ``profile`` (integer luma) stands
    for, or None if its rounding could move either limit.

    The reference's cumulative sums rise by at least 1 / 2,550,000 wherever ``profile``
    does, and stay exactly level across a line whose pixels are all the same colour
    (``uniform``); a zero of ``profile`` on any other line is undecided. With the 5th
    percentile at NumPy's position (k, t), a lerp of entries k and k + 1, the lower limit
    counts the entries <= it: 0..k always, then any level run from k + 1, or none if the
    rise to k + 1 is clear. The upper limit counts the entries < the 95th percentile:
    0..k if the rise to k + 1, weighted by t, is clear; otherwise the entries below the
    level run that ends at k. ``total`` bounds the sum of the profile, in grey levels.
    """
    lower_at = _percentile_position(size, _LOWER_PERCENTILE)
    upper_at = _percentile_position(size, _UPPER_PERCENTILE)
    if lower_at is None or upper_at is None:
        return None
    pixels = float(shape[0] * shape[1])
    # Rounding of the reference, generously: each grey value and difference a few units
    # of 1e-16, every sum at most (terms) × 2**-53 of its value, and the lerp's own.
    tolerance = 1e-13 * pixels + 1e-14 * (sum(shape[:2]) + 4) * total

    def levels(lines: Lines) -> npt.NDArray[np.int8]:
        """Per line: 1 the reference's sum stays level (the line is one colour), 0 it
        rises clearly, -1 undecided."""
        marks = np.ones(len(lines), dtype=np.int8)
        other = ~uniform(lines)
        if other.any():
            rises = profile(lines[other]) / _INTEGER_SCALE
            marks[other] = np.where(rises > tolerance, 0, -1)
        return marks

    def rise(line: int) -> float:
        return float(profile(np.array([line]))[0]) / _INTEGER_SCALE

    def run(first: int, step: int) -> int | None:
        """Level lines from ``first`` on, walking by ``step`` (in growing chunks); None
        if one is undecided."""
        count, chunk = 0, 8
        while True:
            lines = first + step * (count + np.arange(chunk))
            lines = lines[(lines >= 0) & (lines < size)]
            if not len(lines):
                return count
            marks = levels(lines)
            stops = np.flatnonzero(marks != 1)
            if len(stops):
                return None if marks[stops[0]] == -1 else count + int(stops[0])
            count, chunk = count + len(lines), chunk * 2

    k, t = lower_at
    if rise(k + 1) * (1.0 - t) > tolerance:
        lower: int | None = k + 1
    else:
        flat = run(k + 1, 1)  # level from k + 1: the percentile is entry k, repeated
        lower = None if flat is None or flat == 0 else k + 1 + flat
    k, t = upper_at
    if t > 0.0 and rise(k + 1) * t > tolerance:
        upper: int | None = k + 1
    elif t > 0.0 and levels(np.array([k + 1]))[0] != 1:
        upper = None
    else:  # the percentile is entry k exactly: count the entries below its level run
        flat = run(k, -1)
        upper = None if flat is None else max(k - flat, 0)
    if lower is None or upper is None:
        return None
    if lower > upper:
        lower = int(_LOWER_PERCENTILE / 100.0 * size)
        upper = int(_UPPER_PERCENTILE / 100.0 * size)
    return lower, upper


@lru_cache(maxsize=4096)  # sizes seen in practice are few; requests choose them
def _percentile_position(size: int, percentile: int) -> tuple[int, float] | None:
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


# -- full-size signatures from reduced decodes -------------------------------------------
# A JPEG decoded at 1/s scale holds (nearly) the s×s block means of the full-size
# picture. Signing it as it is moves the crop and the grid by rounding at that scale;
# laying the full-size geometry on it instead (profiles spread over the full-size lines
# each reduced line covers, patches averaged with each reduced pixel weighted by the
# full-size pixels it covers) keeps the signature within a few hundredths of the
# full-size one (bench/signature.py).


def _estimated(
    image: npt.NDArray[np.uint8] | FloatArray,
    footprint: Footprint,
    layouts: tuple[tuple[bool, bool, bool], ...],
) -> Signature:
    if not _is_rgb8(image):
        raise ValueError(f"a footprint needs an H×W×3 uint8 RGB image, got {image.shape}")
    rgb = cast(npt.NDArray[np.uint8], image)
    if rgb.shape[:2] != footprint.reduced_shape:
        raise ValueError(f"image {rgb.shape[:2]} does not fit its footprint {footprint}")
    rows, columns = _integer_profiles(rgb)
    differences = np.empty((len(layouts), LENGTH), dtype=np.float64)
    for i, (transposed, flip_rows, flip_columns) in enumerate(layouts):
        turned = footprint.turned(transposed, flip_rows, flip_columns)
        base = rgb.swapaxes(0, 1) if transposed else rgb
        base = base[:: -1 if flip_rows else 1, :: -1 if flip_columns else 1]
        row_profile, column_profile = (columns, rows) if transposed else (rows, columns)
        row_profile = row_profile[::-1] if flip_rows else row_profile
        column_profile = column_profile[::-1] if flip_columns else column_profile
        height, width = turned.shape
        top, bottom = _crop_limits(_spread(row_profile, turned, 0), height)
        left, right = _crop_limits(_spread(column_profile, turned, 1), width)
        p = _patch_size(height, width)
        row_points, column_points = _grid(top, bottom), _grid(left, right)
        r, row_weights = _coverage(_spans(row_points, p, height), turned, 0)
        c, column_weights = _coverage(_spans(column_points, p, width), turned, 1)
        block = grey(np.ascontiguousarray(base.take(r, axis=0).take(c, axis=1)))
        sums = row_weights @ block @ column_weights.T
        means = sums / np.outer(row_weights.sum(axis=1), column_weights.sum(axis=1))
        differences[i] = _differences(means).reshape(-1)
    return _quantise_rows(differences)


def _spread(profile: FloatArray, footprint: Footprint, axis: int) -> FloatArray:
    """A reduced profile spread over the full-size lines each reduced line covers."""
    lines = np.arange(footprint.shape[axis]) + footprint.offsets[axis]
    spread: FloatArray = profile[lines // footprint.scale]
    return spread


def _coverage(
    spans: tuple[npt.NDArray[np.int_], npt.NDArray[np.int_]], footprint: Footprint, axis: int
) -> tuple[npt.NDArray[np.intp], FloatArray]:
    """Reduced indices covering the full-size ``spans`` (starts, lengths) along ``axis``,
    and per span the weight of each (how many of its full-size pixels fall in the span)."""
    scale, offset = footprint.scale, footprint.offsets[axis]
    spans_list = [(int(a), int(a + n)) for a, n in zip(*spans, strict=True)]
    indices = [
        np.arange((start + offset) // scale, (stop - 1 + offset) // scale + 1)
        for start, stop in spans_list
    ]
    flat = np.concatenate(indices)
    weights = np.zeros((len(spans_list), flat.size), dtype=np.float64)
    position = 0
    for row, ((start, stop), covering) in enumerate(zip(spans_list, indices, strict=True)):
        first = covering * scale - offset
        overlap = np.minimum(first + scale, stop) - np.maximum(first, start)
        weights[row, position : position + covering.size] = overlap
        position += covering.size
    return flat, weights
