"""Pairs become groups (``duplicates``): components, chains, strict splitting, the copy
to keep, "not a duplicate" marks, and the two output formats parsed back."""

from __future__ import annotations

import csv
import io
import json

import pytest

from lookalike.backends.join import INVERSE
from lookalike.duplicates import Image, Pair, _inverse, as_csv, as_json, grouped
from lookalike.orientations import ORIENTATIONS

# a ~ b ~ c is a chain (a and c far apart); d ~ e; f alone in no pair
PAIRS = [
    Pair("a", "b", 0.10),
    Pair("b", "c", 0.30, "rot90"),
    Pair("d", "e", 0.05, "mirror"),
]
FAR = {("a", "c"): (0.60, "rot90", "signature")}  # what measuring the chain's ends gives


def measure(first: str, second: str) -> tuple[float, str, str]:
    key = (first, second) if (first, second) in FAR else (second, first)
    return FAR.get(key, (0.99, "identity", "signature"))


def images(**sizes: tuple[int, int, int, float]) -> dict[str, Image]:
    return {path: Image(path, created, w, h, size) for path, (w, h, size, created) in sizes.items()}


SIZES = images(
    a=(100, 100, 5_000, 3.0),
    b=(400, 300, 90_000, 1.0),  # the largest
    c=(400, 300, 80_000, 2.0),  # as many pixels, fewer bytes
    d=(10, 10, 100, 5.0),
    e=(10, 10, 100, 4.0),
)


def members(group: object) -> list[tuple[str, float, str]]:
    return [(m.image.filepath, m.distance, m.orientation) for m in group.members]  # type: ignore[attr-defined]


def test_components_largest_first_with_the_largest_copy_kept() -> None:
    groups = grouped(PAIRS, SIZES, measure=measure)
    assert [g.keep for g in groups] == ["b", "e"]  # e: as large as d, and older
    chain, pair = groups
    assert members(chain) == [("b", 0.0, "identity"), ("a", 0.10, "identity"), ("c", 0.30, "rot90")]
    assert (chain.max_distance, chain.min_distance) == (0.30, 0.10)
    assert members(pair) == [("e", 0.0, "identity"), ("d", 0.05, "mirror")]
    assert chain.others == ["a", "c"] and not chain.sizes_missing


def test_a_member_not_paired_with_the_kept_one_is_measured() -> None:
    """Keeping the oldest of the chain (b, created first) reaches c directly; keeping the
    newest (a) reaches c only through b, so their distance is measured; a pair seen
    from its other side has its orientation undone."""
    newest = grouped(PAIRS, SIZES, measure=measure, keep="newest")[0]
    assert members(newest) == [
        ("a", 0.0, "identity"),
        ("b", 0.10, "identity"),
        ("c", 0.60, "rot90"),
    ]
    oldest = grouped(PAIRS, SIZES, measure=measure, keep="oldest")[0]
    assert oldest.keep == "b"
    backwards = grouped([Pair("x", "y", 0.2, "rot90")], images(y=(9, 9, 9, 0.0)), measure=measure)
    assert members(backwards[0]) == [("y", 0.0, "identity"), ("x", 0.2, "rot270")]


def test_strict_splits_a_chain_around_the_kept_copy() -> None:
    groups = grouped(PAIRS, SIZES, measure=measure, keep="newest", strict=True)
    # a keeps b (0.10) but not c (only through b); c is left alone, so it is no group
    assert [members(g) for g in groups] == [
        [("d", 0.0, "identity"), ("e", 0.05, "mirror")],
        [("a", 0.0, "identity"), ("b", 0.10, "identity")],
    ]
    assert groups[1].max_distance == groups[1].min_distance == 0.10


def test_marked_pairs_never_chain_nor_share_a_group() -> None:
    """b–c marked distinct: the chain breaks. In a triangle where every pair is close,
    the marked two still end in different groups."""
    groups = grouped(PAIRS, SIZES, measure=measure, distinct=[("c", "b")])
    assert [g.keep for g in groups] == ["e", "b"]  # two pairs now: the closer first
    assert members(groups[1]) == [("b", 0.0, "identity"), ("a", 0.10, "identity")]
    triangle = [Pair("p", "q", 0.1), Pair("q", "r", 0.1), Pair("p", "r", 0.2)]
    found = grouped(triangle, {}, measure=measure, distinct=[("p", "r")])
    together = [set(g.others) | {g.keep} for g in found]
    assert together and all(not {"p", "r"} <= group for group in together)


def test_min_size_and_missing_sizes() -> None:
    assert grouped(PAIRS, SIZES, measure=measure, min_size=3)[0].keep == "b"
    assert len(grouped(PAIRS, SIZES, measure=measure, min_size=3)) == 1
    unknown = grouped(PAIRS, {}, measure=measure)
    assert all(g.sizes_missing for g in unknown)
    assert [g.keep for g in unknown] == ["a", "d"]  # nothing to weigh: filepath order
    with pytest.raises(ValueError, match="keep"):
        grouped(PAIRS, SIZES, measure=measure, keep="biggest")


def test_the_json_and_csv_outputs_parse_back() -> None:
    groups = grouped(PAIRS, SIZES, measure=measure)
    parsed = json.loads(as_json(groups))
    assert [g["keep"] for g in parsed] == ["b", "e"]
    first = parsed[0]
    assert first["members"][0] == {
        "filepath": "b",
        "distance": 0.0,
        "score": 100.0,
        "orientation": "identity",
        "method": "signature",
        "width": 400,
        "height": 300,
        "bytes": 90_000,
    }
    assert first["max_distance"] == 0.30 and first["min_distance"] == 0.10
    rows = list(csv.DictReader(io.StringIO(as_csv(groups))))
    assert [(r["group"], r["keep"], r["filepath"]) for r in rows] == [
        ("1", "yes", "b"),
        ("1", "no", "a"),
        ("1", "no", "c"),
        ("2", "yes", "e"),
        ("2", "no", "d"),
    ]
    assert float(rows[2]["score"]) == pytest.approx(70.0) and rows[2]["orientation"] == "rot90"


def test_the_inverse_orientations_agree_with_the_join() -> None:
    assert [_inverse(name) for name in ORIENTATIONS] == [ORIENTATIONS[i] for i in INVERSE]
