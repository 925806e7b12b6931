"""``lookalike.image_match``: image-match 1.1.2's Python API, bit for bit.

The expected values in ``golden/image_match.json`` were computed by image-match itself
(``golden/make_image_match_vectors.py``, in the scratch environment of ``golden/README.md``)
for the defaults and for each parameter away from its default: signatures of the 21
golden images and of arrays, each step's output, records, words and distances, and the
signatures its own ``all_orientations`` loop searched for.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike import signature as sig
from lookalike.config import Settings
from lookalike.errors import FetchError, ImageTooLarge
from lookalike.image_match.goldberg import CorruptImageError, ImageSignature
from lookalike.image_match.signature_database_base import (
    SignatureDatabaseBase,
    get_words,
    make_record,
    max_contrast,
    normalized_distance,
    words_to_int,
)

GOLDEN = Path(__file__).parent / "golden"
IMAGES = GOLDEN / "images"
VECTORS: dict[str, Any] = json.loads((GOLDEN / "image_match.json").read_text())
NAMES = sorted(VECTORS["signatures"]["defaults"])
PARAMETERS = sorted(VECTORS["parameters"])


def parameters(key: str) -> dict[str, Any]:
    """A parameter set as image-match took it (JSON turned the tuples into lists)."""
    out = dict(VECTORS["parameters"][key])
    if out.get("crop_percentiles") is not None:
        out["crop_percentiles"] = tuple(out["crop_percentiles"])
    return out


def decoded(text: str) -> np.ndarray:
    return np.array([ord(c) - ord("a") - 8 for c in text], dtype=np.int8)


def rgb(name: str) -> np.ndarray:
    with Image.open(BytesIO((IMAGES / name).read_bytes())) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("key", PARAMETERS)
def test_signatures_of_bytes_are_image_matchs_for_every_parameter_set(key: str) -> None:
    gis = ImageSignature(**parameters(key))
    for name in NAMES:
        expected = VECTORS["signatures"][key][name]
        data = (IMAGES / name).read_bytes()
        if "error" in expected:
            if expected["error"] == "RuntimeWarning":  # image-match warned, gave NaN
                with pytest.raises(ValueError, match="outside"):
                    gis.generate_signature(data, bytestream=True)
            else:  # image-match failed on an empty percentile: here, nothing to split
                assert name == "flat.png" and expected["error"] == "IndexError"
                assert not gis.generate_signature(data, bytestream=True).any()
            continue
        result = gis.generate_signature(data, bytestream=True)
        assert result.dtype == np.int8
        assert result.tolist() == decoded(expected["signature"]).tolist(), name


@pytest.mark.parametrize("key", PARAMETERS)
def test_signatures_of_arrays_are_image_matchs(key: str) -> None:
    gis = ImageSignature(**parameters(key))
    photo = rgb("chelsea.jpg")
    inputs = {
        "uint8": photo,
        "float64": photo / 255.0,
        "uint16": photo.astype(np.uint16) * 257,
    }
    for kind, array in inputs.items():
        expected = VECTORS["arrays"][key][kind]
        if "error" in expected:
            with pytest.raises(ValueError):
                gis.generate_signature(array)
        else:
            assert gis.generate_signature(array).tolist() == decoded(expected["signature"]).tolist()


def test_the_default_parameters_take_the_fast_path_and_the_general_one_agrees() -> None:
    """The general steps, forced on the defaults, give what the certified path gives."""
    gis = ImageSignature()
    assert gis.is_default and not ImageSignature(n=9, P=3).is_default
    for name in NAMES:
        pixels = rgb(name)
        fast = gis.generate_signature(pixels)
        assert fast.tolist() == sig.signature(pixels).tolist()
        general = gis.signature_of_grey(sig.grey(np.ascontiguousarray(pixels)))
        assert general.tolist() == fast.tolist(), name


@pytest.mark.parametrize("key", sorted(VECTORS["steps"]))
def test_each_static_step_is_image_matchs(key: str) -> None:
    gis = ImageSignature(**parameters(key))
    for name, expected in VECTORS["steps"][key].items():
        grey = ImageSignature.preprocess_image((IMAGES / name).read_bytes(), bytestream=True)
        window = None
        if gis.crop_percentiles is not None:
            window = ImageSignature.crop_image(
                grey, gis.lower_percentile, gis.upper_percentile, gis.fix_ratio
            )
        rows, columns = ImageSignature.compute_grid_points(grey, n=gis.n, window=window)
        if "error" in expected:
            with pytest.raises(ValueError, match="outside"):
                ImageSignature.compute_mean_level(grey, rows, columns, P=gis.P)
            continue
        assert [list(w) for w in window] == expected["window"]
        assert [rows.tolist(), columns.tolist()] == expected["grid"]
        means = ImageSignature.compute_mean_level(grey, rows, columns, P=gis.P)
        assert [float(v).hex() for v in means.ravel()] == expected["means"]
        differences = ImageSignature.compute_differentials(means, gis.diagonal_neighbors)
        assert list(differences.shape) == expected["differentials_shape"]
        assert differences.ravel().tolist() == [float.fromhex(v) for v in expected["differentials"]]
        assert (
            ImageSignature.normalize_and_threshold(
                differences, gis.identical_tolerance, gis.n_levels
            )
            is None
        )
        assert differences.ravel().tolist() == decoded(expected["thresholded"]).tolist()


def test_records_words_and_distances_are_image_matchs() -> None:
    base = SignatureDatabaseBase()
    data = (IMAGES / "coffee.jpg").read_bytes()
    record = make_record(
        "coffee.jpg", base.gis, base.k, base.N, img=data, bytestream=True, metadata={"tag": "x"}
    )
    expected = dict(VECTORS["records"]["coffee.jpg"])
    assert decoded(expected.pop("signature")).tolist() == record.pop("signature")
    assert record == expected
    assert all(type(v) is int for k, v in record.items() if k.startswith("simple_word_"))
    for layout, table in VECTORS["words"].items():
        k, n = map(int, layout.split(","))
        for name, words in table.items():
            w = get_words(
                ImageSignature().generate_signature((IMAGES / name).read_bytes(), bytestream=True),
                k,
                n,
            )
            assert max_contrast(w) is None
            assert words_to_int(w).tolist() == words, (layout, name)
    golden = VECTORS["distances"]["n_levels=3"]
    gis = ImageSignature(n_levels=3)
    sigs = {
        n: gis.generate_signature((IMAGES / n).read_bytes(), bytestream=True)
        for n in golden["names"]
    }
    for pair, value in golden["pairs"].items():
        a, b = pair.split("|")
        assert gis.normalized_distance(sigs[a], sigs[b]) == float.fromhex(value)
    stacked = np.array([sigs[n] for n in golden["names"]])
    matrix = normalized_distance(stacked, sigs[golden["query"]])
    assert matrix.tolist() == [float.fromhex(v) for v in golden["matrix"]]
    # the 0/0 of two featureless signatures: NaN as image-match's method, 1 in the matrix
    zero = np.zeros(648, dtype=np.int8)
    assert np.isnan(ImageSignature.normalized_distance(zero, zero))
    assert normalized_distance(zero[None, :], zero).tolist() == [1.0]


def test_words_refuse_impossible_layouts() -> None:
    short = np.arange(10, dtype=np.int8) % 3 - 1
    with pytest.raises(ValueError, match="Word length"):
        get_words(short, 11, 2)
    with pytest.raises(ValueError, match="Number of words"):
        get_words(short, 2, 11)
    assert get_words(short, 4, 4)[-1].tolist() == [0, 1, -1, 0]  # from 7, padded with a zero


def test_constructors_refuse_what_image_match_refused() -> None:
    for bad in (
        {"n": 1},
        {"n": 9.0},
        {"P": 0},
        {"crop_percentiles": (50, 40)},
        {"crop_percentiles": (5,)},
        {"identical_tolerance": 2.0},
        {"n_levels": 0},
        {"diagonal_neighbors": 1},
        {"identical_tolerance": "0.1"},
    ):
        with pytest.raises((ValueError, TypeError)):
            ImageSignature(**bad)
    with pytest.raises(TypeError, match="k should"):
        SignatureDatabaseBase(k=16.0)
    with pytest.raises(TypeError, match="distance_cutoff"):
        SignatureDatabaseBase(distance_cutoff=1)
    with pytest.raises(ValueError, match="distance_cutoff"):
        SignatureDatabaseBase(distance_cutoff=-0.5)


class DictDatabase(SignatureDatabaseBase):
    """A user's driver, as image-match's docs asked for one: a dict of records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: dict[int, dict[str, Any]] = {}
        self.searched: list[dict[str, Any]] = []

    def insert_single_record(self, rec: dict[str, Any]) -> None:  # no refresh_after
        self.records[len(self.records)] = rec

    def search_single_record(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        self.searched.append(rec)
        query = np.array(rec["signature"])
        found = []
        for key, stored in self.records.items():
            dist = normalized_distance(np.array([stored["signature"]]), query)[0]
            if dist < self.distance_cutoff:
                found.append({"id": key, "dist": dist, "path": stored["path"]})
        return found + found  # duplicates are allowed: search_image removes them


def test_a_user_subclass_works_through_add_image_and_search_image() -> None:
    db = DictDatabase()
    for name in ("rocket.jpg", "coffee.jpg", "chelsea.jpg"):
        db.add_image(name, img=(IMAGES / name).read_bytes(), bytestream=True, metadata={"n": name})
    assert db.records[0]["metadata"] == {"n": "rocket.jpg"}
    results = db.search_image((IMAGES / "rocket_progressive.jpg").read_bytes(), bytestream=True)
    assert [r["path"] for r in results] == ["rocket.jpg"]
    expected = sig.distance(
        sig.signature(rgb("rocket.jpg")), sig.signature(rgb("rocket_progressive.jpg"))
    )
    assert results[0]["dist"] == expected
    assert len(db.searched) == 1
    assert all(f"simple_word_{i}" in db.searched[0] for i in range(63))


def test_all_orientations_searches_the_eight_symmetries() -> None:
    db = DictDatabase()
    photo = rgb("chelsea.jpg")
    db.add_image("turned", img=np.ascontiguousarray(np.rot90(np.fliplr(photo))))
    assert db.search_image(photo) == []  # a mirrored rotation: not found straight
    found = db.search_image(photo, all_orientations=True)
    assert [r["path"] for r in found] == ["turned"] and found[0]["dist"] == 0.0
    searched = {tuple(r["signature"]) for r in db.searched[1:]}
    assert searched == {tuple(s) for s in sig.orientations(photo).tolist()}


@pytest.mark.parametrize("name", sorted(VECTORS["orientations"]))
def test_the_image_match_option_searches_image_matchs_own_transforms(name: str) -> None:
    db = DictDatabase()
    db.search_image((IMAGES / name).read_bytes(), all_orientations="image-match", bytestream=True)
    searched = sorted({"".join(chr(ord("a") + v + 8) for v in r["signature"]) for r in db.searched})
    assert searched == VECTORS["orientations"][name]
    with pytest.raises(ValueError, match="all_orientations"):
        db.search_image((IMAGES / name).read_bytes(), all_orientations="every", bytestream=True)


def test_paths_and_bytes_decode_as_image_match_did(tmp_path: Path) -> None:
    """A file is read as image-match read bytes: EXIF orientation ignored."""
    gis = ImageSignature()
    name = "coffee_exif_rotated.jpg"
    expected = decoded(VECTORS["signatures"]["defaults"][name]["signature"])
    assert gis.generate_signature(str(IMAGES / name)).tolist() == expected.tolist()
    assert gis.generate_signature(IMAGES / name).tolist() == expected.tolist()
    assert gis.generate_signature(str(IMAGES / name).encode()).tolist() == expected.tolist()
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(CorruptImageError):
        gis.generate_signature(str(tmp_path / "broken.jpg"))
    with pytest.raises(CorruptImageError):
        gis.generate_signature(b"not an image", bytestream=True)
    with pytest.raises(TypeError, match="Path or image"):
        gis.generate_signature(12)


def test_limits_and_the_address_policy_apply() -> None:
    small = ImageSignature(settings=Settings(max_image_bytes=1000))
    with pytest.raises(ImageTooLarge):
        small.generate_signature((IMAGES / "rocket.jpg").read_bytes(), bytestream=True)
    with pytest.raises(FetchError, match="loopback"):
        ImageSignature().generate_signature("http://127.0.0.1:9/picture.jpg")
    with pytest.raises(ValueError, match="H×W"):
        ImageSignature().generate_signature(np.zeros((4, 4, 2), dtype=np.uint8))
