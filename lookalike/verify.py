"""Geometric verification: whether two pictures show the same scene, and where.

Local features (ORB, through OpenCV: ``lookalike[verify]``) of both pictures, matched by
Hamming distance with Lowe's ratio test, one match per stored feature, then a robust fit
of an affine map (rotation, scales, shear, shift: RANSAC, ``estimateAffine2D``). A fit with
``MIN_INLIERS`` agreeing matches, sane scales and inliers spread over the stored picture
is a verified copy; it also tells which part of each picture the other one shows.

Both pictures are brought to a long side of ``SIDE`` pixels first (the stored one is a
256 px thumbnail: enlarged, it gives ORB detail enough for a crop of half its side).
The thresholds were chosen on bench/quality.py's DISC21-style edits: pairs of different
photos gave at most 4 inliers, copies tens to hundreds.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ConfigError
from .orientations import LAYOUTS, ORIENTATIONS, turn
from .records import Match, Region

__all__ = [
    "DETAILED",
    "MIN_INLIERS",
    "SIDE",
    "Features",
    "Query",
    "available",
    "checked",
    "features",
    "rectangles",
    "region",
]

SIDE = 512  # pixels of the long side both pictures are compared at
MIN_INLIERS = 12
DETAILED = 400  # features of each picture for a failed fit to say "not the same scene"
_FEATURES = 1000
_FAST_THRESHOLD = 10  # ORB's default 20 finds too few corners in soft photos
_RATIO = 0.8  # Lowe's ratio test
_RANSAC_PIXELS = 4.0
_SCALES = (1 / 8, 8.0)  # of the fit: beyond, a degenerate fit (points collapsed)
_ANISOTROPY = 2.5  # most ratio of the fit's two scales (a squashed copy: 1.4)
_MIN_SPREAD = 0.02  # of the stored picture's area the inliers' bounding box covers

_MIRROR = ORIENTATIONS.index("mirror")
_CANNY = (30, 90)  # edge thresholds of the rectangle finder, on the picture at SIDE
_AREAS = (0.06, 0.9)  # a rectangle's share of the picture
_FILL = 0.75  # least share of its bounding box a rectangle's outline fills

Box = tuple[float, float, float, float]


def available() -> bool:
    """Whether OpenCV is installed (the ``verify`` extra)."""
    return importlib.util.find_spec("cv2") is not None


@functools.cache
def _cv2() -> Any:
    """OpenCV, imported on first use (typed Any: its own type hints are partial)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - exercised where the extra is missing
        raise ConfigError("geometric verification needs: pip install 'lookalike[verify]'") from None
    return cv2


@dataclass(frozen=True, slots=True)
class Features:
    """A picture's ORB keypoints (N×2, in pixels of the picture at ``SIDE``), their
    descriptors (N×32 bytes) and that picture's width and height."""

    points: npt.NDArray[np.float32]
    descriptors: npt.NDArray[np.uint8] | None
    width: int
    height: int


class Query:
    """A query picture, verified against stored ones under the orientation each matched
    in: its features in each orientation computed once, when first needed."""

    def __init__(self, rgb: npt.NDArray[np.uint8]) -> None:
        # kept at the size it is compared at: a search holds no full-size pixels after
        # its decode slot (a 50-megapixel query is 150 MB)
        height, width = rgb.shape[:2]
        scale = SIDE / max(height, width)
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            rgb = _cv2().resize(np.ascontiguousarray(rgb), size, interpolation=_cv2().INTER_AREA)
        self.rgb = rgb
        self._turned: dict[int, Features] = {}
        self.stored: dict[str, Features | None] = {}  # by filepath, None: no thumbnail

    def region(self, stored: Features, orientation: str) -> Region | None:
        """``region`` of the query and a stored picture, the query turned by the
        ``orientation`` it matched in (a name of ``ORIENTATIONS``), else as it is, else
        mirrored (the CNN tells a mirrored copy poorly from the original); its query box
        on the query as sent."""
        for index in dict.fromkeys((ORIENTATIONS.index(orientation), 0, _MIRROR)):
            if index not in self._turned:
                self._turned[index] = features(turn(self.rgb, index))
            found = region(self._turned[index], stored)
            if found is not None:
                if index == 0:
                    return found
                unturned = _unturned(found.query, index)
                return Region(unturned, found.stored, found.overlap, found.inliers)
        return None

    def detailed(self) -> bool:
        """Whether the query, as it is, has ``DETAILED`` features or more."""
        if 0 not in self._turned:
            self._turned[0] = features(self.rgb)
        return len(self._turned[0].points) >= DETAILED


def checked(
    matches: list[Match],
    query: Query,
    thumbnails: Callable[[list[str]], dict[str, bytes]],
    most: int,
) -> list[Match]:
    """The matches, the first ``most`` of them checked against their stored thumbnails
    (``thumbnails`` reads those of some filepaths): ``verified`` True with the
    ``region``, or False when both pictures have ``DETAILED`` features and still no fit;
    None where it cannot tell (too few features, no thumbnail)."""
    first = [m for m in matches[:most] if m.verified is None]
    missing = [m.filepath for m in first if m.filepath not in query.stored]
    if missing:
        found = thumbnails(missing)
        for path in missing:
            query.stored[path] = _thumbnail_features(found.get(path))
    out = []
    for i, match in enumerate(matches):
        stored = query.stored.get(match.filepath) if i < most else None
        if stored is not None and match.verified is None:
            area = query.region(stored, match.orientation)
            if area is not None:
                match = dataclasses.replace(match, verified=True, region=area)
            elif query.detailed() and len(stored.points) >= DETAILED:
                match = dataclasses.replace(match, verified=False)  # else: cannot tell
        out.append(match)
    return out


def _thumbnail_features(thumbnail: bytes | None) -> Features | None:
    if not thumbnail:
        return None
    bgr = _cv2().imdecode(np.frombuffer(thumbnail, dtype=np.uint8), _cv2().IMREAD_COLOR)
    return None if bgr is None else features(_cv2().cvtColor(bgr, _cv2().COLOR_BGR2RGB))


def features(rgb: npt.NDArray[np.uint8]) -> Features:
    """The features of an RGB picture (H×W×3), brought to a long side of ``SIDE``."""
    grey = _grey(rgb)
    size = (grey.shape[1], grey.shape[0])
    orb = _cv2().ORB_create(_FEATURES, fastThreshold=_FAST_THRESHOLD)
    keypoints, descriptors = orb.detectAndCompute(grey, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return Features(points, descriptors, size[0], size[1])


def region(query: Features, stored: Features) -> Region | None:
    """The region two pictures share, if a fit verifies them as copies; None if not."""
    if query.descriptors is None or stored.descriptors is None:
        return None
    if len(query.points) < MIN_INLIERS or len(stored.points) < MIN_INLIERS:
        return None
    pairs = (
        _cv2().BFMatcher(_cv2().NORM_HAMMING).knnMatch(query.descriptors, stored.descriptors, k=2)
    )
    best: dict[int, Any] = {}  # one match per stored feature: many-to-one fits collapse
    for candidates in pairs:
        if len(candidates) == 2 and candidates[0].distance < _RATIO * candidates[1].distance:
            match = candidates[0]
            kept = best.get(match.trainIdx)
            if kept is None or match.distance < kept.distance:
                best[match.trainIdx] = match
    if len(best) < MIN_INLIERS:
        return None
    source = query.points[[m.queryIdx for m in best.values()]]
    target = stored.points[[m.trainIdx for m in best.values()]]
    fit, inliers = _cv2().estimateAffine2D(
        source, target, method=_cv2().RANSAC, ransacReprojThreshold=_RANSAC_PIXELS
    )
    if fit is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    stretches = np.linalg.svd(fit[:, :2], compute_uv=False)  # the fit's scale on each axis
    agreeing = target[inliers.ravel() == 1]
    spread = float(np.ptp(agreeing[:, 0]) * np.ptp(agreeing[:, 1]))
    sane = _SCALES[0] <= stretches[1] <= stretches[0] <= _SCALES[1]
    if not sane or stretches[0] > _ANISOTROPY * stretches[1]:
        return None
    if spread < _MIN_SPREAD * stored.width * stored.height:
        return None
    inverse = _cv2().invertAffineTransform(fit)
    in_query = _box(inverse, stored.width, stored.height, query.width, query.height)
    in_stored = _box(fit, query.width, query.height, stored.width, stored.height)
    if in_query is None or in_stored is None:
        return None
    x0, y0, x1, y1 = in_stored
    return Region(in_query, in_stored, (x1 - x0) * (y1 - y0), int(inliers.sum()))


def _box(
    fit: npt.NDArray[np.float64], width: int, height: int, to_width: int, to_height: int
) -> Box | None:
    """The bounding box of a ``width``×``height`` picture mapped by ``fit`` into one of
    ``to_width``×``to_height``, clipped to it, relative; None if it falls outside."""
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    mapped = corners @ fit[:, :2].T + fit[:, 2]
    x0, y0 = np.clip(mapped.min(axis=0) / (to_width, to_height), 0.0, 1.0)
    x1, y1 = np.clip(mapped.max(axis=0) / (to_width, to_height), 0.0, 1.0)
    if x1 <= x0 or y1 <= y0:
        return None
    return float(x0), float(y0), float(x1), float(y1)


def rectangles(rgb: npt.NDArray[np.uint8], most: int = 3) -> list[Box]:
    """Up to ``most`` rectangles that may be a picture inside this one (a photo in a
    screenshot, in a collage, in a frame), largest first, in relative coordinates: the
    bounding boxes of closed outlines of edges that nearly fill them."""
    grey = _grey(rgb)
    size = (grey.shape[1], grey.shape[0])
    edges = _cv2().dilate(_cv2().Canny(grey, *_CANNY), np.ones((5, 5), np.uint8))
    outlines, _ = _cv2().findContours(edges, _cv2().RETR_LIST, _cv2().CHAIN_APPROX_SIMPLE)
    found: list[tuple[float, Box]] = []
    for outline in outlines:
        x, y, w, h = _cv2().boundingRect(outline)
        share = w * h / (size[0] * size[1])
        if not _AREAS[0] <= share <= _AREAS[1]:
            continue
        if _cv2().contourArea(_cv2().convexHull(outline)) >= _FILL * w * h:
            box = (x / size[0], y / size[1], (x + w) / size[0], (y + h) / size[1])
            found.append((share, box))
    kept: list[Box] = []
    for _, box in sorted(found, reverse=True):
        if all(_iou(box, other) < 0.8 for other in kept):
            kept.append(box)
    return kept[:most]


def _grey(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The picture in grey, its long side ``SIDE``: shrunk by area averaging, enlarged
    (a thumbnail, a tiny copy) bicubically."""
    grey = _cv2().cvtColor(np.ascontiguousarray(rgb), _cv2().COLOR_RGB2GRAY)
    height, width = grey.shape
    scale = SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrink = _cv2().INTER_AREA if scale < 1 else _cv2().INTER_CUBIC
    return np.asarray(_cv2().resize(grey, size, interpolation=shrink), dtype=np.uint8)


def _iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _unturned(box: Box, orientation: int) -> Box:
    """A box on a picture turned by ``orientation``, on the picture before the turn."""
    transposed, flip_rows, flip_columns = LAYOUTS[orientation]
    xs, ys = (box[0], box[2]), (box[1], box[3])
    if flip_columns:
        xs = (1 - xs[1], 1 - xs[0])
    if flip_rows:
        ys = (1 - ys[1], 1 - ys[0])
    if transposed:
        xs, ys = ys, xs
    return xs[0], ys[0], xs[1], ys[1]
