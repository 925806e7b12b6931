"""``lookalike duplicates``: every group of copies in the store, the copy to keep first;
marks of pairs that are not copies; and, only when asked, the others removed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import METHODS
from ..duplicates import KEEP_RULES, as_csv, as_json
from ..service import Lookalike
from . import Progress, json_object, shown

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """The command, on the CLI's subparsers."""
    parser = commands.add_parser(
        "duplicates",
        help="groups of copies among the stored images, the copy to keep first",
        description="Find every group of copies among the stored images. Nothing is"
        " removed unless --delete-others is given (never files on disk).",
    )
    parser.add_argument("--method", choices=METHODS, help="default: $LOOKALIKE_SEARCH_METHOD")
    cutoff = parser.add_mutually_exclusive_group()
    cutoff.add_argument("--min-score", type=float, help="pairs scoring at least this (0-100)")
    cutoff.add_argument("--max-distance", type=float, help="pairs closer than this")
    parser.add_argument("--filter", type=json_object, help='metadata equality, e.g. {"a": 1}')
    parser.add_argument("--keep", choices=KEEP_RULES, default="largest", help="default: largest")
    parser.add_argument(
        "--strict", action="store_true", help="every member within the cutoff of the kept one"
    )
    parser.add_argument("--min-size", type=int, default=2, help="smallest group shown")
    parser.add_argument(
        "--no-orientations", action="store_true", help="do not match rotated or mirrored copies"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON array of groups")
    output.add_argument("--csv", action="store_true", help="one row per member")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--delete-others",
        action="store_true",
        help="remove every group's other members from the store (prints them first)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what --delete-others would remove (default)"
    )
    marks = parser.add_mutually_exclusive_group()
    marks.add_argument(
        "--distinct", nargs=2, metavar=("A", "B"), help="mark two images as not copies"
    )
    marks.add_argument(
        "--not-distinct", nargs=2, metavar=("A", "B"), help="remove the mark of two images"
    )
    marks.add_argument("--list-distinct", action="store_true", help="print every mark")
    parser.set_defaults(run=_run)


def _run(service: Lookalike, args: argparse.Namespace) -> int:
    if args.distinct:
        service.mark_distinct(*args.distinct)
        return 0
    if args.not_distinct:
        service.unmark_distinct(*args.not_distinct)
        return 0
    if args.list_distinct:
        marks = service.distinct()
        if args.json:
            print(json.dumps([list(pair) for pair in marks], ensure_ascii=False))
        else:
            for first, second in marks:
                print(f"{shown(first)}\t{shown(second)}")
        return 0
    with Progress(0, args.quiet, unit="row") as bar:
        groups = service.duplicates(
            method=args.method,
            min_score=args.min_score,
            max_distance=args.max_distance,
            where=args.filter,
            keep=args.keep,
            strict=args.strict,
            min_size=args.min_size,
            all_orientations=False if args.no_orientations else None,
            progress=bar.reach,
        )
    if args.json:
        sys.stdout.write(as_json(groups) + "\n")
    elif args.csv:
        sys.stdout.write(as_csv(groups))
    else:
        for number, group in enumerate(groups, start=1):
            print(f"group {number}: {len(group.members)} images")
            for index, member in enumerate(group.members):
                mark = "keep " if index == 0 else "     "
                turned = "" if member.orientation == "identity" else f"  ({member.orientation})"
                size = member.image
                dims = f"  {size.width}×{size.height}" if size.width is not None else ""
                score = member.to_json()["score"]
                print(f"  {mark}{score:6.2f}  {shown(size.filepath)}{dims}{turned}")
    others = [path for group in groups for path in group.others]
    if args.delete_others and not args.dry_run:
        for path in others:
            print(f"lookalike: removing {shown(path)} from the store", file=sys.stderr)
        for path in others:
            service.delete(path)
        print(f"lookalike: removed {len(others)} images from the store", file=sys.stderr)
    elif others and not (args.json or args.csv):
        print(
            f"{len(groups)} groups; --delete-others would remove {len(others)} images from"
            " the store (never files on disk)",
            file=sys.stderr,
        )
    return 0
