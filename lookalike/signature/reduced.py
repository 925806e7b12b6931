"""Full-size signatures from reduced JPEG decodes, estimated.

A JPEG decoded at 1/s scale holds (nearly) the s×s block means of the full-size
picture. Signing it as it is moves the crop and the grid by rounding at that scale;
laying the full-size geometry on it instead (profiles spread over the full-size lines
each reduced line covers, patches averaged with each reduced pixel weighted by the
full-size pixels it covers) keeps the signature within a few hundredths of the
full-size one (bench/signature.py).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt

from ..orientations import Layout, apply_layout
from ..records import Footprint
from .certified import integer_profiles
from .quantise import neighbour_differences, quantise_rows
from .reference import (
    LENGTH,
    FloatArray,
    Signature,
    crop_limits,
    grey,
    grid_points,
    is_rgb8,
    patch_size,
    patch_spans,
)

__all__ = ["estimated_signatures"]


def estimated_signatures(
    image: npt.NDArray[np.uint8] | FloatArray,
    footprint: Footprint,
    layouts: tuple[Layout, ...],
) -> Signature:
    """Signatures of the full-size picture under ``layouts``, estimated from its reduced
    decode ``image``, which ``footprint`` lays on it; ValueError if they do not fit."""
    if not is_rgb8(image):
        raise ValueError(f"a footprint needs an H×W×3 uint8 RGB image, got {image.shape}")
    rgb = cast(npt.NDArray[np.uint8], image)
    if rgb.shape[:2] != footprint.reduced_shape:
        raise ValueError(f"image {rgb.shape[:2]} does not fit its footprint {footprint}")
    rows, columns = integer_profiles(rgb)
    differences = np.empty((len(layouts), LENGTH), dtype=np.float64)
    for i, layout in enumerate(layouts):
        transposed, flip_rows, flip_columns = layout
        turned = footprint.turned(*layout)
        base = apply_layout(rgb, layout)
        row_profile, column_profile = (columns, rows) if transposed else (rows, columns)
        row_profile = row_profile[::-1] if flip_rows else row_profile
        column_profile = column_profile[::-1] if flip_columns else column_profile
        height, width = turned.shape
        top, bottom = crop_limits(_spread(row_profile, turned, 0), height)
        left, right = crop_limits(_spread(column_profile, turned, 1), width)
        p = patch_size(height, width)
        row_points, column_points = grid_points(top, bottom), grid_points(left, right)
        r, row_weights = _coverage(patch_spans(row_points, p, height), turned, 0)
        c, column_weights = _coverage(patch_spans(column_points, p, width), turned, 1)
        block = grey(np.ascontiguousarray(base.take(r, axis=0).take(c, axis=1)))
        sums = row_weights @ block @ column_weights.T
        means = sums / np.outer(row_weights.sum(axis=1), column_weights.sum(axis=1))
        differences[i] = neighbour_differences(means).reshape(-1)
    return quantise_rows(differences)


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
