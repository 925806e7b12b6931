"""image-match's ``goldberg`` module: ``ImageSignature``, for every parameter it takes.

With the default parameters, a signature is ``lookalike.signature``'s (the certified fast
path, bit-identical to image-match). Any other parameters go through the steps below,
each computing what image-match's step of the same name computes, with the same NumPy
reductions, so that the values agree to the last bit (pinned by golden vectors that
image-match itself made: ``tests/golden/image_match.json``).

Inputs: a path, an ``http(s)`` URL (fetched under lookalike's address policy and limits,
``LOOKALIKE_*`` settings), bytes with ``bytestream=True``, or an array. Files and bytes are
decoded as image-match decoded bytes (``Image.convert("RGB")``, EXIF orientation ignored).
Where image-match only warned and returned a meaningless signature (a patch outside the
image, as ``fix_ratio`` makes on pictures that are not square), a ``ValueError`` says so.
"""

from __future__ import annotations

import os
from numbers import Real
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import signature as _signature
from ..config import Settings
from ..errors import ImageTooLarge, InvalidImage
from ..fetch import AddressPolicy, fetch
from ..images import decode, read

__all__ = ["CorruptImageError", "ImageSignature"]

FloatArray = npt.NDArray[np.floating[Any]]
_LUMA = (0.2125, 0.7154, 0.0721)  # scikit-image's rgb2gray, which image-match calls
# Each grid point's neighbours (row, column offsets) in image-match's order.
_DIAGONAL = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_STRAIGHT = ((-1, 0), (0, -1), (0, 1), (1, 0))


class CorruptImageError(InvalidImage, RuntimeError):
    """The input is not an image that can be decoded (image-match's name for it)."""


class ImageSignature:
    """The Goldberg et al. image signature, with image-match 1.1.2's parameters.

    ``n``: the grid is n × n; ``crop_percentiles``: the share of variation the crop keeps
    (None: no crop); ``P``: the side of each averaged patch (None: from the image's size);
    ``diagonal_neighbors``: 8 neighbours, else 4; ``identical_tolerance``: differences
    below it count as 0; ``n_levels``: levels each side of 0; ``fix_ratio``: one crop
    range for both axes, the larger. ``settings`` (lookalike's) give the limits on bytes,
    pixels and URL fetches; by default, those of the ``LOOKALIKE_*`` environment.
    """

    def __init__(
        self,
        n: int = 9,
        crop_percentiles: tuple[float, float] | None = (5, 95),
        P: int | None = None,
        diagonal_neighbors: bool = True,
        identical_tolerance: float = 2 / 255.0,
        n_levels: int = 2,
        fix_ratio: bool = False,
        *,
        settings: Settings | None = None,
    ) -> None:
        if crop_percentiles is not None:
            if len(crop_percentiles) != 2:
                raise ValueError("crop_percentiles should be a two-value tuple, or None")
            lower, upper = crop_percentiles
            if not 0 <= lower < upper <= 100:
                raise ValueError(
                    f"crop_percentiles should rise within 0..100 (got {crop_percentiles!r})"
                )
            self.lower_percentile, self.upper_percentile = lower, upper
        else:
            self.lower_percentile, self.upper_percentile = 0, 100
        self.crop_percentiles = crop_percentiles
        if not _is_int(n) or n < 2:
            raise ValueError(f"n should be an integer greater than 1 (got {n!r})")
        if P is not None and (not _is_int(P) or P < 1):
            raise ValueError(f"P should be an integer of at least 1, or None (got {P!r})")
        if not _is_bool(diagonal_neighbors) or not _is_bool(fix_ratio):
            raise TypeError("diagonal_neighbors and fix_ratio should be booleans")
        if not _is_number(identical_tolerance):
            raise TypeError("identical_tolerance should be a number between 0 and 1")
        if not 0.0 <= identical_tolerance <= 1.0:
            raise ValueError(f"identical_tolerance should be in 0..1 (got {identical_tolerance!r})")
        if not _is_int(n_levels) or n_levels < 1:
            raise ValueError(f"n_levels should be a positive integer (got {n_levels!r})")
        self.n: int = n
        self.P: int | None = P
        self.n_levels: int = n_levels
        self.diagonal_neighbors: bool = diagonal_neighbors
        self.fix_ratio: bool = fix_ratio
        self.identical_tolerance: float = identical_tolerance
        self.sig_length: int = n * n * (8 if diagonal_neighbors else 4)
        self.handle_mpo = True
        self.settings: Settings = (
            settings if settings is not None else Settings.from_env(os.environ)
        )
        self.is_default: bool = (
            n == 9
            and crop_percentiles is not None
            and tuple(crop_percentiles) == (5, 95)
            and P is None
            and diagonal_neighbors
            and identical_tolerance == 2 / 255.0
            and n_levels == 2
            and not fix_ratio
        )

    # -- the signature --------------------------------------------------------------------

    def generate_signature(self, path_or_image: Any, bytestream: bool = False) -> np.ndarray:
        """The signature (int8, n·n·8 values, or n·n·4 without diagonal neighbours) of a
        path, URL, bytes (``bytestream=True``) or array."""
        pixels = self.pixels(path_or_image, bytestream)
        if self.is_default and (
            is_rgb8(pixels) or (pixels.ndim == 2 and pixels.dtype == np.float64)
        ):
            signature: np.ndarray = _signature.signature(pixels)
            return signature
        return self.signature_of_grey(grey_of(pixels))

    def signature_of_grey(self, grey: FloatArray) -> np.ndarray:
        """Steps 2–5 of the paper on a grey image, with this generator's parameters."""
        window = None
        if self.crop_percentiles is not None:
            window = self.crop_image(
                grey, self.lower_percentile, self.upper_percentile, self.fix_ratio
            )
        rows, columns = self.compute_grid_points(grey, n=self.n, window=window)
        means = self.compute_mean_level(grey, rows, columns, P=self.P)
        differences = self.compute_differentials(means, self.diagonal_neighbors)
        self.normalize_and_threshold(differences, self.identical_tolerance, self.n_levels)
        return np.ravel(differences).astype(np.int8)

    def pixels(self, source: Any, bytestream: bool = False) -> np.ndarray:
        """The pixels a signature is made of: 8-bit RGB for files, URLs and bytes, decoded
        within this generator's limits; arrays as they come (checked). Undecodable input
        raises ``CorruptImageError``; input over the limits, ``ImageTooLarge``."""
        if isinstance(source, np.ndarray):
            return _checked_array(source)
        try:
            return self._decoded(source, bytestream)
        except ImageTooLarge:
            raise
        except InvalidImage as error:
            raise CorruptImageError(str(error)) from error

    def _decoded(self, source: Any, bytestream: bool) -> np.ndarray:
        settings = self.settings
        bytes_limit, pixels_limit = settings.max_image_bytes, settings.max_image_pixels
        if not bytestream:
            if isinstance(source, bytes):  # image-match took bytes without bytestream as a path
                source = os.fsdecode(source)
            if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
                policy = AddressPolicy.from_settings(settings)
                source = fetch(
                    source,
                    max_bytes=bytes_limit,
                    policy=policy,
                    timeout=settings.fetch_timeout,
                    connect_timeout=settings.fetch_connect_timeout,
                )
            elif isinstance(source, str | os.PathLike):
                return read(
                    source, max_bytes=bytes_limit, max_pixels=pixels_limit, as_image_match=True
                )
            else:
                raise TypeError("Path or image required.")
        if not isinstance(source, bytes | bytearray | memoryview):
            raise TypeError("bytestream=True needs the image's bytes")
        return decode(
            bytes(source), max_bytes=bytes_limit, max_pixels=pixels_limit, as_image_match=True
        )

    # -- the steps, as image-match exposes them ---------------------------------------------

    @staticmethod
    def preprocess_image(
        image_or_path: Any, bytestream: bool = False, handle_mpo: bool = False
    ) -> FloatArray:
        """Step 1: the grey levels (scikit-image's ``rgb2gray``) of a path, URL, bytes or
        array, in the default ``LOOKALIKE_*`` limits."""
        return grey_of(ImageSignature().pixels(image_or_path, bytestream))

    @staticmethod
    def crop_image(
        image: FloatArray,
        lower_percentile: float = 5,
        upper_percentile: float = 95,
        fix_ratio: bool = False,
    ) -> list[tuple[int, int]]:
        """Step 2a: ``[(top, bottom), (left, right)]``, the window holding the middle
        share of the image's variation along each axis."""
        along_rows = np.cumsum(np.sum(np.abs(np.diff(image, axis=1)), axis=1))
        along_columns = np.cumsum(np.sum(np.abs(np.diff(image, axis=0)), axis=0))
        rows = _limits(along_rows, lower_percentile, upper_percentile, image.shape[0])
        columns = _limits(along_columns, lower_percentile, upper_percentile, image.shape[1])
        if fix_ratio:
            wider = rows if rows[1] - rows[0] > columns[1] - columns[0] else columns
            return [wider, wider]
        return [rows, columns]

    @staticmethod
    def compute_grid_points(
        image: FloatArray, n: int = 9, window: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step 2b: the rows and the columns of the n × n grid, inside ``window``."""
        if window is None:
            window = [(0, image.shape[0]), (0, image.shape[1])]
        (top, bottom), (left, right) = window
        rows = np.linspace(top, bottom, n + 2, dtype=int)[1:-1]
        columns = np.linspace(left, right, n + 2, dtype=int)[1:-1]
        return rows, columns

    @staticmethod
    def compute_mean_level(
        image: FloatArray,
        x_coords: np.ndarray,
        y_coords: np.ndarray,
        P: float | None = None,
    ) -> FloatArray:
        """Step 3: the mean grey level of the P × P patch at each grid point (ValueError
        for a patch with no pixels, where image-match warned and gave NaN)."""
        if P is None:
            P = max(2.0, int(0.5 + min(image.shape) / 20.0))
        means = np.zeros((x_coords.shape[0], y_coords.shape[0]))
        for i, x in enumerate(x_coords):
            top = int(max(x - P / 2, 0))
            bottom = int(min(top + P, image.shape[0]))
            for j, y in enumerate(y_coords):
                left = int(max(y - P / 2, 0))
                right = int(min(left + P, image.shape[1]))
                patch = image[top:bottom, left:right]
                if patch.size == 0:
                    raise ValueError(
                        f"the patch at grid point ({x}, {y}) lies outside the "
                        f"{image.shape[0]}×{image.shape[1]} image (fix_ratio on a picture "
                        "that is not square?)"
                    )
                means[i, j] = np.mean(patch)
        return means

    @staticmethod
    def compute_differentials(
        grey_level_matrix: FloatArray, diagonal_neighbors: bool = True
    ) -> FloatArray:
        """Step 4a: each grid point's level minus each neighbour's, (n, n, 8) in the order
        upper left, up, upper right, left, right, lower left, down, lower right, or
        (n, n, 4) without the diagonals; 0 where a neighbour is off the grid."""
        offsets = _DIAGONAL if diagonal_neighbors else _STRAIGHT
        rows, columns = grey_level_matrix.shape
        padded = np.zeros((rows + 2, columns + 2), dtype=np.float64)
        padded[1:-1, 1:-1] = grey_level_matrix
        out = np.zeros((rows, columns, len(offsets)), dtype=np.float64)
        for k, (dy, dx) in enumerate(offsets):
            neighbour = padded[1 + dy : rows + 1 + dy, 1 + dx : columns + 1 + dx]
            out[:, :, k] = grey_level_matrix - neighbour
        # off the grid there is no neighbour: 0, not the point's own level
        out[0, :, [k for k, (dy, _) in enumerate(offsets) if dy < 0]] = 0.0
        out[-1, :, [k for k, (dy, _) in enumerate(offsets) if dy > 0]] = 0.0
        out[:, 0, [k for k, (_, dx) in enumerate(offsets) if dx < 0]] = 0.0
        out[:, -1, [k for k, (_, dx) in enumerate(offsets) if dx > 0]] = 0.0
        return out

    @staticmethod
    def normalize_and_threshold(
        difference_array: FloatArray, identical_tolerance: float = 2 / 255.0, n_levels: int = 2
    ) -> None:
        """Step 4b, in place: differences under the tolerance become 0; each sign is split
        at its percentiles into ``n_levels`` equally filled levels, ±1 … ±n_levels."""
        near = np.abs(difference_array) < identical_tolerance
        difference_array[near] = 0.0
        if np.all(near):
            return
        positive = difference_array[difference_array > 0.0]
        negative = difference_array[difference_array < 0.0]
        # later levels overwrite earlier ones where their closed intervals meet, as
        # image-match's do; a sign with no values has nothing to split
        if positive.size:
            cuts = np.percentile(positive, np.linspace(0, 100, n_levels + 1))
            for level in range(n_levels):
                inside = (difference_array >= cuts[level]) & (difference_array <= cuts[level + 1])
                difference_array[inside] = level + 1
        if negative.size:
            cuts = np.percentile(negative, np.linspace(100, 0, n_levels + 1))
            for level in range(n_levels):
                inside = (difference_array <= cuts[level]) & (difference_array >= cuts[level + 1])
                difference_array[inside] = -(level + 1)

    @staticmethod
    def normalized_distance(_a: npt.ArrayLike, _b: npt.ArrayLike) -> float:
        """||b − a|| / (||b|| + ||a||), as image-match computes it: NaN for two
        featureless signatures (``lookalike.signature.distance`` makes that 1)."""
        a = np.asarray(_a).astype(int)
        b = np.asarray(_b).astype(int)
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.linalg.norm(b - a) / (np.linalg.norm(b) + np.linalg.norm(a)))


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def is_rgb8(pixels: np.ndarray) -> bool:
    return pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8


def _limits(cumulative: FloatArray, lower: float, upper: float, size: int) -> tuple[int, int]:
    """Where the cumulative variation passes its lower and upper percentiles; fixed
    margins when the axis is featureless."""
    low = int(np.searchsorted(cumulative, np.percentile(cumulative, lower), side="right"))
    high = int(np.searchsorted(cumulative, np.percentile(cumulative, upper), side="left"))
    if low > high:
        return int(lower / 100.0 * size), int(upper / 100.0 * size)
    return low, high


def _checked_array(image: np.ndarray) -> np.ndarray:
    """A grey (H×W) or colour (H×W×3, or ×4: alpha ignored) array of a dtype that
    scikit-image's ``img_as_float`` scales: unsigned integers, floats, booleans."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an H×W grey or H×W×3 RGB array, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot sign an empty image of shape {image.shape}")
    if image.dtype.kind not in "ufb":
        raise ValueError(f"expected unsigned integer, float or boolean pixels, got {image.dtype}")
    return image


def grey_of(pixels: np.ndarray) -> FloatArray:
    """scikit-image's ``rgb2gray``: colour scaled to [0, 1] as ``img_as_float`` scales it,
    then its luma; a grey array (2-D) as it is, in floating point, as the scikit-image
    releases of image-match's day passed it through."""
    if pixels.ndim == 2:
        if pixels.dtype.kind == "f":
            return np.ascontiguousarray(pixels)
        return np.ascontiguousarray(pixels, dtype=np.float64)
    if is_rgb8(pixels):
        return _signature.grey(pixels)
    scaled: FloatArray
    if pixels.dtype.kind == "f":
        scaled = pixels.astype(np.float32 if pixels.itemsize <= 4 else np.float64)
    elif pixels.dtype.kind == "b":
        scaled = pixels.astype(np.float64)
    else:
        scaled = np.multiply(pixels, 1.0 / np.iinfo(pixels.dtype).max, dtype=np.float64)
    grey: FloatArray = scaled @ np.array(_LUMA, dtype=scaled.dtype)
    return grey
