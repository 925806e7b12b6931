"""image-match's float pipeline, step by step: the reference that every faster path equals.

grey (float64, scikit-image's rgb2gray) → crop profiles (each row's and column's sum of
|steps|) → crop limits (5th and 95th percentiles of their cumulative sums) → a 9×9 grid →
the mean of a P×P patch at each point → differences with the 8 neighbours → quantisation
to {-2, -1, 0, 1, 2}. Each step repeats image-match's arithmetic (formula, summation
order, percentile rule), so signatures are bit-identical to the ones it stored; the grey
and the profiles are built in cache-sized stripes. ``certified`` and ``reduced`` find the
crop and the patches their own way, and share the steps from the grid on.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from ..orientations import LAYOUTS
from .quantise import neighbour_differences, quantise_rows

__all__ = [
    "GRID",
    "LENGTH",
    "LOWER_PERCENTILE",
    "STRIPE_ROWS",
    "UPPER_PERCENTILE",
    "FloatArray",
    "Signature",
    "crop_limits",
    "grey",
    "grey_is_per_pixel",
    "grid_points",
    "is_rgb8",
    "patch_means",
    "patch_size",
    "patch_spans",
    "reference_orientations",
    "reference_signature",
]

Signature = npt.NDArray[np.int8]
FloatArray = npt.NDArray[np.float64]

GRID: Final = 9
LENGTH: Final = GRID * GRID * 8

LOWER_PERCENTILE: Final = 5
UPPER_PERCENTILE: Final = 95
# scikit-image's rgb2gray (ITU-R BT.709), which image-match uses.
_LUMA: Final = np.array([0.2125, 0.7154, 0.0721])
STRIPE_ROWS: Final = 64
_BUFFER: Final = 8192  # NumPy's ufunc buffer size, in elements


def grey(rgb: npt.NDArray[np.uint8]) -> FloatArray:
    """Grey levels in [0, 1] of an 8-bit RGB image, as image-match (scikit-image) computes them."""
    return _grey_and_profiles(rgb, profiles=False)[0]


def reference_signature(image: npt.NDArray[np.uint8] | FloatArray) -> Signature:
    """``signature`` the way image-match computes it, from the whole float64 grey image."""
    g, rows, columns = _grey_of(image)
    return _signature_from_profiles(g, rows, columns)


def reference_orientations(image: npt.NDArray[np.uint8] | FloatArray) -> Signature:
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
            if is_rgb8(image) and grey_is_per_pixel():
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


def _grey_of(
    image: npt.NDArray[np.uint8] | FloatArray, *, profiles: bool = True
) -> tuple[FloatArray, ...]:
    """Grey image, and its crop profiles unless told not to, of an 8-bit RGB or float grey
    image; ValueError for anything else."""
    if image.size == 0:
        raise ValueError(f"cannot sign an empty image of shape {image.shape}")
    if is_rgb8(image):
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
    across = np.empty((STRIPE_ROWS, max(width - 1, 0)), dtype=np.float64)
    flipped = np.empty_like(across)
    for start in range(0, height, STRIPE_ROWS):
        stop = min(start + STRIPE_ROWS, height)
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
    stack = np.zeros((STRIPE_ROWS + 1, g.shape[1]), dtype=np.float64)
    starts = range(0, pairs, STRIPE_ROWS)
    for lo in reversed(starts) if upward else starts:
        hi = min(lo + STRIPE_ROWS, pairs)
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
    if not is_rgb8(rgb):
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    g = np.empty((height, width), dtype=np.float64)
    rows = np.empty(height, dtype=np.float64)
    # Row 0 of ``stack`` carries the running column profile into the next stripe.
    stack = np.zeros((STRIPE_ROWS + 1, width), dtype=np.float64)
    scaled = np.empty((STRIPE_ROWS, width, 3), dtype=np.float64)
    across = np.empty((STRIPE_ROWS, max(width - 1, 0)), dtype=np.float64)
    for start in range(0, height, STRIPE_ROWS):
        stop = min(start + STRIPE_ROWS, height)
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


@cache
def grey_is_per_pixel() -> bool:
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


def _signature_from_profiles(
    g: FloatArray,
    rows: FloatArray,
    columns: FloatArray,
    *,
    flip_rows: bool = False,
    flip_columns: bool = False,
) -> Signature:
    """The signature of ``g`` (read with its rows and/or columns reversed) from its profiles."""
    top, bottom = crop_limits(rows, g.shape[0])
    left, right = crop_limits(columns, g.shape[1])
    row_points, column_points = grid_points(top, bottom), grid_points(left, right)
    means = patch_means(g, row_points, column_points, flip_rows, flip_columns)
    quantised: Signature = quantise_rows(neighbour_differences(means).reshape(1, -1))[0]
    return quantised


@lru_cache(maxsize=4096)
def grid_points(lower: int, upper: int) -> npt.NDArray[np.int_]:
    """The 9 grid positions strictly between two crop limits (read-only: shared)."""
    points = np.linspace(lower, upper, GRID + 2, dtype=int)[1:-1]
    points.flags.writeable = False
    return points


def crop_limits(profile: FloatArray, size: int) -> tuple[int, int]:
    """Indices bounding the middle 90 % of the cumulative variation along one axis."""
    cumulative = np.cumsum(profile)
    low, high = np.percentile(cumulative, [LOWER_PERCENTILE, UPPER_PERCENTILE])
    lower = int(np.searchsorted(cumulative, low, side="right"))
    upper = int(np.searchsorted(cumulative, high, side="left"))
    if lower > upper:  # featureless along this axis: fall back to fixed margins
        lower = int(LOWER_PERCENTILE / 100.0 * size)
        upper = int(UPPER_PERCENTILE / 100.0 * size)
    return lower, upper


def patch_means(
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
    p = patch_size(height, width)
    row_starts, row_sizes = patch_spans(row_points, p, height)
    column_starts, column_sizes = patch_spans(column_points, p, width)
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


def patch_size(height: int, width: int) -> float:
    """P, the side of the patch averaged at each grid point (image-match's formula)."""
    return max(2.0, int(0.5 + min(height, width) / 20.0))


def is_rgb8(image: npt.NDArray[Any]) -> bool:
    return image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def patch_spans(
    centres: npt.NDArray[np.int_], p: float, limit: int
) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.int_]]:
    """First pixel and length of the patch around each centre, clipped to the image."""
    starts = np.maximum(centres - p / 2, 0).astype(np.int64)
    stops = np.minimum(starts + p, limit).astype(np.int64)
    return starts, stops - starts
