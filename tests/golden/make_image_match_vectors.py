"""Compute ``image_match.json`` with image-match 1.1.2 itself: its Python API's outputs for
non-default parameters, for ``tests/test_image_match.py``.

Like ``make_vectors.py`` this runs in the scratch environment of README.md (image-match
installed with ``--no-deps``), imports nothing from ``lookalike``, and reads ``images/``.

One shim: ``search_image(all_orientations=True)`` hands 2-D grey arrays back to
``rgb2gray``, which scikit-image releases of image-match's day returned as a contiguous
copy and current ones reject. ``goldberg.rgb2gray`` is wrapped to do the former (for
2-D input only), so image-match's own orientation loop can run.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import skimage
from image_match import goldberg
from image_match.goldberg import ImageSignature
from image_match.signature_database_base import (
    SignatureDatabaseBase,
    get_words,
    make_record,
    max_contrast,
    normalized_distance,
    words_to_int,
)
from PIL import Image

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
OUT = HERE / "image_match.json"

# ImageSignature keyword sets: each parameter away from its default, then all at once.
PARAMETERS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "n=5": {"n": 5},
    "n=16": {"n": 16},
    "crop=(10, 90)": {"crop_percentiles": (10, 90)},
    "crop=(0, 100)": {"crop_percentiles": (0, 100)},
    "crop=None": {"crop_percentiles": None},
    "P=1": {"P": 1},
    "P=3": {"P": 3},
    "P=40": {"P": 40},
    "diagonal_neighbors=False": {"diagonal_neighbors": False},
    "identical_tolerance=0": {"identical_tolerance": 0},
    "identical_tolerance=0.05": {"identical_tolerance": 0.05},
    "n_levels=1": {"n_levels": 1},
    "n_levels=3": {"n_levels": 3},
    "fix_ratio=True": {"fix_ratio": True},
    "mixed": {
        "n": 7,
        "crop_percentiles": (2, 98),
        "P": 6,
        "diagonal_neighbors": False,
        "identical_tolerance": 0.01,
        "n_levels": 3,
    },
}
# The static helpers, step by step, for a few images and parameter sets.
STEP_IMAGES = ["chelsea.jpg", "grey_steps.png", "flat.png"]
STEP_PARAMETERS = ["defaults", "mixed", "fix_ratio=True"]
# (k, N) word layouts of SignatureDatabaseBase, on the default signatures.
WORDS = [(16, 63), (10, 40), (5, 100), (32, 20)]
ORIENTATION_IMAGES = ["chelsea.jpg", "tall_thin.png", "grey_steps.png"]


def rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(BytesIO((IMAGES / name).read_bytes())).convert("RGB"))


def encoded(sig: np.ndarray) -> str:
    """A signature as text: one character per value, ``chr(ord('a') + value + 8)``."""
    return "".join(chr(ord("a") + int(v) + 8) for v in sig)


def outcome(generate: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The signature, or the name of what went wrong: image-match raises whatever NumPy
    raises on degenerate inputs, or only warns (empty means, NaN cast to int8) and returns
    an undefined signature, which is recorded as the warning's name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return {"signature": encoded(generate(*args, **kwargs))}
    except Exception as error:
        return {"error": type(error).__name__}


def steps(gis: ImageSignature, grey: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return _steps(gis, grey)
        except Exception as error:
            return {"error": type(error).__name__}


def _steps(gis: ImageSignature, grey: np.ndarray) -> dict[str, Any]:
    window = None
    if gis.crop_percentiles is not None:
        window = gis.crop_image(grey, gis.lower_percentile, gis.upper_percentile, gis.fix_ratio)
    rows, columns = gis.compute_grid_points(grey, n=gis.n, window=window)
    means = gis.compute_mean_level(grey, rows, columns, P=gis.P)
    differences = gis.compute_differentials(means, diagonal_neighbors=gis.diagonal_neighbors)
    raw = differences.copy()
    gis.normalize_and_threshold(differences, gis.identical_tolerance, gis.n_levels)
    return {
        "window": None if window is None else [list(map(int, w)) for w in window],
        "grid": [rows.tolist(), columns.tolist()],
        "means": [float(v).hex() for v in means.ravel()],
        "differentials_shape": list(raw.shape),
        "differentials": [float(v).hex() for v in raw.ravel()],
        "thresholded": encoded(differences.ravel()),
    }


class Captured(SignatureDatabaseBase):
    """Records what image-match's search loop asks the database for."""

    def __init__(self) -> None:
        super().__init__()
        self.searched: list[np.ndarray] = []

    def search_single_record(self, rec: dict[str, Any]) -> list[Any]:
        self.searched.append(np.array(rec["signature"], dtype=np.int8))
        return []

    def insert_single_record(self, rec: dict[str, Any], refresh_after: bool = False) -> None:
        raise NotImplementedError


def main() -> None:
    names = sorted(p.name for p in IMAGES.iterdir() if p.is_file())
    out: dict[str, Any] = {
        "generator": {
            "script": "tests/golden/make_image_match_vectors.py",
            "python": platform.python_version(),
            "image_match": importlib.metadata.version("image_match"),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "scikit_image": skimage.__version__,
            "encoding": "signature characters: chr(ord('a') + value + 8)",
        },
        "parameters": {key: {k: v for k, v in p.items()} for key, p in PARAMETERS.items()},
        "signatures": {},
        "arrays": {},
        "steps": {},
        "records": {},
        "words": {},
        "distances": {},
        "orientations": {},
    }
    for key, parameters in PARAMETERS.items():
        gis = ImageSignature(**parameters)
        out["signatures"][key] = {
            name: outcome(gis.generate_signature, (IMAGES / name).read_bytes(), bytestream=True)
            for name in names
        }
        # arrays: 8-bit RGB as decoded, the same scaled to float, and 16-bit RGB
        photo = rgb("chelsea.jpg")
        out["arrays"][key] = {
            "uint8": outcome(gis.generate_signature, photo),
            "float64": outcome(gis.generate_signature, photo / 255.0),
            "uint16": outcome(gis.generate_signature, photo.astype(np.uint16) * 257),
        }
    for key in STEP_PARAMETERS:
        gis = ImageSignature(**PARAMETERS[key])
        out["steps"][key] = {
            name: steps(gis, gis.preprocess_image((IMAGES / name).read_bytes(), bytestream=True))
            for name in STEP_IMAGES
        }
    base = SignatureDatabaseBase()
    record = make_record(
        "coffee.jpg",
        base.gis,
        base.k,
        base.N,
        img=(IMAGES / "coffee.jpg").read_bytes(),
        bytestream=True,
        metadata={"tag": "x"},
    )
    out["records"]["coffee.jpg"] = {
        k: (encoded(np.array(v)) if k == "signature" else v) for k, v in record.items()
    }
    for k, n_words in WORDS:
        table = {}
        for name in names:
            sig = ImageSignature().generate_signature((IMAGES / name).read_bytes(), bytestream=True)
            words = get_words(sig, k, n_words)
            max_contrast(words)
            table[name] = [int(w) for w in words_to_int(words)]
        out["words"][f"{k},{n_words}"] = table
    gis = ImageSignature(n_levels=3)
    sigs = {
        name: gis.generate_signature((IMAGES / name).read_bytes(), bytestream=True)
        for name in names
    }
    stacked = np.array([sigs[name] for name in names])
    out["distances"]["n_levels=3"] = {
        "pairs": {
            f"{a}|{b}": float(gis.normalized_distance(sigs[a], sigs[b])).hex()
            for a, b in [("rocket.jpg", "rocket_progressive.jpg"), ("coffee.jpg", "chelsea.jpg")]
        },
        "query": "rocket.jpg",
        "matrix": [float(d).hex() for d in normalized_distance(stacked, sigs["rocket.jpg"])],
        "names": names,
    }
    wrapped = goldberg.rgb2gray
    goldberg.rgb2gray = lambda image: (
        np.ascontiguousarray(image) if image.ndim == 2 else wrapped(image)
    )
    try:
        for name in ORIENTATION_IMAGES:
            captured = Captured()
            captured.search_image(
                (IMAGES / name).read_bytes(), all_orientations=True, bytestream=True
            )
            out["orientations"][name] = sorted({encoded(s) for s in captured.searched})
    finally:
        goldberg.rgb2gray = wrapped
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
