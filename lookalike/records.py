"""Value objects that cross layers — records and matches between the service and the
stores, the footprint of a reduced decode between ``images`` and ``signature`` — and the
rules of what a filepath, metadata and a filter may be, checked once where they enter."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidRequest

__all__ = [
    "INT64_RANGE",
    "INVALID_METADATA",
    "MAX_FILEPATH_BYTES",
    "MAX_FILTER_KEYS",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_THUMBNAIL_BYTES",
    "THUMBNAIL_TYPES",
    "BatchItem",
    "Comparison",
    "FileResult",
    "Filter",
    "Footprint",
    "Match",
    "Metadata",
    "Preview",
    "Record",
    "Region",
    "check_filepath",
    "check_filter",
    "check_metadata",
    "check_preview",
    "loads_metadata",
    "matches_filter",
    "score_of",
    "servable",
]

log = logging.getLogger("lookalike")

Metadata = dict[str, Any]
Filter = Mapping[str, Any]
"""Metadata keys and the JSON scalars they must equal."""


_SHA256 = re.compile(r"[0-9a-f]{64}")
INT64_RANGE = (-(2**63), 2**63 - 1)
"""Integers every store keeps as integers (JSON stores such as Milvus hold int64)."""
MAX_FILEPATH_BYTES = 4096
"""Longest filepath, in bytes of UTF-8."""
MAX_METADATA_BYTES = 65_536
"""Largest metadata object, in bytes of its JSON (UTF-8)."""
MAX_METADATA_DEPTH = 32
"""Deepest nesting of objects and lists in metadata; the top object is level 1."""
MAX_FILTER_KEYS = 32
"""Most keys a metadata filter may ask to match."""
MAX_THUMBNAIL_BYTES = 48_000
"""Largest thumbnail a store keeps, in bytes: as base64 it fits a Milvus VARCHAR (65,535
bytes). A thumbnail of 256 px is typically 5–15 KB."""
THUMBNAIL_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
"""The media types a thumbnail may have: it is served with its type, so only images."""
INVALID_METADATA = "lookalike_invalid_metadata"
"""The one key of the metadata served in place of a stored value that cannot be served."""


def check_filepath(filepath: str, *, new: bool = False) -> str:
    """A valid filepath, else InvalidRequest: non-empty Unicode text without NUL, at most
    ``MAX_FILEPATH_BYTES``. A ``new`` one (being stored) may not hold control characters
    (CR, LF, escapes: they forge log lines and terminal output) nor U+FFFD, the mark a
    decoder leaves where the bytes sent were not UTF-8. Lookups accept what older versions
    stored, so that such records can still be found and deleted."""
    if not isinstance(filepath, str) or not filepath:
        raise InvalidRequest("filepath must be a non-empty string")
    if "\x00" in filepath:
        raise InvalidRequest("filepath must not contain NUL characters")
    try:
        size = len(filepath.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequest("filepath is not valid Unicode text (a lone surrogate)") from None
    if size > MAX_FILEPATH_BYTES:
        raise InvalidRequest(f"filepath is over {MAX_FILEPATH_BYTES} bytes ({size})")
    if new:
        if "\ufffd" in filepath:
            raise InvalidRequest("filepath is not valid UTF-8 (it holds U+FFFD)")
        if any(unicodedata.category(c) == "Cc" for c in filepath):
            raise InvalidRequest("filepath must not contain control characters (CR, LF, ESC…)")
    return filepath


def check_metadata(metadata: Metadata | None) -> Metadata | None:
    """A private copy of metadata that every store can keep and every answer can carry,
    else InvalidRequest: a JSON object of valid Unicode text (no lone surrogates, no NUL),
    finite numbers, integers within ``INT64_RANGE``, nested at most ``MAX_METADATA_DEPTH``
    levels, at most ``MAX_METADATA_BYTES`` as JSON."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be a JSON object")
    _check_value(metadata, 1)
    text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(f"metadata is over {MAX_METADATA_BYTES} bytes as JSON ({size})")
    copy: Metadata = json.loads(text)
    return copy


def _check_value(value: Any, depth: int) -> None:
    if isinstance(value, str):
        _check_text(value, "metadata text")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            raise InvalidRequest("metadata integers must be within 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest("metadata must be plain JSON without NaN or Infinity")
    elif isinstance(value, dict | list):
        if depth > MAX_METADATA_DEPTH:
            raise InvalidRequest(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidRequest("metadata keys must be strings")
                _check_text(key, "metadata keys")
                _check_value(item, depth + 1)
        else:
            for item in value:
                _check_value(item, depth + 1)
    else:
        raise InvalidRequest(f"metadata must be plain JSON, not {type(value).__name__}")


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidRequest(f"{what} must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} must be valid Unicode (no lone surrogates)") from None


def check_filter(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A metadata equality filter, else InvalidRequest: at most ``MAX_FILTER_KEYS``
    non-empty keys of valid Unicode text, each wanting a string, a finite number, an
    integer within ``INT64_RANGE`` or a boolean."""
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise InvalidRequest("filter must be a JSON object of metadata keys and values")
    if len(where) > MAX_FILTER_KEYS:
        raise InvalidRequest(f"filter has {len(where)} keys: at most {MAX_FILTER_KEYS}")
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise InvalidRequest("filter keys must be non-empty strings")
        _check_text(key, "filter keys")
        if not isinstance(value, str | int | float | bool):
            raise InvalidRequest(f"filter value for {key!r} must be a string, number or boolean")
        if isinstance(value, str):
            _check_text(value, f"filter value for {key!r}")
        if isinstance(value, int) and not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            raise InvalidRequest(f"filter value for {key!r} is beyond 64-bit integers")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(f"filter value for {key!r} must be a finite number")
    return dict(where)


def matches_filter(metadata: Metadata | None, where: Filter) -> bool:
    """True if ``metadata`` satisfies the equality filter (the reference semantics)."""
    if not where:
        return True
    if not metadata:
        return False
    for key, wanted in where.items():
        if key not in metadata:
            return False
        have = metadata[key]
        if isinstance(wanted, bool) or isinstance(have, bool):
            if not (isinstance(wanted, bool) and isinstance(have, bool) and have == wanted):
                return False
        elif isinstance(wanted, int | float) and isinstance(have, int | float):
            if have != wanted:
                return False
        elif type(have) is not type(wanted) or have != wanted:
            return False
    return True


def loads_metadata(text: str | None) -> Metadata | None:
    """Metadata from the JSON text a store kept; text that does not parse any more (an
    older version's, nested past the parser's depth) reads as ``{INVALID_METADATA: …}``."""
    if text is None:
        return None
    try:
        value: Metadata | None = json.loads(text)
    except (RecursionError, ValueError) as problem:
        log.warning("stored metadata cannot be read: %s", problem)
        return {INVALID_METADATA: "the stored metadata cannot be read"}
    return value


def servable(match: Match) -> Match:
    """The match as it can be answered: metadata stored by an older version that breaks
    these rules (it would not serialise, or not as UTF-8) is replaced by
    ``{INVALID_METADATA: reason}``, with a warning, instead of failing the whole answer."""
    if match.metadata is None:
        return match
    try:
        _check_value(match.metadata, 1)
    except InvalidRequest as problem:
        log.warning("stored metadata of %r cannot be served: %s", match.filepath, problem)
        return dataclasses.replace(match, metadata={INVALID_METADATA: str(problem)})
    return match


def score_of(distance: float) -> float:
    """Match's score: 100 × (1 − distance); 100 is identical. For signatures the distance
    is image-match's normalised distance; for embeddings it is 1 − cosine similarity."""
    return 100.0 * (1.0 - distance)


@dataclass(frozen=True, slots=True)
class Preview:
    """What is kept of a stored image's source: its size upright (as it was signed), its
    file's length in bytes, a small thumbnail of it (None when thumbnails are off, or
    when it was read without one), and, to tell an unchanged file from a changed one,
    the SHA-256 of its bytes (hex) and, when it was added from a local file, that file's
    modification time (None where a store written before kept neither)."""

    width: int
    height: int
    file_bytes: int
    thumbnail: bytes | None = field(default=None, repr=False)
    media_type: str = "image/jpeg"
    sha256: str | None = None
    modified: float | None = None

    def to_json(self) -> dict[str, int]:
        """The keys a search result gains (old clients ignore them)."""
        return {"width": self.width, "height": self.height, "bytes": self.file_bytes}

    def without_thumbnail(self) -> Preview:
        return dataclasses.replace(self, thumbnail=None)


def check_preview(preview: Preview | None) -> Preview | None:
    """A preview a store may keep and serve, else ValueError: positive sizes, a hash of
    64 hex digits, a finite time, a thumbnail of at most ``MAX_THUMBNAIL_BYTES`` of one of
    ``THUMBNAIL_TYPES``."""
    if preview is None:
        return None
    sizes = (preview.width, preview.height, preview.file_bytes)
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2**63 for n in sizes):
        raise ValueError(f"a preview's width, height and bytes are positive integers: {sizes}")
    if preview.media_type not in THUMBNAIL_TYPES:
        raise ValueError(
            f"a thumbnail is one of {sorted(THUMBNAIL_TYPES)}, not {preview.media_type!r}"
        )
    if preview.sha256 is not None and not _SHA256.fullmatch(str(preview.sha256)):
        raise ValueError("a preview's sha256 is 64 lower-case hexadecimal digits")
    modified = preview.modified
    if modified is not None and not (isinstance(modified, float) and math.isfinite(modified)):
        raise ValueError(f"a preview's modification time is a finite float: {modified!r}")
    thumbnail = preview.thumbnail
    if thumbnail is not None:
        if not isinstance(thumbnail, bytes) or not thumbnail:
            raise ValueError("a thumbnail is non-empty bytes")
        if len(thumbnail) > MAX_THUMBNAIL_BYTES:
            raise ValueError(
                f"a thumbnail is at most {MAX_THUMBNAIL_BYTES} bytes ({len(thumbnail)})"
            )
    return preview


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One stored image: its key, its signature (int8[648]), its metadata and, when the
    collection has embeddings, its unit-length embedding (float32[1280], values that
    float16 holds exactly, so every backend stores it without loss).

    ``preview`` is written with the record and replaced with it (a record added without
    one has none); stores read it apart, with ``Backend.previews``, so ``get`` leaves it
    None."""

    filepath: str
    signature: npt.NDArray[np.int8]
    metadata: Metadata | None = None
    created: float | None = None
    updated: float | None = None
    embedding: npt.NDArray[np.float32] | None = None
    preview: Preview | None = None


@dataclass(frozen=True, slots=True)
class Region:
    """Where a query and a stored picture show the same scene, in relative coordinates
    ``[x0, y0, x1, y1]``: ``query``, the part of the query that shows the stored picture;
    ``stored``, the part of the stored picture that the query shows; ``overlap``, that
    part's share of the stored picture; ``inliers``, the local matches that agree."""

    query: tuple[float, float, float, float]
    stored: tuple[float, float, float, float]
    overlap: float
    inliers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "query": [round(v, 4) for v in self.query],
            "stored": [round(v, 4) for v in self.stored],
            "overlap": round(self.overlap, 4),
        }


@dataclass(frozen=True, slots=True)
class Match:
    """One search result. ``orientation`` names the transform of the query image under
    which it matched (one of ``signature.ORIENTATIONS``, "identity" if not turned);
    ``method`` says what found it, and so what ``distance`` means (see ``score_of``).
    ``verified`` says whether local features confirmed it (None: not checked) and
    ``region`` which part of each picture the other shows, when they did."""

    filepath: str
    distance: float
    orientation: str = "identity"
    metadata: Metadata | None = field(default=None, compare=False)
    method: str = "signature"
    preview: Preview | None = field(default=None, compare=False)  # sizes only
    verified: bool | None = field(default=None, compare=False)
    region: Region | None = field(default=None, compare=False)

    @property
    def score(self) -> float:
        return score_of(self.distance)

    def to_json(self) -> dict[str, Any]:
        """The result object of the HTTP API and of ``lookalike search --json``: Match's
        keys, then lookalike's (and the image's sizes, when the store kept them)."""
        out = {
            "score": self.score,
            "filepath": self.filepath,
            "metadata": self.metadata,
            "distance": self.distance,
            "orientation": self.orientation,
            "method": self.method,
        }
        if self.verified is not None:
            out["verified"] = self.verified
            if self.region is not None:
                out["region"] = self.region.to_json()
        return out if self.preview is None else {**out, **self.preview.to_json()}


@dataclass(frozen=True, slots=True)
class Comparison:
    """How alike two images are: Match's score, the distance and the orientation used."""

    distance: float
    orientation: str = "identity"
    method: str = "signature"
    scores: dict[str, float] | None = None  # each method's score, when there are two

    @property
    def score(self) -> float:
        return score_of(self.distance)

    def to_json(self) -> dict[str, Any]:
        """The result object of ``/compare`` and of ``lookalike compare --json``."""
        out = {
            "score": self.score,
            "distance": self.distance,
            "orientation": self.orientation,
            "method": self.method,
        }
        return out if self.scores is None else {**out, "scores": self.scores}


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One image of a batch to add: its bytes or its URL, with the filepath and metadata
    to store it under; ``error`` says why it cannot be added when the request already
    shows it (it then fails alone)."""

    filepath: str | None
    content: bytes | None = field(default=None, repr=False)
    url: str | None = None
    metadata: Metadata | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FileResult:
    """The outcome of adding one file: ``error`` is None when it was stored, or when it
    was ``unchanged`` (stored before with the same content, so not read again)."""

    filepath: str
    error: str | None = None
    unchanged: bool = False


@dataclass(frozen=True, slots=True)
class Footprint:
    """Where the pixels of a reduced decode lie on the full-size picture: along each axis
    (rows, columns), pixel i covers the full-size pixels from ``scale × i − offset`` up
    to ``scale × (i + 1) − offset``, clipped to ``shape`` (the full size). The offset is
    0 where the reduced grid starts at the picture's first pixel; a flip anchors it at
    the other end."""

    scale: int
    shape: tuple[int, int]
    offsets: tuple[int, int] = (0, 0)

    def turned(self, transposed: bool, flip_rows: bool, flip_columns: bool) -> Footprint:
        """The footprint of the pixels turned by a layout (``orientations.LAYOUTS``):
        transposed, then rows and/or columns reversed."""
        shape, offsets = self.shape, self.offsets
        if transposed:
            shape, offsets = (shape[1], shape[0]), (offsets[1], offsets[0])
        flips = (flip_rows, flip_columns)
        return Footprint(
            self.scale,
            shape,
            (
                offsets[0] if not flips[0] else self._far_offset(shape[0], offsets[0]),
                offsets[1] if not flips[1] else self._far_offset(shape[1], offsets[1]),
            ),
        )

    @property
    def reduced_shape(self) -> tuple[int, int]:
        """(height, width) of the reduced pixels."""
        return self.reduced_size(self.shape[0]), self.reduced_size(self.shape[1])

    def reduced_size(self, full: int) -> int:
        """Reduced pixels along an axis of ``full`` pixels (libjpeg rounds up)."""
        return -(-full // self.scale)

    def _far_offset(self, full: int, offset: int) -> int:
        return self.scale * self.reduced_size(full) - full - offset
