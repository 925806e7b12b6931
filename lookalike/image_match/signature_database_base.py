"""image-match's ``signature_database_base``: records, words, distances, and the base class
of its database drivers.

A record is image-match's dict: ``path``, ``signature`` (a list), ``metadata`` when given,
and ``simple_word_0`` … ``simple_word_{N-1}``, the signature cut into N overlapping words
of k values, squashed to {-1, 0, 1} and read as base-3 integers. A driver subclasses
``SignatureDatabaseBase`` with ``insert_single_record(rec)`` and
``search_single_record(rec)``; ``add_image`` and ``search_image`` do the rest.

One deliberate difference: ``search_image(all_orientations=True)`` searches the 8
symmetries of the square (4 rotations, each mirrored or not). image-match's loop searched
the identity three times, the colour-inverted image, one mirror and three rotations, and
missed the mirrored rotations; ``all_orientations="image-match"`` searches exactly those.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import signature as _signature
from ..orientations import ORIENTATIONS, turn
from .goldberg import ImageSignature, grey_of, is_rgb8

__all__ = [
    "SignatureDatabaseBase",
    "get_words",
    "make_record",
    "max_contrast",
    "normalized_distance",
    "words_to_int",
]

Record = dict[str, Any]
# image-match's own orientation loop, each transform once: identity, colour inversion,
# left-right mirror, and rotations by 90°, 180° and 270° (counter-clockwise, as np.rot90)
IMAGE_MATCH_TRANSFORMS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda g: g,
    lambda g: -g,
    np.fliplr,
    lambda g: np.rot90(g, 1),
    lambda g: np.rot90(g, 2),
    lambda g: np.rot90(g, 3),
)


class SignatureDatabaseBase:
    """Signatures stored and searched in some database: subclass with
    ``insert_single_record(rec)`` and ``search_single_record(rec)``, which returns the
    matches as dicts with at least ``id`` and ``dist`` (duplicates and any order allowed).

    ``k`` and ``N``: word length and count; ``n_grid`` and ``crop_percentile`` (and any
    further arguments) go to ``ImageSignature``; ``distance_cutoff``: the largest
    distance that counts as a match.
    """

    def __init__(
        self,
        k: int = 16,
        N: int = 63,
        n_grid: int = 9,
        crop_percentile: tuple[float, float] | None = (5, 95),
        distance_cutoff: float = 0.45,
        *signature_args: Any,
        **signature_kwargs: Any,
    ) -> None:
        for name, value in (("k", k), ("N", N), ("n_grid", n_grid)):
            if type(value) is not int:
                raise TypeError(f"{name} should be an integer")
        if type(distance_cutoff) is not float:
            raise TypeError("distance_cutoff should be a float")
        if distance_cutoff < 0.0:
            raise ValueError(f"distance_cutoff should be > 0 (got {distance_cutoff!r})")
        self.k, self.N, self.n_grid = k, N, n_grid
        self.distance_cutoff = distance_cutoff
        self.crop_percentile = crop_percentile
        self.gis = ImageSignature(n_grid, crop_percentile, *signature_args, **signature_kwargs)

    def search_single_record(self, rec: Record) -> Iterable[Record]:
        """The matches of one record (``make_record``'s format): for a subclass to write."""
        raise NotImplementedError

    def insert_single_record(self, rec: Record) -> None:
        """Store one record (``make_record``'s format): for a subclass to write."""
        raise NotImplementedError

    def add_image(
        self,
        path: str,
        img: Any = None,
        bytestream: bool = False,
        metadata: Any = None,
        refresh_after: bool = False,
    ) -> None:
        """Sign and store an image under ``path``: read from ``path`` itself, or from
        ``img`` (bytes with ``bytestream=True``, else another path or URL)."""
        rec = make_record(path, self.gis, self.k, self.N, img, bytestream, metadata)
        # image-match passed refresh_after to every driver, and so broke the ones (its
        # own MongoDB driver among them) whose insert takes no such argument
        if _accepts(self.insert_single_record, "refresh_after"):
            self.insert_single_record(rec, refresh_after=refresh_after)  # type: ignore[call-arg]
        else:
            self.insert_single_record(rec)

    def search_image(
        self, path: Any, all_orientations: bool | str = False, bytestream: bool = False
    ) -> list[Record]:
        """Matches of an image (path, URL, bytes with ``bytestream=True``, or array), each
        stored image once, nearest first. ``all_orientations``: also as each of the 8
        symmetries of the square (``True``), or as image-match's own loop
        (``"image-match"``, see the module's docstring)."""
        pixels = self.gis.pixels(path, bytestream)
        results: list[Record] = []
        for sig in self.query_signatures(pixels, all_orientations):
            results.extend(self.search_single_record(_record(path, sig, self.k, self.N)))
        seen: set[Any] = set()
        unique = []
        for item in results:
            if item["id"] not in seen:
                seen.add(item["id"])
                unique.append(item)
        return sorted(unique, key=itemgetter("dist"))

    def query_signatures(self, pixels: np.ndarray, all_orientations: bool | str) -> list[Any]:
        """The signatures ``search_image`` searches for, from decoded pixels."""
        if all_orientations == "image-match":
            grey = grey_of(pixels)
            return [
                self._signature(np.ascontiguousarray(transform(grey)))
                for transform in IMAGE_MATCH_TRANSFORMS
            ]
        if isinstance(all_orientations, str):
            raise ValueError('all_orientations is True, False or "image-match"')
        if not all_orientations:
            return [self._signature(pixels)]
        if self.gis.is_default and is_rgb8(pixels):
            return list(_signature.orientations(pixels))
        grey = grey_of(pixels)
        return [
            self._signature(np.ascontiguousarray(turn(grey, o))) for o in range(len(ORIENTATIONS))
        ]

    def _signature(self, pixels: np.ndarray) -> np.ndarray:
        return self.gis.generate_signature(pixels)


def make_record(
    path: Any,
    gis: ImageSignature,
    k: int,
    N: int,
    img: Any = None,
    bytestream: bool = False,
    metadata: Any = None,
) -> Record:
    """The record of an image: from ``img`` if given (bytes with ``bytestream=True``),
    else from ``path`` itself."""
    sig = (
        gis.generate_signature(img, bytestream) if img is not None else gis.generate_signature(path)
    )
    return _record(path, sig, k, N, metadata)


def _record(path: Any, sig: np.ndarray, k: int, n: int, metadata: Any = None) -> Record:
    record: Record = {"path": path, "signature": sig.tolist()}
    if metadata:
        record["metadata"] = metadata
    words = get_words(sig, k, n)
    max_contrast(words)
    for i, word in enumerate(words_to_int(words).tolist()):
        record[f"simple_word_{i}"] = word
    return record


def get_words(array: npt.NDArray[Any], k: int, N: int) -> npt.NDArray[np.int8]:
    """N words of k values from ``array``, starting at evenly spaced positions (words
    overlap; the last ones run past the end and are padded with zeros)."""
    length = array.shape[0]
    starts = np.linspace(0, length, N, endpoint=False).astype(int)
    if k > length:
        raise ValueError("Word length cannot be longer than array length")
    if starts.shape[0] > length:
        raise ValueError("Number of words cannot be more than array length")
    words = np.zeros((N, k), dtype=np.int8)
    for i, start in enumerate(starts):
        piece = array[start : start + k]
        words[i, : piece.shape[0]] = piece
    return words


def words_to_int(word_array: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Each word of {-1, 0, 1} values as a base-3 integer, its first value the least
    significant digit (all -1: 0; all 0: (3**k - 1) / 2)."""
    digits = 3 ** np.arange(word_array.shape[1])
    result: npt.NDArray[np.int64] = np.dot(word_array + 1, digits)
    return result


def max_contrast(array: npt.NDArray[Any]) -> None:
    """In place: positive values become 1, negative ones -1."""
    array[array > 0] = 1
    array[array < 0] = -1


def normalized_distance(
    _target_array: npt.ArrayLike, _vec: npt.ArrayLike, nan_value: float = 1.0
) -> npt.NDArray[np.float64]:
    """||vec − b|| / (||vec|| + ||b||) for each row b of the target array, as image-match
    computes it; ``nan_value`` for the 0/0 of two featureless signatures."""
    target = np.asarray(_target_array).astype(int)
    vec = np.asarray(_vec).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        distances: npt.NDArray[np.float64] = np.linalg.norm(vec - target, axis=1) / (
            np.linalg.norm(vec, axis=0) + np.linalg.norm(target, axis=1)
        )
    distances[np.isnan(distances)] = nan_value
    return distances


def _accepts(method: Callable[..., Any], name: str) -> bool:
    parameters: Sequence[inspect.Parameter] = list(inspect.signature(method).parameters.values())
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)
