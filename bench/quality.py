"""Near-duplicate retrieval quality of each search method, through the service.

The scikit-image photos (those that load without the network) and a bulk of generated
colour 1/f "photos" are added to a memory store (``Settings(backend="memory://")``).
Each photo is then edited in everyday ways and searched for with all 8 orientations:

* recall@1: the original is the first result (no cutoff: ``max_distance=1.0``);
* found: the original is among the results of a default search (cutoff 0.45);
* the median (and worst) distance from the edited copy to its original.

Then false matches, with images that were never added: each half of the photos is
stored while the other half (as it is and with every edit) is searched for, then the
halves swap; and 1/f photos that were not stored are searched for in the full store.
Reported: the share of those queries that return any match inside the default cutoff.

Each of that is measured for every search method — ``signature``, ``embedding`` and
``hybrid`` (the last two when the ``cnn`` extra is installed) — at its default cutoff,
and a last table sets the methods side by side, edit by edit.

    python bench/quality.py [--quick] [--distractors 200] [--methods signature,hybrid]
"""

from __future__ import annotations

import sys

# A script's folder comes first on the import path: move it last, so that the standard
# library wins over files in bench/ that share its names (bench/http.py shadows `http`).
sys.path.append(sys.path.pop(0))

import argparse
import importlib.util
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from common import (
    RGB,
    Edit,
    blur,
    brightness,
    contrast,
    crop,
    encode,
    grayscale,
    jpeg,
    median,
    mirror,
    pad,
    photos,
    pink_photo,
    rot90,
    rotate,
    scale,
    squash,
    table,
    watermark,
    write_results,
)
from disc import DISC_EDITS, Edited, disc_edit

from lookalike.config import HYBRID_ORIENTATIONS, Settings
from lookalike.service import Lookalike

ORIGINAL = "none (the original)"
EDITS: dict[str, Edit] = {
    ORIGINAL: lambda image: image,
    "resize 50 %": partial(scale, factor=0.5),
    "JPEG quality 20": partial(jpeg, quality=20),
    "crop 90 % (centre)": partial(crop, fraction=0.9),
    "crop 75 % (centre)": partial(crop, fraction=0.75),
    "squash (aspect 1:0.7)": partial(squash, vertical=0.7),
    "brightness +30 %": partial(brightness, factor=1.3),
    "contrast +30 %": partial(contrast, factor=1.3),
    "blur (Gaussian r=2)": partial(blur, radius=2),
    "watermark (corner)": watermark,
    "grayscale": grayscale,
    "rotate 90°": partial(rot90, quarter_turns=1),
    "rotate 180°": partial(rot90, quarter_turns=2),
    "rotate 270°": partial(rot90, quarter_turns=3),
    "mirror": mirror,
    "rotate 5°": partial(rotate, degrees=5),
    "10 % white padding": partial(pad, fraction=0.1, colour=255),
}


NamedEdit = Callable[[str, RGB], Edited]  # (photo name, photo) -> the edited copy


def edits_of(kind: str, seed: int) -> dict[str, NamedEdit]:
    """The everyday edits, the DISC21-style ones (``disc``), or both (``all``)."""
    everyday: dict[str, NamedEdit] = {
        name: (lambda photo_name, image, edit=edit: Edited(edit(image), None, None))
        for name, edit in EDITS.items()
    }
    disc: dict[str, NamedEdit] = {
        name: (lambda photo_name, image, name=name: disc_edit(name, photo_name, seed)(image))
        for name in DISC_EDITS
    }
    if kind == "disc":
        return {ORIGINAL: everyday[ORIGINAL], **disc}
    return everyday if kind == "everyday" else {**everyday, **disc}


def as_query(image: RGB) -> bytes:
    """Lossless bytes of an edited image (the JPEG edit has already been through JPEG)."""
    return encode(image, "PNG")


METHODS = ("signature", "embedding", "hybrid")


VERIFY = {"on": True}  # --no-verify turns geometric verification off
HYBRID = {"orientations": Settings().hybrid_orientations}  # --hybrid-orientations


def settings_for(method: str) -> Settings:
    return Settings(
        backend="memory://",
        embeddings=method != "signature",
        verify=VERIFY["on"],
        hybrid_orientations=HYBRID["orientations"],
    )


def cutoff_of(method: str) -> float:
    settings = Settings()
    return settings.embedding_max_distance if method == "embedding" else settings.max_distance


def new_service(method: str) -> Lookalike:
    return Lookalike(settings_for(method))


def retrieval(
    service: Lookalike, library: dict[str, RGB], method: str, edits: dict[str, NamedEdit]
) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """One row per edit: recall@1, found inside the cutoff, found first and inside it,
    distances to the original."""
    stored = service.count()
    cutoff = cutoff_of(method)
    widest = 2.0 if method == "embedding" else 1.0
    rows, results = [], []
    for edit_name, edit in edits.items():
        first, found, distances = [], [], []
        verified, overlaps, latencies = [], [], []
        for name, image in library.items():
            edited = edit(name, image)
            query = as_query(edited.image)
            key = f"photo/{name}"
            started = time.perf_counter()
            service.search(query, method=method)  # as a user would: timed
            latencies.append((time.perf_counter() - started) * 1000)
            everything = service.search(query, max_distance=widest, limit=stored, method=method)
            first.append(bool(everything) and everything[0].filepath == key)
            original = next((m for m in everything if m.filepath == key), None)
            distances.append(widest if original is None else original.distance)
            found.append(distances[-1] < cutoff)
            if original is not None and original.verified is not None:
                verified.append(original.verified)
                if original.region is not None and edited.query and edited.stored:
                    overlaps.append(
                        min(
                            iou(original.region.query, edited.query),
                            iou(original.region.stored, edited.stored),
                        )
                    )
        both = np.logical_and(first, found)
        rows.append(
            [
                edit_name,
                f"{np.mean(first):.2f}",
                f"{np.mean(found):.2f}",
                f"{np.mean(both):.2f}",
                f"{median(distances):.3f}",
                f"{max(distances):.3f}",
                f"{np.mean(verified):.2f}" if verified else "-",
                f"{median(overlaps):.2f}" if overlaps else "-",
                f"{median(latencies):.0f}",
                missed_names([n for n, ok in zip(library, found, strict=True) if not ok]),
            ]
        )
        results.append(
            {
                "edit": edit_name,
                "queries": len(library),
                "recall_at_1": float(np.mean(first)),
                f"found_within_{cutoff}": float(np.mean(found)),
                "first_and_within": float(np.mean(both)),
                "median_distance": median(distances),
                "verified": float(np.mean(verified)) if verified else None,
                "region_iou_median": median(overlaps) if overlaps else None,
                "search_ms_median": median(latencies),
                "search_ms": latencies,
                "max_distance": max(distances),
                "distances": dict(zip(library, distances, strict=True)),
            }
        )
        print(f"  {edit_name}", file=sys.stderr)
    return rows, results


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes [x0, y0, x1, y1]."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def missed_names(names: list[str], most: int = 4) -> str:
    return ", ".join(names) if len(names) <= most else f"{len(names)} photos"


def nearest(service: Lookalike, query: bytes, method: str) -> tuple[str | None, float]:
    """The closest stored image and its distance ((None, 2.0) if none); a default search
    returns a match exactly when that distance is below the default cutoff."""
    matches = service.search(query, max_distance=cutoff_of(method) * 2, limit=1, method=method)
    return (matches[0].filepath, matches[0].distance) if matches else (None, 2.0)


def store(
    library: dict[str, RGB], names: Sequence[str], distractors: dict[str, bytes], method: str
) -> Lookalike:
    service = new_service(method)
    for name in names:
        service.add(f"photo/{name}", as_query(library[name]))
    for key, data in distractors.items():
        service.add(key, data)
    return service


def false_matches(
    library: dict[str, RGB],
    distractors: dict[str, bytes],
    unstored: list[bytes],
    method: str,
    edits: dict[str, NamedEdit],
) -> list[dict[str, Any]]:
    """Share of never-added images that get any match inside the default cutoff."""
    names = list(library)
    halves = (names[0::2], names[1::2])
    # kind → (query, nearest stored filepath, its distance)
    outcomes: dict[str, list[tuple[str, str | None, float]]] = {
        "held-out photos": [],
        "held-out photos, edited": [],
        "unstored 1/f photos": [],
    }
    for stored_half, held_half in (halves, halves[::-1]):
        with store(library, stored_half, distractors, method) as service:
            for name in held_half:
                for edit_name, edit in edits.items():
                    kind = "held-out photos" if edit_name == ORIGINAL else "held-out photos, edited"
                    found = nearest(service, as_query(edit(name, library[name]).image), method)
                    outcomes[kind].append((f"{name}: {edit_name}", *found))
    with store(library, names, distractors, method) as service:
        for i, query in enumerate(unstored):
            found = nearest(service, query, method)
            outcomes["unstored 1/f photos"].append((f"1/f {i}", *found))
    cutoff = cutoff_of(method)
    return [
        {
            "queries": kind,
            "n": len(found),
            "with_match": float(np.mean([d < cutoff for _, _, d in found])),
            "closest_distance": min(d for _, _, d in found),
            "median_nearest_distance": median(d for _, _, d in found),
            "matches": [
                {"query": q, "matched": path, "distance": d} for q, path, d in found if d < cutoff
            ],
        }
        for kind, found in outcomes.items()
    ]


def report(
    method: str, rows: list[list[Any]], false: list[dict[str, Any]], photos: int, distractors: int
) -> None:
    cutoff = cutoff_of(method)
    print(
        f"\n{method}: near-duplicate retrieval, {photos} scikit-image photos + {distractors} "
        f"stored 1/f distractors, all 8 orientations, default cutoff {cutoff}"
    )
    headers = ["edit", "recall@1", f"found <{cutoff}", "first and <", "median d", "max d"]
    headers += ["verified", "region IoU", "ms (p50)"]
    print(table([*headers, "missed"], rows))
    print(f"\n{method}: never-added images with any result inside the default cutoff ({cutoff})")
    print(
        table(
            ["queries", "n", "with a match", "nearest d (min)", "nearest d (median)"],
            [
                [
                    f["queries"],
                    f["n"],
                    f"{f['with_match']:.3f}",
                    f"{f['closest_distance']:.3f}",
                    f"{f['median_nearest_distance']:.3f}",
                ]
                for f in false
            ],
        )
    )
    for f in false:
        for m in f["matches"][:5]:
            print(f"  {f['queries']}: {m['query']} → {m['matched']} at {m['distance']:.3f}")
        if len(f["matches"]) > 5:
            print(f"  {f['queries']}: … and {len(f['matches']) - 5} more (see the JSON)")


def side_by_side(measured: dict[str, dict[str, Any]]) -> None:
    """Recall@1 / found within the default cutoff, per edit and method; false matches."""
    methods = list(measured)
    edits = [row["edit"] for row in next(iter(measured.values()))["retrieval"]]
    rows = []
    for i, edit in enumerate(edits):
        cells = []
        for method in methods:
            row = measured[method]["retrieval"][i]
            found = next(v for k, v in row.items() if k.startswith("found_within"))
            cells.append(f"{row['recall_at_1']:.2f} / {found:.2f} / {row['first_and_within']:.2f}")
        rows.append([edit, *cells])
    for kind_index, kind in enumerate(f["queries"] for f in measured[methods[0]]["false"]):
        cells = [f"{measured[m]['false'][kind_index]['with_match']:.3f}" for m in methods]
        rows.append([f"false matches: {kind}", *cells])
    print("\nside by side: recall@1 / found inside the default cutoff / both; false-match rates")
    print(table(["edit", *methods], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer distractors")
    parser.add_argument("--distractors", type=int, help="stored 1/f photos (default 200)")
    parser.add_argument("--unstored", type=int, help="1/f photos searched, not stored (200)")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument(
        "--edits", choices=("everyday", "disc", "all"), default="everyday",
        help="the everyday edits, the DISC21-style ones (bench/disc.py), or both",
    )  # fmt: skip
    parser.add_argument(
        "--no-verify", action="store_true", help="without geometric verification (as before)"
    )
    parser.add_argument(
        "--hybrid-orientations",
        choices=HYBRID_ORIENTATIONS,
        default=HYBRID["orientations"],
        help="what hybrid embeds the query in (LOOKALIKE_HYBRID_ORIENTATIONS)",
    )
    args = parser.parse_args(argv)
    VERIFY["on"] = not args.no_verify
    HYBRID["orientations"] = args.hybrid_orientations
    n_distractors = args.distractors or (40 if args.quick else 200)
    n_unstored = args.unstored or (40 if args.quick else 200)

    library = photos()
    rng = np.random.default_rng(args.seed)

    def pink(count: int) -> list[bytes]:
        sizes = [(384, 512), (512, 384), (480, 640), (512, 512)]
        return [
            encode(pink_photo(rng, *sizes[int(rng.integers(len(sizes)))]), "JPEG", 90)
            for _ in range(count)
        ]

    distractors = {f"distractor/{i:04d}.jpg": d for i, d in enumerate(pink(n_distractors))}
    unstored = pink(n_unstored)
    print(f"{len(library)} photos: {', '.join(library)}", file=sys.stderr)
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(METHODS):
        parser.error(f"--methods takes {', '.join(METHODS)}")
    if methods != ["signature"] and importlib.util.find_spec("onnxruntime") is None:
        print("the cnn extra is not installed: signature only", file=sys.stderr)
        methods = ["signature"]

    edits = edits_of(args.edits, args.seed)
    measured: dict[str, dict[str, Any]] = {}
    for method in methods:
        with store(library, list(library), distractors, method) as service:
            print(f"{method}: stored {service.count()} images; searching ...", file=sys.stderr)
            rows, per_edit = retrieval(service, library, method, edits)
        false = false_matches(library, distractors, unstored, method, edits)
        measured[method] = {"cutoff": cutoff_of(method), "retrieval": per_edit, "false": false}
        report(method, rows, false, len(library), n_distractors)
        edited = [r for r in per_edit if r["edit"] != ORIGINAL]
        overall = {
            "first_and_within": float(np.mean([r["first_and_within"] for r in edited])),
            "search_ms_p50": median(ms for r in per_edit for ms in r["search_ms"]),
        }
        measured[method]["overall"] = overall
        print(
            f"\n{method}, every edit: found first and inside the cutoff"
            f" {overall['first_and_within']:.3f}; default search p50"
            f" {overall['search_ms_p50']:.0f} ms (query decode included)"
        )
    if len(methods) > 1:
        side_by_side(measured)
    path = write_results(
        "quality",
        {
            "photos": list(library),
            "distractors": n_distractors,
            "unstored": n_unstored,
            "seed": args.seed,
            "verify": not args.no_verify,
            "cutoffs": {method: cutoff_of(method) for method in methods},
            "edits": list(edits),
        },
        measured,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
