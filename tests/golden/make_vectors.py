"""Compute ``signatures.json`` with image-match 1.1.2 itself, from ``images/``.

This script does NOT run in the project environment: it needs image-match, which the
project never depends on. See README.md in this folder for the scratch environment and
the exact commands. It imports nothing from ``lookalike``, so the vectors are independent
of the code they test.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import skimage
from image_match.goldberg import ImageSignature
from image_match.signature_database_base import (
    get_words,
    max_contrast,
    normalized_distance,
    words_to_int,
)

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
OUT = HERE / "signatures.json"

WORD_LENGTH = 16
WORD_COUNT = 63

# Pairs whose distance is pinned (ImageSignature.normalized_distance).
PAIRS = [
    ("rocket.jpg", "rocket_progressive.jpg"),
    ("rocket.jpg", "rocket_cmyk.jpg"),
    ("coffee.jpg", "coffee_exif_rotated.jpg"),
    ("chelsea.jpg", "chelsea_rgba.png"),
    ("astronaut.png", "astronaut_palette.gif"),
    ("astronaut.png", "chelsea.jpg"),
    ("camera_grey.png", "coins_grey.jpg"),
    ("hubble_deep_field.jpg", "grass_grey.png"),
    ("gradient.png", "colour_blocks.png"),
    ("grey_steps.png", "tiny.png"),
    ("tall_thin.png", "coffee.jpg"),
]

# One query against every stored signature (signature_database_base.normalized_distance,
# which maps the 0/0 of two featureless signatures to 1.0).
MATRIX_QUERY = "rocket.jpg"
FEATURELESS_QUERY = "flat.png"

# The 8 symmetries of the square, in lookalike's ORIENTATIONS order, applied to the grey
# array that preprocess_image returns.
TRANSFORMS = [
    ("identity", "g", lambda g: g),
    ("rot90", "np.rot90(g, 1)", lambda g: np.rot90(g, 1)),
    ("rot180", "np.rot90(g, 2)", lambda g: np.rot90(g, 2)),
    ("rot270", "np.rot90(g, 3)", lambda g: np.rot90(g, 3)),
    ("mirror", "np.fliplr(g)", np.fliplr),
    ("mirror_rot90", "np.rot90(np.fliplr(g), 1)", lambda g: np.rot90(np.fliplr(g), 1)),
    ("mirror_rot180", "np.rot90(np.fliplr(g), 2)", lambda g: np.rot90(np.fliplr(g), 2)),
    ("mirror_rot270", "np.rot90(np.fliplr(g), 3)", lambda g: np.rot90(np.fliplr(g), 3)),
]
ORIENTATION_IMAGES = ["chelsea.jpg", "tall_thin.png", "grey_steps.png"]


def simple_words(sig: np.ndarray) -> list[int]:
    words = get_words(sig, WORD_LENGTH, WORD_COUNT)
    max_contrast(words)
    return [int(w) for w in words_to_int(words)]


def signature_of_grey(gis: ImageSignature, grey: np.ndarray) -> np.ndarray:
    """generate_signature's steps 2-5 on a grey array, through ImageSignature's static methods.

    ``search_image(all_orientations=True)`` handed the transformed grey view back to
    ``preprocess_image``, whose ``rgb2gray`` passed a 2-D input through in the
    scikit-image of its day (today's raises instead). The grey array is made
    C-contiguous first, as lookalike does: on the strided view NumPy may sum the patch
    means in another order.
    """
    g = np.ascontiguousarray(grey)
    window = gis.crop_image(
        g,
        lower_percentile=gis.lower_percentile,
        upper_percentile=gis.upper_percentile,
        fix_ratio=gis.fix_ratio,
    )
    x_coords, y_coords = gis.compute_grid_points(g, n=gis.n, window=window)
    means = gis.compute_mean_level(g, x_coords, y_coords, P=gis.P)
    differences = gis.compute_differentials(means, diagonal_neighbors=gis.diagonal_neighbors)
    gis.normalize_and_threshold(
        differences, identical_tolerance=gis.identical_tolerance, n_levels=gis.n_levels
    )
    return np.ravel(differences).astype("int8")


def _dumps(document: dict[str, Any]) -> str:
    """Indented JSON with every list of numbers kept on one line."""
    text = json.dumps(document, indent=1)
    return re.sub(
        r"\[\s*(-?[0-9][-0-9.e,\s]*?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )


def main() -> None:
    gis = ImageSignature()
    names = sorted(p.name for p in IMAGES.iterdir() if p.is_file())
    signatures: dict[str, np.ndarray] = {}
    images: dict[str, Any] = {}
    for name in names:
        content = (IMAGES / name).read_bytes()
        sig = gis.generate_signature(content, bytestream=True)
        assert sig.shape == (648,) and sig.dtype == np.int8
        # The static-method pipeline must reproduce generate_signature exactly.
        grey = gis.preprocess_image(content, bytestream=True)
        assert np.array_equal(signature_of_grey(gis, grey), sig), name
        signatures[name] = sig
        images[name] = {
            "shape": list(grey.shape),
            "signature": [int(v) for v in sig],
            "words": simple_words(sig),
        }

    pairs = [
        {"a": a, "b": b, "distance": float(gis.normalized_distance(signatures[a], signatures[b]))}
        for a, b in PAIRS
    ]

    stored = np.array([signatures[name] for name in names])
    with np.errstate(invalid="ignore"):  # 0/0 for featureless pairs, replaced by 1.0
        matrix = [
            {
                "query": query,
                "stored": names,
                "distances": [float(d) for d in normalized_distance(stored, signatures[query])],
            }
            for query in (MATRIX_QUERY, FEATURELESS_QUERY)
        ]
    orientations = {}
    for name in ORIENTATION_IMAGES:
        grey = gis.preprocess_image((IMAGES / name).read_bytes(), bytestream=True)
        rows = [signature_of_grey(gis, transform(grey)) for _, _, transform in TRANSFORMS]
        assert np.array_equal(rows[0], signatures[name])
        orientations[name] = [[int(v) for v in row] for row in rows]

    document = {
        "generator": {
            "script": "tests/golden/make_vectors.py",
            "python": platform.python_version(),
            "image_match": importlib.metadata.version("image-match"),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "scikit_image": skimage.__version__,
            "signature_call": "ImageSignature().generate_signature(bytes, bytestream=True)",
            "words_call": (
                f"w = get_words(sig, {WORD_LENGTH}, {WORD_COUNT}); max_contrast(w); words_to_int(w)"
            ),
        },
        "images": images,
        "pairs": pairs,
        "matrix": matrix,
        "orientation_transforms": [
            {"name": name, "numpy": expression} for name, expression, _ in TRANSFORMS
        ],
        "orientations": orientations,
    }
    OUT.write_text(_dumps(document) + "\n")
    print(f"wrote {OUT} ({len(images)} images)", file=sys.stderr)


if __name__ == "__main__":
    main()
