"""Millions of realistic Goldberg signatures, fast (> 100,000/s a core, against 1,500/s
through images), for benchmarks of large stores: 9×9 grids of patch means drawn as 1/f
fields, then image-match's last steps, bit-identical to ``lookalike.signature``. Nothing
here imports ``lookalike``; ``NEIGHBOURS`` and ``SYMMETRIES`` follow its order.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Signatures = npt.NDArray[np.int8]
Range = tuple[float, float]
Bools = npt.NDArray[np.bool_]

GRID: Final = 9
# (row, column) offsets in image-match's order; neighbour 7 - k is the opposite of k.
NEIGHBOURS: Final = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# (np.rot90 quarter turns, np.fliplr first), in lookalike.signature.ORIENTATIONS order.
SYMMETRIES: Final = tuple((k % 4, k >= 4) for k in range(8))
_TOLERANCE: Final = 2 / 255.0
_FIELD: Final = 16  # side of the periodic field a grid is cut from
_STEPS: Final = 21  # number of evenly spaced spectral exponents


def _pairs() -> tuple[npt.NDArray[np.intp], ...]:
    """Ends a, b of the 272 neighbouring pairs, and where each value is in [a-b, b-a, 0]."""
    pairs = [
        (i, i + dy * GRID + dx, k)
        for k, (dy, dx) in enumerate(NEIGHBOURS[4:], 4)  # right, lower-left, down, lower-right
        for i in range(GRID * GRID)
        if 0 <= i // GRID + dy < GRID and 0 <= i % GRID + dx < GRID
    ]
    a, b, k = np.array(pairs, dtype=np.intp).T
    layout = np.full(GRID * GRID * 8, 2 * len(a), dtype=np.intp)
    layout[a * 8 + k], layout[b * 8 + 7 - k] = np.arange(len(a)), np.arange(len(a), 2 * len(a))
    return a, b, layout


_A, _B, _LAYOUT = _pairs()


@cache
def _factors(low: float, high: float) -> FloatArray:
    """Transposed Cholesky factors of the 9×9 crops' covariance, per exponent a: (21, 81, 81)."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(_FIELD), np.fft.fftfreq(_FIELD), indexing="ij"))
    f[0, 0] = np.inf
    y, x = np.divmod(np.arange(GRID * GRID), GRID)
    dy, dx = (y[:, None] - y) % _FIELD, (x[:, None] - x) % _FIELD
    exponents = np.linspace(low, high, _STEPS)[:, None, None]
    covariances = np.fft.ifft2(f[None] ** (-2 * exponents)).real[:, dy, dx]
    return np.ascontiguousarray(np.linalg.cholesky(covariances).transpose(0, 2, 1))


def grids(
    rng: np.random.Generator, n: int, exponent: Range = (1.0, 1.5), contrast: Range = (0.015, 0.2)
) -> FloatArray:
    """``n`` grids of mean grey levels in [0, 1], shape (n, 9, 9), like photos' grids.

    Each is a 9×9 crop of a periodic 16×16 Gaussian field with a 1/|f|^a amplitude
    spectrum, ``a`` one of 21 values spanning ``exponent``, drawn from the crop's covariance
    (no FFT); then scaled to a standard deviation log-uniform in ``contrast`` around a mean
    uniform in [0.25, 0.75] and clipped to [0, 1]. Defaults give photos' share of zeros.
    """
    factors = _factors(*exponent)
    which = rng.integers(0, _STEPS, size=n)
    field = rng.standard_normal((n, GRID * GRID))
    for step, factor in enumerate(factors):
        rows = np.flatnonzero(which == step)
        field[rows] = field[rows] @ factor
    field -= field.mean(axis=1, keepdims=True)
    field /= field.std(axis=1, keepdims=True) + 1e-12
    field *= np.exp(rng.uniform(math.log(contrast[0]), math.log(contrast[1]), size=(n, 1)))
    field += rng.uniform(0.25, 0.75, size=(n, 1))
    return np.clip(field, 0.0, 1.0).reshape(n, GRID, GRID)


def _levels(d: FloatArray, upper: FloatArray, lower: FloatArray, twos: Bools) -> Signatures:
    """0 where |d| < 2/255, ±1 from there to the median of that sign, ±2 beyond."""
    pos, neg = d >= _TOLERANCE, d <= -_TOLERANCE
    pos2, neg2 = d > upper, d < lower
    if twos.any():  # image-match overwrites levels in turn: a difference of ±1 makes all ±2
        pos2 |= pos & (upper <= 1.0) & twos
        neg2 |= neg & (lower >= -1.0) & twos
    return pos.view(np.int8) + pos2.view(np.int8) - neg.view(np.int8) - neg2.view(np.int8)


def signatures_of_grids(grids: FloatArray) -> Signatures:
    """Signatures (n, 648) of grids of means (n, 9, 9), exactly as image-match makes them:
    differences to the 8 neighbours (0 off the grid), 0 where |d| < 2/255, each sign split
    at ``np.percentile``'s median into ±1 (ties included) and ±2. A pair's 2 differences
    are exact negatives: one sort of a grid's 272 |d| gives both medians."""
    g = np.asarray(grids, dtype=np.float64).reshape(-1, GRID * GRID)
    d = g.take(_A, axis=1)
    d -= g.take(_B, axis=1)
    p = np.abs(d)
    p.sort(axis=1)
    m = np.count_nonzero(p >= _TOLERANCE, axis=1)  # positive values, and as many negative
    last = p.shape[1] - 1
    lo = np.take_along_axis(p, np.minimum(last + 1 - m + (m - 1) // 2, last)[:, None], 1)
    hi = np.take_along_axis(p, np.minimum(last + 1 - m + m // 2, last)[:, None], 1)
    even = (m % 2 == 0)[:, None]  # numpy's interpolation at 0.5 is b - (b - a) * 0.5
    upper = np.where(even, hi - (hi - lo) * 0.5, lo)
    lower = np.where(even, -lo - (hi - lo) * 0.5, -lo)
    twos = p[:, -1:] >= 1.0
    forward = _levels(d, upper, lower, twos)
    backward = -forward
    odd = np.flatnonzero(upper[:, 0] != -lower[:, 0])
    backward[odd] = _levels(-d[odd], upper[odd], lower[odd], twos[odd])
    zeros = np.zeros((len(g), 1), dtype=np.int8)
    return np.concatenate([forward, backward, zeros], axis=1).take(_LAYOUT, axis=1)


def oriented(grids: FloatArray) -> FloatArray:
    """The 8 symmetries of each grid, (n, 8, 9, 9), in ``SYMMETRIES`` order, which is
    ``lookalike.signature.ORIENTATIONS``'s (np.rot90 after np.fliplr for the mirrors)."""
    g = np.asarray(grids, dtype=np.float64)
    turns = [np.rot90(g[:, :, ::-1] if mirror else g, k, axes=(1, 2)) for k, mirror in SYMMETRIES]
    return np.stack(turns, axis=1)


def edited(
    grids: FloatArray, rng: np.random.Generator, strength: float | FloatArray = 0.2
) -> FloatArray:
    """Near-duplicates of grids (n, 9, 9): noise of ``strength`` s (a number, or one per
    grid) times the grid's standard deviation on each mean, contrast × (1 ± s/2) and
    brightness ± s/10 (normal), clipped to [0, 1]. Median distance to the original's
    signature: 0.145 at s = 0.1, 0.21 at 0.2, 0.27 at 0.3, 0.32 at 0.4."""
    g = np.asarray(grids, dtype=np.float64)
    s = np.reshape(np.asarray(strength, dtype=np.float64), (-1, 1, 1))
    centre = g.mean(axis=(1, 2), keepdims=True)
    factor = 1.0 + s / 2 * rng.standard_normal((len(g), 1, 1))
    shift = s / 10 * rng.standard_normal((len(g), 1, 1))
    noise = s * g.std(axis=(1, 2), keepdims=True) * rng.standard_normal(g.shape)
    out: FloatArray = np.clip(centre + factor * (g - centre) + shift + noise, 0.0, 1.0)
    return out


def chunk(seed: int, index: int, size: int = 10_000) -> tuple[FloatArray, Signatures]:
    """Rows ``index * size`` to ``(index + 1) * size`` of collection ``seed``, made in
    blocks of ``size``: grids and signatures, from ``default_rng([seed, index])`` alone
    (bit-identical again with the same NumPy and BLAS)."""
    g = grids(np.random.default_rng([seed, index]), size)
    return g, signatures_of_grids(g)
