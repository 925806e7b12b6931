"""Pairs of near-identical images as groups: which images are copies of which, and the
copy to keep. Pure: the pairs come from the store's self-join, sizes and times from the
records, and "not a duplicate" marks from the user.

A group is a connected component of the pairs, leaving out every pair marked distinct.
With ``strict`` (and in any component that holds a marked pair, so that two images marked
distinct are never grouped), a component is split around the copy to keep: the kept
image takes every image within the cutoff of it, nearest first, except one marked
distinct from a member already taken; the rest is grouped again the same way.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .records import score_of

__all__ = [
    "KEEP_RULES",
    "Group",
    "Image",
    "Member",
    "Pair",
    "as_csv",
    "as_json",
    "grouped",
]

KEEP_RULES = ("largest", "oldest", "newest")


@dataclass(frozen=True, slots=True)
class Pair:
    """Two stored images closer than the cutoff: ``orientation`` turns ``first`` into
    the picture ``second`` is of; ``method`` as in search results."""

    first: str
    second: str
    distance: float
    orientation: str = "identity"
    method: str = "signature"


@dataclass(frozen=True, slots=True)
class Image:
    """What choosing the copy to keep reads of a stored image (sizes None when the store
    has none for it: written before sizes were kept, or by another system)."""

    filepath: str
    created: float | None = None
    width: int | None = None
    height: int | None = None
    file_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """An image of a group, measured from the kept image."""

    image: Image
    distance: float
    orientation: str
    method: str

    def to_json(self) -> dict[str, Any]:
        image = self.image
        return {
            "filepath": image.filepath,
            "distance": self.distance,
            "score": score_of(self.distance),
            "orientation": self.orientation,
            "method": self.method,
            "width": image.width,
            "height": image.height,
            "bytes": image.file_bytes,
        }


@dataclass(frozen=True, slots=True)
class Group:
    """Copies of one picture: the kept one first (at distance 0), then the others nearest
    first; the largest and smallest distance of the pairs inside the group."""

    members: tuple[Member, ...]
    max_distance: float
    min_distance: float
    sizes_missing: bool  # some member has no sizes: ``largest`` could not weigh it

    @property
    def keep(self) -> str:
        return self.members[0].image.filepath

    @property
    def others(self) -> list[str]:
        return [m.image.filepath for m in self.members[1:]]

    def to_json(self) -> dict[str, Any]:
        return {
            "keep": self.keep,
            "members": [m.to_json() for m in self.members],
            "max_distance": self.max_distance,
            "min_distance": self.min_distance,
            "sizes_missing": self.sizes_missing,
        }


# (kept image, other image) -> (distance, orientation turning the kept one into the other,
# method), for members that are not paired with the kept image directly (chains)
Measure = Callable[[str, str], tuple[float, str, str]]


def grouped(
    pairs: Iterable[Pair],
    images: dict[str, Image],
    *,
    measure: Measure,
    keep: str = "largest",
    strict: bool = False,
    distinct: Iterable[tuple[str, str]] = (),
    min_size: int = 2,
) -> list[Group]:
    """The groups of these pairs, largest first (then closest, then by kept filepath)."""
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}")
    apart = {frozenset(pair) for pair in distinct}
    edges: dict[frozenset[str], Pair] = {}
    for pair in pairs:
        key = frozenset((pair.first, pair.second))
        if key not in apart and (key not in edges or pair.distance < edges[key].distance):
            edges[key] = pair
    neighbours: dict[str, dict[str, Pair]] = {}
    for pair in edges.values():
        neighbours.setdefault(pair.first, {})[pair.second] = pair
        neighbours.setdefault(pair.second, {})[pair.first] = pair
    rank = _rank(keep)
    found: list[Group] = []
    for component in _components(neighbours):
        marked = any(frozenset((a, b)) in apart for a in component for b in component if a < b)
        if strict or marked:
            parts = _split(component, neighbours, apart, images, rank)
        else:
            parts = [(_chosen(component, images, rank), component)]
        for kept, members in parts:
            if len(members) >= min_size:
                found.append(_group(kept, members, neighbours, images, measure))
    found.sort(key=lambda g: (-len(g.members), g.min_distance, g.keep))
    return found


def _components(neighbours: dict[str, dict[str, Pair]]) -> list[list[str]]:
    seen: set[str] = set()
    components = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        seen.add(start)
        stack, component = [start], []
        while stack:
            node = stack.pop()
            component.append(node)
            for other in neighbours[node]:
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        components.append(sorted(component))
    return components


Rank = Callable[[Image], tuple[Any, ...]]


def _rank(keep: str) -> Rank:
    """The sort key that puts the image to keep first: ``largest`` is most pixels, then
    most bytes, then the oldest; ties end with the filepath."""
    if keep == "largest":
        return lambda i: (
            -((i.width or 0) * (i.height or 0)),
            -(i.file_bytes or 0),
            i.created if i.created is not None else float("inf"),
            i.filepath,
        )
    if keep == "oldest":
        return lambda i: (i.created if i.created is not None else float("inf"), i.filepath)
    return lambda i: (-(i.created if i.created is not None else float("-inf")), i.filepath)


def _chosen(component: Sequence[str], images: dict[str, Image], rank: Rank) -> str:
    return min(component, key=lambda path: rank(images.get(path) or Image(path)))


def _split(
    component: list[str],
    neighbours: dict[str, dict[str, Pair]],
    apart: set[frozenset[str]],
    images: dict[str, Image],
    rank: Rank,
) -> list[tuple[str, list[str]]]:
    """The component split around chosen images, as the module's docstring says."""
    parts = []
    left = set(component)
    while left:
        kept = _chosen(sorted(left), images, rank)
        members = [kept]
        near = sorted(
            (pair.distance, other) for other, pair in neighbours[kept].items() if other in left
        )
        for _, other in near:
            if all(frozenset((other, m)) not in apart for m in members):
                members.append(other)
        parts.append((kept, members))
        left -= set(members)
    return parts


def _group(
    kept: str,
    members: list[str],
    neighbours: dict[str, dict[str, Pair]],
    images: dict[str, Image],
    measure: Measure,
) -> Group:
    inside = set(members)
    distances = [
        pair.distance
        for a in members
        for b, pair in neighbours.get(a, {}).items()
        if b in inside and a < b
    ]
    measured = []
    for other in members:
        if other == kept:
            continue
        pair = neighbours[kept].get(other)
        if pair is None:
            distance, orientation, method = measure(kept, other)
        elif pair.first == kept:
            distance, orientation, method = pair.distance, pair.orientation, pair.method
        else:  # the pair was measured from the other side
            distance, orientation, method = pair.distance, _inverse(pair.orientation), pair.method
        image = images.get(other) or Image(other)
        measured.append(Member(image, distance, orientation, method))
    measured.sort(key=lambda m: (m.distance, m.image.filepath))
    first = Member(images.get(kept) or Image(kept), 0.0, "identity", measured[0].method)
    everyone = [first, *measured]
    return Group(
        tuple(everyone),
        max(distances, default=0.0),
        min(distances, default=0.0),
        any(m.image.width is None for m in everyone),
    )


_INVERSE = {"rot90": "rot270", "rot270": "rot90"}  # every other orientation undoes itself


def _inverse(orientation: str) -> str:
    return _INVERSE.get(orientation, orientation)


def as_json(groups: Sequence[Group]) -> str:
    """One JSON array of groups, as ``lookalike duplicates --json`` prints it."""
    return json.dumps([g.to_json() for g in groups], ensure_ascii=False, indent=1)


CSV_FIELDS = (
    "group",
    "keep",
    "filepath",
    "distance",
    "score",
    "orientation",
    "method",
    "width",
    "height",
    "bytes",
)


def as_csv(groups: Sequence[Group]) -> str:
    """One row per member, with its group's number (from 1) and whether it is the kept one."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for number, group in enumerate(groups, start=1):
        for index, member in enumerate(group.members):
            row = member.to_json()
            writer.writerow(
                [number, "yes" if index == 0 else "no"]
                + ["" if row[k] is None else row[k] for k in CSV_FIELDS[2:]]
            )
    return out.getvalue()
