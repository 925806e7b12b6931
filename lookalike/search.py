"""Search policy, pure: what a request's cutoffs mean for each method, and how hybrid
results are fused, vetoed and collapsed.

Searches come in three methods (``records.METHODS``): ``signature`` compares Goldberg
signatures (copies, edits, rotations); ``embedding`` compares CNN embeddings when the
collection has them (look-alikes and crops); ``hybrid`` runs both and puts each image at
the better of its two distances, an embedding distance first scaled onto the
signature's (``hybrid_scale``) so that the two default cutoffs coincide; a signature
match the signature is unsure of is dropped when the embeddings disagree (``vetoed``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import islice
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from .config import METHODS, Settings
from .errors import InvalidRequest
from .records import Comparison, Filter, Match, check_filter, servable
from .vectors import cosine_distances

__all__ = [
    "SIGNATURE_SURE",
    "SearchOptions",
    "SearchParameters",
    "chosen_comparison",
    "collapsed",
    "fused",
    "hybrid_scale",
    "method_of",
    "results",
    "sure_distance",
    "sure_embedding_distance",
    "vetoed",
    "with_verdicts",
]

SIGNATURE_SURE = 0.40
"""A signature distance below which the same picture is very likely (image-match's 0.40)."""

_COLLAPSE_FETCH = 10  # a collapsed search looks at 10 × limit matches ...
_COLLAPSE_MOST = 10_000  # ... or at most this many


class SearchParameters(TypedDict, total=False):
    """What a search request may set; each is optional (None: the setting's default)."""

    limit: int | None
    max_distance: float | None
    min_score: float | None
    where: Filter | None
    method: str | None
    collapse: str | None


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """A search request, checked: its method, how many results, the filter, the collapse
    key, the cutoff of each method on that method's own scale, and hybrid's constants."""

    method: str
    limit: int
    where: Filter | None
    collapse: str | None
    signature_cutoff: float
    embedding_cutoff: float
    hybrid_scale: float
    veto_distance: float

    @classmethod
    def of(cls, settings: Settings, **parameters: object) -> SearchOptions:
        """The options a request's ``SearchParameters`` mean; InvalidRequest if one is
        malformed. ``min_score`` (0–100) and ``max_distance`` are two spellings of one
        cutoff, on the method's scale; the stricter wins. In hybrid, a cutoff given is on
        the signature's scale, and the embedding's follows it."""
        p = SearchParameters(**parameters)  # type: ignore[typeddict-item]
        method = method_of(settings, p.get("method"))
        widest = 2.0 if method == "embedding" else 1.0
        default = settings.embedding_max_distance if method == "embedding" else None
        cutoff = default or settings.max_distance
        if (max_distance := p.get("max_distance")) is not None:
            if not 0.0 <= max_distance <= widest:
                raise InvalidRequest(f"max_distance must be between 0 and {widest:g}")
            cutoff = max_distance
        if (min_score := p.get("min_score")) is not None:
            if not 0.0 <= min_score <= 100.0:
                raise InvalidRequest("min_score must be between 0 and 100")
            # "At least min_score": nudge the strict cutoff past rounding of score ↔ distance
            # (distinct distances differ by far more than 1e-12).
            cutoff = min(cutoff, 1.0 - min_score / 100.0 + 1e-12)
        limit = p.get("limit")
        count = settings.search_limit if limit is None else limit
        if count < 1:
            raise InvalidRequest("limit must be a positive integer")
        collapse = p.get("collapse")
        if collapse is not None and (not isinstance(collapse, str) or not collapse):
            raise InvalidRequest("collapse must name a metadata key")
        to_embedding = settings.embedding_max_distance / settings.max_distance
        return cls(
            method=method,
            limit=count,
            where=check_filter(p.get("where")),  # before the query is decoded
            collapse=collapse,
            signature_cutoff=cutoff,
            embedding_cutoff=cutoff if method == "embedding" else cutoff * to_embedding,
            hybrid_scale=hybrid_scale(settings),
            veto_distance=2 * settings.embedding_max_distance,
        )

    @property
    def fetch_limit(self) -> int:
        """How many matches to ask each store search for: room for what collapsing drops."""
        if self.collapse is None:
            return self.limit
        return max(self.limit, min(self.limit * _COLLAPSE_FETCH, _COLLAPSE_MOST))


def method_of(settings: Settings, method: str | None) -> str:
    """The method a request names (default: the setting); InvalidRequest if unknown or
    if it needs embeddings the collection does not have."""
    method = settings.search_method if method is None else method
    if method not in METHODS:
        raise InvalidRequest(f"method must be one of {', '.join(METHODS)}")
    if method != "signature" and not settings.embeddings:
        raise InvalidRequest(
            f"method {method} needs embeddings: start lookalike with LOOKALIKE_EMBEDDINGS=true"
        )
    return method


def hybrid_scale(settings: Settings) -> float:
    """What an embedding distance is multiplied by to sit on the signature's scale."""
    return settings.max_distance / settings.embedding_max_distance


def results(
    found: list[Match],
    options: SearchOptions,
    query: npt.NDArray[np.float32] | None = None,
    embedding_of: Callable[[str], npt.NDArray[np.float32] | None] = lambda filepath: None,
    covered: AbstractSet[str] | None = None,
) -> list[Match]:
    """What a search answers from the stores' matches: fused in hybrid (and vetoed, asked
    lazily, best match first, until enough are kept: ``query`` and ``embedding_of`` as
    for ``vetoed``; ``covered``, the orientations ``query`` was embedded in, None for
    all), collapsed if asked, at most ``limit``, each servable."""
    ranked: Iterable[Match] = found
    if options.method == "hybrid" and query is not None:
        by_embedding = {m.filepath for m in found if m.method == "embedding"}
        ranked = (
            match
            for match in fused(found, options.hybrid_scale)
            if match.filepath in by_embedding
            or not vetoed(match, query, embedding_of, options.veto_distance, covered)
        )
    if options.collapse is not None:
        ranked = collapsed(ranked, options.collapse)
    return [servable(match) for match in islice(ranked, options.limit)]


def fused(found: list[Match], scale: float) -> list[Match]:
    """Hybrid results: one per image, at the better of its distances, an embedding
    distance multiplied by ``scale`` first."""
    best: dict[str, Match] = {}
    for match in found:
        if match.method == "embedding":
            match = dataclasses.replace(match, distance=_rescaled(match.distance, scale))
        kept = best.get(match.filepath)
        if kept is None or (match.distance, match.method) < (kept.distance, kept.method):
            best[match.filepath] = match
    return sorted(best.values(), key=lambda m: (m.distance, m.filepath))


def vetoed(
    match: Match,
    query: npt.NDArray[np.float32],
    embedding_of: Callable[[str], npt.NDArray[np.float32] | None],
    veto_distance: float,
    covered: AbstractSet[str] | None = None,
) -> bool:
    """Whether hybrid drops this match found by the signature alone: one the signature
    is unsure of (distance from ``SIGNATURE_SURE`` on) when the embeddings call the two
    pictures unrelated (distance ``veto_distance`` or more, twice the embedding cutoff
    setting): smooth, featureless images have close signatures without looking alike.
    A record without an embedding is kept, and so is one the signature found turned a
    way the query was not embedded in (not in ``covered``, when given): the embeddings
    cannot tell. ``embedding_of`` reads a stored embedding: only when needed."""
    if match.method != "signature" or match.distance < SIGNATURE_SURE:
        return False
    if covered is not None and match.orientation not in covered:
        return False
    stored = embedding_of(match.filepath)
    if stored is None:
        return False
    distance, _ = cosine_distances(query, stored[None])
    return bool(distance[0] >= veto_distance)


def sure_distance(options: SearchOptions) -> float | None:
    """The distance, on the method's scale, that a match local features verify is given
    at most: as sure as a signature at ``SIGNATURE_SURE`` (in hybrid, that very distance);
    None when the request's cutoff is stricter than that (verdicts then move nothing)."""
    hybrid = options.method == "hybrid"
    distance = SIGNATURE_SURE if hybrid else sure_embedding_distance(options)
    cutoff = options.signature_cutoff if hybrid else options.embedding_cutoff
    return distance if distance < cutoff else None


def sure_embedding_distance(options: SearchOptions) -> float:
    """``SIGNATURE_SURE`` on the embedding's scale: what an embedding candidate beyond
    the cutoff is given once verified (hybrid's fusion scales it back to 0.40)."""
    return SIGNATURE_SURE / options.hybrid_scale


def with_verdicts(
    found: list[Match], options: SearchOptions, by_signature: AbstractSet[str] = frozenset()
) -> list[Match]:
    """The matches, each verified one at most at ``sure_distance``, best first, without
    the look-alikes: those only the embeddings found (not in ``by_signature``) that
    local features call another scene (``verified`` False)."""
    sure = sure_distance(options)
    kept = [m for m in found if m.verified is not False or m.filepath in by_signature]
    if sure is None:
        return kept
    moved = [
        dataclasses.replace(m, distance=min(m.distance, sure)) if m.verified else m for m in kept
    ]
    return sorted(moved, key=lambda m: (m.distance, m.filepath))


def collapsed(found: Iterable[Match], key: str) -> Iterator[Match]:
    """The first (best) match of each value of metadata ``key``; matches without the key
    stand for themselves."""
    seen: set[str] = set()
    for match in found:
        metadata = match.metadata or {}
        if key in metadata:
            value = json.dumps(metadata[key], sort_keys=True)  # lists and objects too
            if value in seen:
                continue
            seen.add(value)
        yield match


def chosen_comparison(found: list[Comparison], method: str, scale: float) -> Comparison:
    """The comparison a method reports among each method's (hybrid: the closer, the
    embedding's distance scaled), with every method's score when there are two."""
    scores = {c.method: c.score for c in found}
    if method == "hybrid":
        on_one_scale = [
            c
            if c.method == "signature"
            else dataclasses.replace(c, distance=_rescaled(c.distance, scale))
            for c in found
        ]
        chosen = min(on_one_scale, key=lambda c: c.distance)
    else:
        chosen = next(c for c in found if c.method == method)
    return dataclasses.replace(chosen, scores=scores if len(scores) > 1 else None)


def _rescaled(distance: float, scale: float) -> float:
    """An embedding distance on the signature's scale (at most 1, as distances are)."""
    return min(distance * scale, 1.0)
