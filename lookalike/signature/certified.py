"""The certified path: the crop of an 8-bit image read from its exact integer luma.

image-match crops at the 5th and 95th percentiles of the *values* of the cumulative
profile, which is sorted: the limits sit at fixed positions (k + 1 of NumPy's (k, t)),
and the profile decides them only through the lines there, which must rise clearly
or be level. So the crop is read from the integer luma 2125 R + 7154 G + 721 B
(image-match's weights × 10,000, exact in any arithmetic used here) of those few
lines, against a bound on the reference's float64 rounding; first the bound that fits
any picture of the size, then, if that is too loose, the picture's own from all its
lines. If rounding could still change a limit, the reference path runs instead;
otherwise the limits are the reference's, and the 81 patches get the reference's grey.
Same signatures, without a float64 copy of the whole image.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Final, cast

import numpy as np
import numpy.typing as npt

from ..orientations import Layout
from .quantise import neighbour_differences, percentile_position, quantise_rows
from .reference import (
    LENGTH,
    LOWER_PERCENTILE,
    STRIPE_ROWS,
    UPPER_PERCENTILE,
    FloatArray,
    Signature,
    grey,
    grey_is_per_pixel,
    grid_points,
    is_rgb8,
    patch_means,
)

__all__ = [
    "WHOLE_GREY_MAX_PIXELS",
    "Axis",
    "Lines",
    "certain_grids",
    "certified_signatures",
    "integer_profiles",
    "line_profiles",
]

_INTEGER_LUMA: Final = np.array([2125, 7154, 721], dtype=np.float32)
_INTEGER_SCALE: Final = 2_550_000.0  # 255 × 10,000: integer luma → grey in [0, 1]
_CERTIFIED_MIN_SIDE: Final = 32
WHOLE_GREY_MAX_PIXELS: Final = 4_000_000  # a whole float64 grey of 32 MB at most


def certified_signatures(
    image: npt.NDArray[np.uint8] | FloatArray, layouts: tuple[Layout, ...]
) -> Signature | None:
    """Signatures of ``image`` under ``layouts``, or None where rounding could decide."""
    if not is_rgb8(image):
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
        stripes = range(0, height, STRIPE_ROWS)  # temporaries of a stripe, not the image
        if axis == 0:  # each pixel of a row equals the one before it
            same = np.concatenate(
                [(flat[a : a + STRIPE_ROWS, 3:] == flat[a : a + STRIPE_ROWS, :-3]).all(axis=1)
                 for a in stripes]
            )  # fmt: skip
        else:  # each row equals the first, column by column
            equal = np.ones(width * 3, dtype=bool)
            for a in stripes:
                np.logical_and(equal, (flat[a : a + STRIPE_ROWS] == flat[0]).all(axis=0), out=equal)
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
        return line_profiles(rgb[lines])

    def column_lines(lines: Lines) -> FloatArray:
        return line_profiles(rgb[:, lines].swapaxes(0, 1))

    grids = certain_grids(
        layouts,
        (height, width),
        ((row_lines, uniform_rows, area), (column_lines, uniform_columns, area)),
    )
    if grids is None:
        rows, columns = integer_profiles(rgb)
        grids = certain_grids(
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
    patches_only = len(layouts) == 1 or height * width > WHOLE_GREY_MAX_PIXELS
    pixels = rgb if patches_only and grey_is_per_pixel() else grey(rgb)
    differences = np.empty((len(layouts), LENGTH), dtype=np.float64)
    for i, ((transposed, flip_rows, flip_columns), points) in enumerate(
        zip(layouts, grids, strict=True)
    ):
        means = patch_means(pixels, *points, flip_rows, flip_columns, transposed)
        differences[i] = neighbour_differences(means).reshape(-1)
    return quantise_rows(differences)


Lines = npt.NDArray[np.int64]
Axis = tuple[Callable[[Lines], FloatArray], Callable[[Lines], npt.NDArray[np.bool_]], float]
"""For given lines: their integer-luma profiles, whether each is one colour; and a bound
on the profile's total, in grey levels."""


def certain_grids(
    layouts: tuple[Layout, ...],
    shape: tuple[int, int],
    axes: tuple[Axis, Axis],
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
        grids.append((grid_points(*vertical), grid_points(*horizontal)))
    return grids


def _reading(
    axis: Axis, size: int, backwards: bool
) -> tuple[Callable[[Lines], FloatArray], Callable[[Lines], npt.NDArray[np.bool_]], int, float]:
    """An axis's lines, read from the far end if ``backwards``; and their count."""
    profile, uniform, total = axis
    if not backwards:
        return profile, uniform, size, total
    last = size - 1
    return (lambda lines: profile(last - lines)), (lambda lines: uniform(last - lines)), size, total


def line_profiles(lines: npt.NDArray[np.uint8]) -> FloatArray:
    """The integer-luma profile of each of n rows or columns (n × N × 3): exact."""
    luma = lines.astype(np.int64) @ _INTEGER_LUMA.astype(np.int64)
    profiles: FloatArray = np.abs(np.diff(luma, axis=1)).sum(axis=1).astype(np.float64)
    return profiles


def integer_profiles(rgb: npt.NDArray[np.uint8]) -> tuple[FloatArray, FloatArray]:
    """Row and column profiles of the integer luma, exact (float64 holding integers)."""
    height, width = rgb.shape[:2]
    rows = np.empty(height, dtype=np.float64)
    columns = np.zeros(width, dtype=np.float64)
    scaled = np.empty((STRIPE_ROWS, width, 3), dtype=np.float32)
    # Row 0 of ``luma`` holds the previous stripe's last row.
    luma = np.empty((STRIPE_ROWS + 1, width), dtype=np.float32)
    across = np.empty((STRIPE_ROWS, width - 1), dtype=np.float32)
    down = np.empty((STRIPE_ROWS, width), dtype=np.float32)
    wide_across = np.empty((STRIPE_ROWS, width - 1), dtype=np.float64)
    wide_down = np.empty((STRIPE_ROWS, width), dtype=np.float64)
    ones_across = np.ones(width - 1, dtype=np.float64)
    ones_down = np.ones(STRIPE_ROWS, dtype=np.float64)
    for start in range(0, height, STRIPE_ROWS):
        stop = min(start + STRIPE_ROWS, height)
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
    """``crop_limits`` of the reference profile that ``profile`` (integer luma) stands
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
    lower_at = percentile_position(size, LOWER_PERCENTILE)
    upper_at = percentile_position(size, UPPER_PERCENTILE)
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
        lower = int(LOWER_PERCENTILE / 100.0 * size)
        upper = int(UPPER_PERCENTILE / 100.0 * size)
    return lower, upper
