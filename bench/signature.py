"""Signature speed: lookalike against image-match 1.1.2, side by side in one run.

For JPEGs made from scikit-image photos (640×480, 1024×768 and 2000×1500, quality 90, a
little grain so that large ones are not unnaturally smooth) it times the whole path from
JPEG bytes to the 648-value signature, decode included, on one BLAS thread:

* image-match: ``ImageSignature().generate_signature(bytes, bytestream=True)``, run in a
  worker process of a venv that has image-match (``bench/image_match_worker.py``);
* lookalike exact: ``signature.signature(images.decode(bytes))``;
* lookalike reference path: the same signature from the whole float64 grey image, as
  lookalike computed it before the certified path (the gain of that path);
* lookalike fast: ``signature.signature(*images.decode_reduced(bytes))``: libjpeg
  decodes at 1/2, 1/4 or 1/8 scale and the signature lays the full-size picture's crop,
  grid and patches on the reduced pixels (``LOOKALIKE_FAST_DECODE``).

Rounds alternate between the two processes, so machine noise hits both alike; the table
gives medians. It also checks that lookalike's exact signatures equal image-match's, and
measures how far fast-decode signatures drift from exact ones on every colour photo
resized to 1024, 2000, 3000 and 4000 px (long side), and how far they would drift if the
reduced image were signed as it is ("as decoded", the earlier fast path).

    python bench/signature.py [--quick] [--image-match-python PATH]

Without image-match (``--image-match-python`` or $IMAGE_MATCH_PYTHON, default
/tmp/scratch/imvenv/bin/python) the comparison is skipped; the message says how to make
that venv.
"""

from __future__ import annotations

import os
import sys

# A script's folder comes first on the import path: move it last, so that the standard
# library wins over files in bench/ that share its names (bench/http.py shadows `http`).
sys.path.append(sys.path.pop(0))

# One BLAS thread, here and in the image-match worker: set before NumPy is imported.
os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

import argparse
import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
from common import (
    BENCH,
    COLOUR_PHOTO_NAMES,
    add_grain,
    encode,
    median,
    photos,
    resize_long_side,
    resize_to,
    table,
    threadpools,
    write_results,
)

from lookalike import images, signature
from lookalike.config import Settings
from lookalike.orientations import LAYOUTS
from lookalike.signature.certified import certified_signatures
from lookalike.signature.reference import reference_signature

DEFAULT_IMAGE_MATCH_PYTHON = "/tmp/scratch/imvenv/bin/python"
BENCH_PHOTOS = ("astronaut", "coffee")
BENCH_SIZES = ((640, 480), (1024, 768), (2000, 1500))
DRIFT_SIZES = (1024, 2000, 3000, 4000)
HOW_TO_MAKE_VENV = (
    "python -m venv X && X/bin/pip install numpy pillow scikit-image threadpoolctl"
    " && X/bin/pip install --no-deps image-match==1.1.2"
)
_LIMITS = Settings()


@dataclass
class BenchImage:
    name: str
    path: Path
    data: bytes
    shape: tuple[int, int]
    times: dict[str, list[float]] = field(
        default_factory=lambda: {"image_match": [], "exact": [], "reference": [], "fast": []}
    )


class ImageMatch:
    """image-match in a worker process of its own venv, one JSON request a line."""

    def __init__(self, python: str) -> None:
        self._process = subprocess.Popen(
            [python, str(BENCH / "image_match_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )

    def request(self, **message: Any) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the image-match worker exited; see its error above")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"image-match worker: {reply['error']}")
        return reply

    def close(self) -> None:
        if self._process.poll() is None:
            self.request_quit()
        self._process.wait(timeout=30)

    def request_quit(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self._process.stdin.close()


def lookalike_signature(
    data: bytes, *, fast: bool, reference: bool = False
) -> np.ndarray[Any, np.dtype[np.int8]]:
    """JPEG bytes → signature; ``reference`` skips the certified path (whole float64 grey)."""
    limits = {"max_bytes": _LIMITS.max_image_bytes, "max_pixels": _LIMITS.max_image_pixels}
    if fast:
        return signature.signature(*images.decode_reduced(data, **limits))
    pixels = images.decode(data, **limits)
    return reference_signature(pixels) if reference else signature.signature(pixels)


def time_lookalike(data: bytes, *, fast: bool, reps: int, reference: bool = False) -> list[float]:
    out = []
    for _ in range(reps):
        start = perf_counter()
        lookalike_signature(data, fast=fast, reference=reference)
        out.append(perf_counter() - start)
    return out


def certified_share(bench: list[BenchImage]) -> dict[str, int]:
    """How many images the certified path decides (the rest take the reference path)."""
    decided = 0
    for image in bench:
        pixels = images.decode(
            image.data, max_bytes=_LIMITS.max_image_bytes, max_pixels=_LIMITS.max_image_pixels
        )
        decided += certified_signatures(pixels, LAYOUTS[:1]) is not None
    return {"decided": decided, "images": len(bench)}


def decoded_shape(data: bytes, *, fast: bool) -> tuple[int, int]:
    pixels = images.decode(
        data, max_bytes=_LIMITS.max_image_bytes, max_pixels=_LIMITS.max_image_pixels, fast=fast
    )
    return pixels.shape[1], pixels.shape[0]


def make_images(folder: Path, grain: float, seed: int) -> tuple[list[BenchImage], list[BenchImage]]:
    """The timed JPEGs and the drift JPEGs, written to ``folder`` for the worker."""
    rng = np.random.default_rng(seed)
    library = photos()

    def save(name: str, pixels: np.ndarray[Any, np.dtype[np.uint8]]) -> BenchImage:
        data = encode(add_grain(pixels, grain, rng), "JPEG", 90)
        path = folder / f"{name}.jpg"
        path.write_bytes(data)
        return BenchImage(name, path, data, (pixels.shape[1], pixels.shape[0]))

    timed = [
        save(f"{name} {w}×{h}", resize_to(library[name], w, h))
        for w, h in BENCH_SIZES
        for name in BENCH_PHOTOS
        if name in library
    ]
    drift = [
        save(f"{name} {side}px", resize_long_side(library[name], side))
        for side in DRIFT_SIZES
        for name in COLOUR_PHOTO_NAMES
        if name in library
    ]
    return timed, drift


def run_rounds(bench: list[BenchImage], worker: ImageMatch | None, rounds: int, reps: int) -> None:
    """Alternate lookalike exact, image-match and lookalike fast, reversing every round."""
    for image in bench:  # warm up both sides: imports, caches, first-call costs
        lookalike_signature(image.data, fast=False)
        lookalike_signature(image.data, fast=True)
        if worker is not None:
            worker.request(cmd="time", file=str(image.path), reps=1)
    for round_number in range(rounds):
        order = ["exact", "image_match", "reference", "fast"]
        if round_number % 2:
            order.reverse()
        for image in bench:
            for kind in order:
                if kind == "image_match":
                    if worker is not None:
                        reply = worker.request(cmd="time", file=str(image.path), reps=reps)
                        image.times[kind] += reply["seconds"]
                else:
                    image.times[kind] += time_lookalike(
                        image.data, fast=kind == "fast", reps=reps, reference=kind == "reference"
                    )
        if sys.stderr.isatty():
            print(f"\r  round {round_number + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, to check it works")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 60, quick 4)")
    parser.add_argument("--reps", type=int, default=1, help="timed calls per image per round")
    parser.add_argument("--grain", type=float, default=2.0, help="noise sigma in grey levels")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument(
        "--image-match-python",
        default=os.environ.get("IMAGE_MATCH_PYTHON", DEFAULT_IMAGE_MATCH_PYTHON),
        help="python of a venv with image-match 1.1.2 (default $IMAGE_MATCH_PYTHON or %(default)s)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 60)

    worker: ImageMatch | None = None
    worker_info: dict[str, Any] | None = None
    if Path(args.image_match_python).exists():
        worker = ImageMatch(args.image_match_python)
        worker_info = worker.request(cmd="info")
    else:
        print(
            f"image-match comparison skipped: {args.image_match_python} does not exist.\n"
            f"Make that venv with:\n  {HOW_TO_MAKE_VENV}\n"
            "and pass --image-match-python X/bin/python (or set IMAGE_MATCH_PYTHON).\n"
        )

    lookalike_pools = threadpools()
    print(f"lookalike BLAS: {lookalike_pools}")
    if worker_info is not None:
        print(f"image-match {worker_info['image_match']} BLAS: {worker_info['threadpools']}")

    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        bench, drift_set = make_images(Path(tmp), args.grain, args.seed)
        print(f"timing {len(bench)} JPEGs, {rounds} rounds × {args.reps} call(s) each ...")
        try:
            run_rounds(bench, worker, rounds, args.reps)
            identical = None
            if worker is not None:
                everything = bench + drift_set
                reply = worker.request(cmd="signatures", files=[str(i.path) for i in everything])
                same = [
                    np.array_equal(np.array(theirs), lookalike_signature(i.data, fast=False))
                    for i, theirs in zip(everything, reply["signatures"], strict=True)
                ]
                identical = {"equal": sum(same), "images": len(same)}
        finally:
            if worker is not None:
                worker.close()
        drift = measure_drift(drift_set)
        certified = certified_share(bench + drift_set)

    rows, results = [], []
    for image in bench:
        exact, fast = median(image.times["exact"]) * 1e3, median(image.times["fast"]) * 1e3
        reference = median(image.times["reference"]) * 1e3
        theirs = median(image.times["image_match"]) * 1e3 if image.times["image_match"] else None
        fast_w, _ = decoded_shape(image.data, fast=True)
        reduction = image.shape[0] // fast_w
        rows.append(
            [
                image.name,
                f"{len(image.data) / 1000:.0f}",
                f"{theirs:.1f}" if theirs else None,
                f"{exact:.1f}",
                f"{theirs / exact:.2f}×" if theirs else None,
                f"{reference:.1f}",
                f"{fast:.1f}",
                f"{theirs / fast:.2f}×" if theirs else None,
                f"1/{reduction}" if reduction > 1 else "none",
            ]
        )
        results.append(
            {
                "image": image.name,
                "width": image.shape[0],
                "height": image.shape[1],
                "jpeg_bytes": len(image.data),
                "image_match_ms": theirs,
                "lookalike_exact_ms": exact,
                "lookalike_reference_path_ms": reference,
                "lookalike_fast_ms": fast,
                "fast_decode_scale": 1 / reduction,
                "samples": {k: len(v) for k, v in image.times.items()},
                "image_match_ms_all": [t * 1e3 for t in image.times["image_match"]],
                "lookalike_exact_ms_all": [t * 1e3 for t in image.times["exact"]],
                "lookalike_fast_ms_all": [t * 1e3 for t in image.times["fast"]],
            }
        )

    print()
    headers = ["JPEG (q90)", "kB", "image-match ms", "lookalike ms", "speed-up", "reference ms"]
    headers += ["fast_decode ms", "speed-up", "fast scale"]
    print(table(headers, rows))
    print(f"\nmedians of {rounds * args.reps} calls each, JPEG bytes → signature, 1 BLAS thread")
    print(
        f"certified path: decided {certified['decided']}/{certified['images']} images"
        " (reference ms: the same signature from the whole float64 grey, as before it)"
    )
    if identical is None:
        print("identical: not checked (no image-match)")
    else:
        verdict = "yes" if identical["equal"] == identical["images"] else "NO"
        print(
            f"identical: {verdict} ({identical['equal']}/{identical['images']} images: "
            "lookalike exact == image-match 1.1.2)"
        )
    print("\nfast_decode drift: distance(exact signature, fast signature), colour photos, q90")
    print(
        table(
            [
                "long side",
                "images",
                "downscaled",
                "max drift",
                "median drift",
                "median (downscaled)",
                "as decoded: max",
                "median",
            ],
            [
                [
                    d["size"],
                    d["images"],
                    d["downscaled"],
                    f"{d['max']:.4f}",
                    f"{d['median']:.4f}",
                    f"{d['median_downscaled_only']:.4f}"
                    if d["median_downscaled_only"] is not None
                    else None,
                    f"{d['as_decoded_max']:.4f}" if d["as_decoded_max"] is not None else None,
                    f"{d['as_decoded_median']:.4f}" if d["as_decoded_median"] is not None else None,
                ]
                for d in drift
            ],
        )
    )

    path = write_results(
        "signature",
        {
            "rounds": rounds,
            "reps": args.reps,
            "grain": args.grain,
            "seed": args.seed,
            "jpeg_quality": 90,
            "image_match_python": args.image_match_python if worker_info else None,
        },
        {
            "lookalike_threadpools": lookalike_pools,
            "image_match": worker_info,
            "timings": results,
            "identical": identical,
            "certified": certified,
            "fast_drift": drift,
        },
    )
    print(f"\nwrote {path}")
    return 0 if identical is None or identical["equal"] == identical["images"] else 1


@dataclass(frozen=True)
class Drift:
    image: str
    long_side: int
    downscaled: bool
    drift: float
    drift_as_decoded: float


def measure_drift(drift_set: list[BenchImage]) -> list[dict[str, Any]]:
    """distance(exact, fast) per image, summarised per long side and over all."""
    per_image = []
    for image in drift_set:
        exact = lookalike_signature(image.data, fast=False)
        fast = lookalike_signature(image.data, fast=True)
        fast_width, _ = decoded_shape(image.data, fast=True)
        as_decoded = signature.signature(
            images.decode(
                image.data,
                max_bytes=_LIMITS.max_image_bytes,
                max_pixels=_LIMITS.max_image_pixels,
                fast=True,
            )
        )
        per_image.append(
            Drift(
                image.name,
                max(image.shape),
                fast_width < image.shape[0],
                signature.distance(exact, fast),
                signature.distance(exact, as_decoded),
            )
        )
    groups = [(f"{side} px", [p for p in per_image if p.long_side == side]) for side in DRIFT_SIZES]
    groups.append(("all", per_image))
    out = []
    for label, group in groups:
        drifts = [p.drift for p in group]
        reduced = [p.drift for p in group if p.downscaled]
        before = [p.drift_as_decoded for p in group if p.downscaled]
        out.append(
            {
                "size": label,
                "images": len(group),
                "downscaled": len(reduced),
                "max": max(drifts),
                "median": median(drifts),
                "median_downscaled_only": median(reduced) if reduced else None,
                "as_decoded_max": max(before) if before else None,
                "as_decoded_median": median(before) if before else None,
                "per_image": [vars(p) for p in group] if label != "all" else None,
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
