"""The Goldberg signature: bit-identical to image-match 1.1.2, and robust where it should be.

The golden vectors in ``golden/signatures.json`` were computed by image-match itself from
the images in ``golden/images`` (see ``golden/README.md``); they pin signatures, simple
words and distances exactly. The property tests below use scikit-image's sample photos.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from skimage import data
from skimage.color import rgb2gray

from lookalike import images
from lookalike import signature as sig
from lookalike.orientations import LAYOUTS
from lookalike.records import Footprint
from lookalike.signature.certified import (
    WHOLE_GREY_MAX_PIXELS,
    certain_grids,
    certified_signatures,
    line_profiles,
)
from lookalike.signature.quantise import percentile_position
from lookalike.signature.reference import (
    grey_is_per_pixel,
    reference_orientations,
    reference_signature,
)

GOLDEN = Path(__file__).parent / "golden"
IMAGES = GOLDEN / "images"
VECTORS: dict[str, Any] = json.loads((GOLDEN / "signatures.json").read_text())
NAMES = sorted(VECTORS["images"])

RGB = npt.NDArray[np.uint8]


@cache
def decoded(name: str) -> RGB:
    """A golden image decoded exactly as image-match decodes bytes."""
    with Image.open(BytesIO((IMAGES / name).read_bytes())) as image:
        rgb = np.asarray(image.convert("RGB"))
    rgb.flags.writeable = False
    return rgb


def golden_signature(name: str) -> npt.NDArray[np.int8]:
    return np.array(VECTORS["images"][name]["signature"], dtype=np.int8)


# -- golden vectors from image-match ---------------------------------------------------------


def test_golden_set_is_complete_and_small() -> None:
    files = sorted(p.name for p in IMAGES.iterdir() if p.is_file())
    assert files == NAMES
    assert len(files) >= 14
    assert sum((IMAGES / name).stat().st_size for name in files) < 1_500_000
    assert VECTORS["generator"]["image_match"] == "1.1.2"


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_image_matchs(name: str) -> None:
    rgb = decoded(name)
    assert list(rgb.shape[:2]) == VECTORS["images"][name]["shape"]
    result = sig.signature(rgb)
    assert result.dtype == np.int8
    assert result.shape == (sig.LENGTH,)
    assert result.tolist() == VECTORS["images"][name]["signature"]


@pytest.mark.parametrize("name", NAMES)
def test_words_are_image_matchs(name: str) -> None:
    expected = VECTORS["images"][name]["words"]
    assert len(expected) == sig.WORD_COUNT
    assert sig.words(golden_signature(name)).tolist() == expected
    assert sig.words(sig.signature(decoded(name))).tolist() == expected


@pytest.mark.parametrize("pair", VECTORS["pairs"], ids=lambda p: f"{p['a']}-{p['b']}")
def test_distance_is_image_matchs(pair: dict[str, Any]) -> None:
    a, b = golden_signature(pair["a"]), golden_signature(pair["b"])
    assert sig.distance(a, b) == pair["distance"]
    assert (
        sig.distance(sig.signature(decoded(pair["a"])), sig.signature(decoded(pair["b"])))
        == (pair["distance"])
    )


@pytest.mark.parametrize("matrix", VECTORS["matrix"], ids=lambda m: m["query"])
def test_distances_are_image_matchs(matrix: dict[str, Any]) -> None:
    stored = np.array([golden_signature(name) for name in matrix["stored"]])
    query = golden_signature(matrix["query"])
    assert sig.distances(stored, query).tolist() == matrix["distances"]
    assert [sig.distance(row, query) for row in stored] == matrix["distances"]


def test_orientation_names_are_the_golden_ones() -> None:
    assert tuple(t["name"] for t in VECTORS["orientation_transforms"]) == sig.ORIENTATIONS
    assert sig.ORIENTATIONS[0] == "identity"


@pytest.mark.parametrize("name", sorted(VECTORS["orientations"]))
def test_orientations_are_image_matchs(name: str) -> None:
    result = sig.orientations(decoded(name))
    assert result.dtype == np.int8
    assert result.shape == (len(sig.ORIENTATIONS), sig.LENGTH)
    assert result.tolist() == VECTORS["orientations"][name]


# -- grey levels ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["astronaut.png", "chelsea_rgba.png", "grey_steps.png", "tall_thin.png", "tiny.png"]
)
def test_grey_is_scikit_images_bit_for_bit(name: str) -> None:
    rgb = decoded(name)
    expected = rgb2gray(rgb)
    result = sig.grey(rgb)
    assert result.dtype == np.float64
    assert result.shape == expected.shape
    assert result.tobytes() == expected.tobytes()


@pytest.mark.parametrize("name", ["coffee.jpg", "grey_steps.png", "tall_thin.png", "tiny.png"])
def test_signature_of_grey_equals_signature_of_rgb(name: str) -> None:
    rgb = decoded(name)
    assert sig.signature(sig.grey(rgb)).tolist() == sig.signature(rgb).tolist()
    assert sig.signature(rgb2gray(rgb)).tolist() == sig.signature(rgb).tolist()
    assert sig.orientations(sig.grey(rgb)).tolist() == sig.orientations(rgb).tolist()


# -- properties on photographs ----------------------------------------------------------------

PHOTOS = [
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "coins",
    "hubble_deep_field",
    "clock",
    "immunohistochemistry",
    "grass",
]


@cache
def photo(name: str) -> RGB:
    with Image.fromarray(getattr(data, name)()) as image:
        rgb = np.asarray(image.convert("RGB"))
    rgb.flags.writeable = False
    return rgb


@cache
def photo_signature(name: str) -> npt.NDArray[np.int8]:
    return sig.signature(photo(name))


def resized(rgb: RGB, factor: float) -> RGB:
    image = Image.fromarray(rgb)
    size = (round(image.width * factor), round(image.height * factor))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))


def jpeg(rgb: RGB, quality: int) -> RGB:
    buffer = BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    with Image.open(BytesIO(buffer.getvalue())) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("name", PHOTOS)
def test_signature_is_648_small_ints(name: str) -> None:
    result = photo_signature(name)
    assert result.shape == (648,)
    assert result.dtype == np.int8
    assert set(np.unique(result).tolist()) <= {-2, -1, 0, 1, 2}
    assert sig.distance(result, result) == 0.0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda rgb: resized(rgb, 0.5), id="half-size"),
        pytest.param(lambda rgb: resized(rgb, 1.5), id="one-and-a-half-size"),
        pytest.param(lambda rgb: jpeg(rgb, 50), id="jpeg-quality-50"),
    ],
)
@pytest.mark.parametrize("name", PHOTOS)
def test_copies_are_near(name: str, change: Callable[[RGB], RGB]) -> None:
    assert sig.distance(photo_signature(name), sig.signature(change(photo(name)))) < 0.2


@pytest.mark.parametrize("a, b", list(itertools.combinations(PHOTOS, 2)))
def test_unrelated_photos_are_far(a: str, b: str) -> None:
    assert sig.distance(photo_signature(a), photo_signature(b)) > 0.5


# The 8 symmetries applied to an H×W×3 image, written independently of lookalike.orientations,
# each with the name of its inverse in ORIENTATIONS.
SYMMETRIES: dict[str, tuple[Callable[[RGB], RGB], str]] = {
    "identity": (lambda a: a, "identity"),
    "rot90": (lambda a: np.rot90(a, 1), "rot270"),
    "rot180": (lambda a: np.rot90(a, 2), "rot180"),
    "rot270": (lambda a: np.rot90(a, 3), "rot90"),
    "mirror": (lambda a: a[:, ::-1], "mirror"),
    "mirror_rot90": (lambda a: np.rot90(a[:, ::-1], 1), "mirror_rot90"),
    "mirror_rot180": (lambda a: np.rot90(a[:, ::-1], 2), "mirror_rot180"),
    "mirror_rot270": (lambda a: np.rot90(a[:, ::-1], 3), "mirror_rot270"),
}


def test_symmetries_and_inverses() -> None:
    assert tuple(SYMMETRIES) == sig.ORIENTATIONS
    probe = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    images = {name: t(probe).tobytes() for name, (t, _) in SYMMETRIES.items()}
    assert len(set(images.values())) == 8
    for transform, inverse in SYMMETRIES.values():
        undo = SYMMETRIES[inverse][0]
        assert np.array_equal(undo(transform(probe)), probe)


@pytest.mark.parametrize("transform", list(SYMMETRIES))
@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_every_symmetry_is_found_at_distance_zero(name: str, transform: str) -> None:
    apply, inverse = SYMMETRIES[transform]
    original = photo_signature(name)
    rows = sig.orientations(apply(photo(name)))
    assert rows[sig.ORIENTATIONS.index(inverse)].tolist() == original.tolist()
    assert min(sig.distances(rows, original)) == 0.0


@pytest.mark.parametrize("name", ["chelsea.jpg", "tall_thin.png", "tiny.png"])
def test_orientation_rows_are_signatures_of_transformed_images(name: str) -> None:
    """Row i is what would have been stored for the image turned by ORIENTATIONS[i]."""
    rgb = decoded(name)
    rows = sig.orientations(rgb)
    for i, orientation in enumerate(sig.ORIENTATIONS):
        transformed = SYMMETRIES[orientation][0](rgb)
        assert rows[i].tolist() == sig.signature(transformed).tolist(), orientation
        contiguous = np.ascontiguousarray(transformed)
        assert rows[i].tolist() == sig.signature(contiguous).tolist(), orientation


@pytest.mark.parametrize("name", ["flat.png"])
def test_featureless_image(name: str) -> None:
    rgb = decoded(name)
    zeros = sig.signature(rgb)
    assert zeros.dtype == np.int8
    assert zeros.tolist() == [0] * sig.LENGTH
    assert sig.orientations(rgb).tolist() == [[0] * sig.LENGTH] * 8
    assert sig.distance(zeros, zeros) == 1.0
    assert sig.distances(np.zeros((3, sig.LENGTH), dtype=np.int8), zeros).tolist() == [1.0] * 3
    assert sig.distance(zeros, photo_signature("astronaut")) == 1.0
    assert sig.words(zeros).tolist() == [sum(3**i for i in range(16))] * sig.WORD_COUNT


def test_flat_arrays_of_any_colour_are_featureless() -> None:
    for colour in [(0, 0, 0), (255, 255, 255), (12, 200, 77)]:
        rgb = np.full((50, 70, 3), colour, dtype=np.uint8)
        assert not sig.signature(rgb).any()
        assert not sig.signature(np.full((50, 70), 0.5)).any()


SIGNATURES = hnp.arrays(np.int8, sig.LENGTH, elements=st.integers(-2, 2))
SPARSE_SIGNATURES = hnp.arrays(
    np.int8, sig.LENGTH, elements=st.sampled_from([0, 0, 0, 0, 0, 0, 0, -2, -1, 1, 2])
)


@settings(max_examples=60, deadline=None)
@given(
    stored=st.lists(st.one_of(SIGNATURES, SPARSE_SIGNATURES), min_size=1, max_size=12),
    query=st.one_of(SIGNATURES, SPARSE_SIGNATURES),
    zero_rows=st.integers(0, 2),
)
def test_distances_equal_distance_row_by_row(
    stored: list[npt.NDArray[np.int8]], query: npt.NDArray[np.int8], zero_rows: int
) -> None:
    matrix = np.array(stored + [np.zeros(sig.LENGTH, dtype=np.int8)] * zero_rows)
    result = sig.distances(matrix, query)
    assert result.dtype == np.float64
    assert result.tolist() == [sig.distance(row, query) for row in matrix]
    assert sig.distances(matrix, np.zeros(sig.LENGTH, dtype=np.int8)).tolist() == [
        sig.distance(row, np.zeros(sig.LENGTH)) for row in matrix
    ]


@settings(max_examples=60, deadline=None)
@given(a=SIGNATURES, b=SIGNATURES)
def test_distance_is_symmetric_and_bounded(
    a: npt.NDArray[np.int8], b: npt.NDArray[np.int8]
) -> None:
    d = sig.distance(a, b)
    assert d == sig.distance(b, a)
    assert 0.0 <= d <= 1.0
    assert sig.distance(a, a) == (0.0 if a.any() else 1.0)
    assert sig.distance(a, -a) == 1.0


@settings(max_examples=60, deadline=None)
@given(s=SIGNATURES)
def test_words_read_signs_in_base_3(s: npt.NDArray[np.int8]) -> None:
    starts = [int(x) for x in np.linspace(0, sig.LENGTH, sig.WORD_COUNT, endpoint=False)]
    signs = [int(np.sign(v)) for v in s] + [0] * sig.WORD_LENGTH
    expected = [sum((signs[p + i] + 1) * 3**i for i in range(sig.WORD_LENGTH)) for p in starts]
    assert sig.words(s).tolist() == expected


# -- errors -----------------------------------------------------------------------------------

BAD_SHAPES = {
    "rgba": np.zeros((20, 20, 4), dtype=np.uint8),
    "one channel": np.zeros((20, 20, 1), dtype=np.uint8),
    "vector": np.zeros(20, dtype=np.float64),
    "scalar": np.zeros((), dtype=np.float64),
    "4-d": np.zeros((2, 20, 20, 3), dtype=np.uint8),
}
BAD_DTYPES = {
    "float rgb": np.full((20, 20, 3), 0.5, dtype=np.float64),
    "uint16 rgb": np.full((20, 20, 3), 1000, dtype=np.uint16),
    "int rgb": np.full((20, 20, 3), -1, dtype=np.int64),
}


@pytest.mark.parametrize("image", BAD_SHAPES.values(), ids=list(BAD_SHAPES))
def test_bad_shapes_raise_value_error(image: npt.NDArray[Any]) -> None:
    with pytest.raises(ValueError):
        sig.signature(image)
    with pytest.raises(ValueError):
        sig.orientations(image)


@pytest.mark.parametrize("image", BAD_DTYPES.values(), ids=list(BAD_DTYPES))
def test_rgb_that_is_not_8_bit_raises_value_error(image: npt.NDArray[Any]) -> None:
    with pytest.raises(ValueError):
        sig.signature(image)
    with pytest.raises(ValueError):
        sig.orientations(image)


@pytest.mark.parametrize(
    "image",
    [np.zeros((20, 20), dtype=np.float64), *BAD_SHAPES.values(), *BAD_DTYPES.values()],
    ids=["grey", *BAD_SHAPES, *BAD_DTYPES],
)
def test_grey_wants_8_bit_rgb(image: npt.NDArray[Any]) -> None:
    with pytest.raises(ValueError):
        sig.grey(image)


def test_mismatched_signature_lengths_raise_value_error() -> None:
    a = np.ones(sig.LENGTH, dtype=np.int8)
    with pytest.raises(ValueError):
        sig.distance(a, a[:-1])
    with pytest.raises(ValueError):
        sig.distances(np.ones((3, sig.LENGTH), dtype=np.int8), a[:-1])


def test_8_bit_grey_array_raises_value_error() -> None:
    with pytest.raises(ValueError):
        sig.signature(np.zeros((20, 20), dtype=np.uint8))


@pytest.mark.parametrize("shape", [(0, 20, 3), (20, 0, 3), (0, 0, 3)])
def test_empty_image_raises_value_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        sig.signature(np.zeros(shape, dtype=np.uint8))


# -- the certified path -------------------------------------------------------------------
# ``signature`` and ``orientations`` decide the crop from exact integer luma profiles and
# compute the grey of the patches only; they must give what the reference path (the
# whole float64 grey, as image-match) gives, and must not fall back to it on ordinary
# pictures (or they would be correct and slow).


def _with_border(rgb: RGB, top: int, bottom: int, left: int, right: int, colour: int) -> RGB:
    return np.pad(rgb, ((top, bottom), (left, right), (0, 0)), constant_values=colour)


def _same_luma_band(height: int, width: int, seed: int) -> RGB:
    """Random pixels under a top third whose rows alternate (252, 0, 0) and (0, 68, 68):
    2125 × 252 = (7154 + 721) × 68, so these rows' integer luma profile is 0."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    colours = np.array([[252, 0, 0], [0, 68, 68]], dtype=np.uint8)
    out[: height // 3] = colours[np.arange(width) % 2]
    return out


def _certified_cases() -> dict[str, RGB]:
    rng = np.random.default_rng(7)
    cases: dict[str, RGB] = {}
    for name in PHOTOS:
        rgb = photo(name)
        for height, width in ((481, 641), (480, 640), (101, 1001), (333, 77), (64, 2000)):
            cases[f"{name}-{height}x{width}"] = np.asarray(
                Image.fromarray(rgb).resize((width, height))
            )
        for i in range(3):
            widths = rng.integers(0, 80, 4)
            colour = int(rng.choice([0, 255, int(rng.integers(256))]))
            cases[f"{name}-border{i}"] = _with_border(rgb, *map(int, widths), colour)
        cases[f"{name}-letterbox"] = _with_border(
            rgb, rgb.shape[0] // 3, rgb.shape[0] // 3, 0, 0, 0
        )
        turned = decoded("chelsea.jpg") if name == "chelsea" else rgb
        cases[f"{name}-jpeg20"] = jpeg(turned, 20)
    for name in NAMES:
        cases[f"golden-{name}"] = decoded(name)
    return cases


CERTIFIED_CASES = _certified_cases()


@pytest.mark.parametrize("name", sorted(CERTIFIED_CASES))
def test_certified_path_equals_the_reference_path(name: str) -> None:
    rgb = CERTIFIED_CASES[name]
    assert sig.signature(rgb).tolist() == reference_signature(rgb).tolist()
    assert np.array_equal(sig.orientations(rgb), reference_orientations(rgb))


def test_certified_path_decides_ordinary_pictures() -> None:
    big_enough = [rgb for rgb in CERTIFIED_CASES.values() if min(rgb.shape[:2]) >= 32]
    decided = [certified_signatures(rgb, LAYOUTS) is not None for rgb in big_enough]
    assert len(big_enough) > 60
    assert sum(decided) >= 0.95 * len(big_enough)


def test_a_uniform_border_at_the_percentile_is_decided_and_exact() -> None:
    """A white border of exactly 5 % of the rows puts the lower limit on a level run."""
    rgb = np.asarray(Image.fromarray(photo("coffee")).resize((400, 380)))
    bordered = _with_border(rgb, 20, 0, 0, 0, 255)  # 20 of 400 rows
    assert certified_signatures(bordered, LAYOUTS) is not None
    assert np.array_equal(sig.orientations(bordered), reference_orientations(bordered))


def test_rows_of_different_colours_with_equal_luma_are_not_guessed() -> None:
    """Integer luma cannot tell such a row from a uniform one: the reference decides."""
    rgb = _same_luma_band(200, 300, 1)
    assert certified_signatures(rgb, LAYOUTS[:1]) is None
    assert sig.signature(rgb).tolist() == reference_signature(rgb).tolist()
    assert np.array_equal(sig.orientations(rgb), reference_orientations(rgb))


@settings(max_examples=80, deadline=None)
@given(
    blocks=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 5), st.integers(1, 5), st.just(3)),
        elements=st.sampled_from([0, 1, 128, 255]),
    ),
    scale=st.integers(7, 40),
    border=st.tuples(*[st.integers(0, 30)] * 4),
    colour=st.sampled_from([0, 255]),
)
def test_certified_path_on_blocky_images(
    blocks: RGB, scale: int, border: tuple[int, int, int, int], colour: int
) -> None:
    """Few colours in blocks, bordered: level lines and ties, the certificate's hard case."""
    image = _with_border(np.repeat(np.repeat(blocks, scale, 0), scale, 1), *border, colour)
    assert sig.signature(image).tolist() == reference_signature(image).tolist()
    assert np.array_equal(sig.orientations(image), reference_orientations(image))


@pytest.mark.parametrize("size", [5, 20, 21, 40, 41, 480, 481, 640, 641, 1001])
@pytest.mark.parametrize("percentile", [5, 50, 95])
def test_percentile_positions_are_numpys(size: int, percentile: int) -> None:
    position = percentile_position(size, percentile)
    assert position is not None
    k, t = position
    values = np.sort(np.random.default_rng(size).random(size))
    expected = np.percentile(values, percentile)
    a, b = values[k], values[k + 1]
    assert (b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t) == expected


# -- signatures of reduced decodes --------------------------------------------------------

REDUCED_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"]


@cache
def reduced_decode(name: str) -> tuple[RGB, RGB, Footprint]:
    """A photo as a 2000 px JPEG: decoded at full size, and at 1/2 with its footprint."""
    with Image.fromarray(photo(name)) as image:
        scale = 2000 / max(image.size)
        big = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = BytesIO()
    big.save(buffer, "JPEG", quality=90)
    limits = {"max_bytes": 50_000_000, "max_pixels": 50_000_000}
    full = images.decode(buffer.getvalue(), **limits)
    small, footprint = images.decode_reduced(buffer.getvalue(), **limits)
    assert footprint is not None and footprint.scale == 2
    return full, small, footprint


def test_reduced_decodes_sign_like_the_full_size_picture() -> None:
    """The footprint puts crop, grid and patches where the full-size picture has them:
    far closer than signing the reduced pixels as they are."""
    with_footprint, as_decoded = [], []
    for name in REDUCED_PHOTOS:
        full, small, footprint = reduced_decode(name)
        exact = sig.signature(full)
        with_footprint.append(sig.distance(exact, sig.signature(small, footprint)))
        as_decoded.append(sig.distance(exact, sig.signature(small)))
    assert max(with_footprint) <= 0.05
    assert np.median(with_footprint) <= 0.01
    assert np.mean(with_footprint) < 0.5 * np.mean(as_decoded)


@pytest.mark.parametrize("name", ["chelsea", "rocket"])
def test_reduced_decodes_in_every_orientation(name: str) -> None:
    full, small, footprint = reduced_decode(name)
    rows = sig.orientations(small, footprint)
    for i in range(len(sig.ORIENTATIONS)):
        turned = np.ascontiguousarray(sig.turn(full, i))
        assert sig.distance(rows[i], sig.signature(turned)) <= 0.05, sig.ORIENTATIONS[i]


def test_a_footprint_must_fit_the_pixels() -> None:
    _, small, footprint = reduced_decode("coffee")
    with pytest.raises(ValueError, match="footprint"):
        sig.signature(small[:-3], footprint)
    with pytest.raises(ValueError, match="footprint"):
        sig.signature(small.mean(axis=2), footprint)


def test_opposite_signatures_are_at_distance_one_not_beyond() -> None:
    """‖a − b‖ / (‖a‖ + ‖b‖) is 1 for b = −2a; its float rounding gives 1 + 2e-16."""
    a = np.ones(sig.LENGTH, dtype=np.int8)
    b = np.full(sig.LENGTH, -2, dtype=np.int8)
    assert sig.distance(a, b) == 1.0
    assert sig.distances(np.stack([b, a]), a).tolist() == [1.0, 0.0]


def _decided_by_lines_alone(rgb: RGB) -> bool:
    """Whether the first tier (a few lines, the loosest rounding bound) decides the crop."""
    height, width = rgb.shape[:2]
    area = float(height * width)

    def uniform(block: RGB) -> npt.NDArray[np.bool_]:
        return (block == block[:, :1]).all(axis=(1, 2))

    rows = (lambda i: line_profiles(rgb[i]), lambda i: uniform(rgb[i]))
    columns = (
        lambda j: line_profiles(rgb[:, j].swapaxes(0, 1)),
        lambda j: uniform(rgb[:, j].swapaxes(0, 1)),
    )
    axes = ((*rows, area), (*columns, area))
    return certain_grids(LAYOUTS, (height, width), axes) is not None


def test_a_few_lines_decide_ordinary_pictures() -> None:
    """The crop limits sit at fixed positions unless lines there are level: reading those
    few lines decides nearly every picture, without summing the others."""
    big_enough = [rgb for rgb in CERTIFIED_CASES.values() if min(rgb.shape[:2]) >= 32]
    assert sum(map(_decided_by_lines_alone, big_enough)) >= 0.9 * len(big_enough)


def test_a_faint_line_at_the_limit_is_decided_by_all_the_lines() -> None:
    """A smooth 1990 px gradient whose line 100 (k + 1) has a single luma step of 38 (of
    2,550,000): too faint for the bound that fits any picture of this size, clear for
    the bound from the picture's own (small) variation."""
    height = width = 1990
    image = np.full((height, width, 3), 100, dtype=np.uint8)
    image[:, :, 1] = np.linspace(0, 255, width).round().astype(np.uint8)
    image[100] = (120, 50, 60)
    image[100, width // 2 :] = (119, 50, 63)  # 2125 × -1 + 721 × 3 = 38
    assert not _decided_by_lines_alone(image)
    assert certified_signatures(image, LAYOUTS) is not None
    assert sig.signature(image).tolist() == reference_signature(image).tolist()
    assert np.array_equal(sig.orientations(image), reference_orientations(image))


def test_this_blas_gives_each_pixel_one_grey() -> None:
    """The patches-only grey relies on it here (checked at run time everywhere)."""
    assert grey_is_per_pixel()


def test_without_a_per_pixel_grey_the_whole_grey_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a BLAS rounds a row's tail differently, signatures stay the reference's."""
    monkeypatch.setattr("lookalike.signature.certified.grey_is_per_pixel", lambda: False)
    for name in ("astronaut-480x640", "coffee-border0", "golden-tiny.png"):
        rgb = CERTIFIED_CASES[name]
        assert sig.signature(rgb).tolist() == reference_signature(rgb).tolist()


# -- memory: large pictures ---------------------------------------------------------------------


def _large(height: int, width: int, border: int = 0) -> npt.NDArray[np.uint8]:
    """A photo enlarged past the whole-grey threshold, with grain, and a white border."""
    rgb = np.asarray(Image.fromarray(photo("astronaut")).resize((width, height)))
    grain = np.random.default_rng(3).integers(-3, 4, rgb.shape)
    rgb = np.clip(rgb.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return _with_border(rgb, border, border, 0, 0, 255) if border else rgb


@pytest.mark.parametrize("border", [0, 40])
def test_orientations_of_a_large_picture_from_its_patches_equal_the_reference(border: int):
    """Past 4 megapixels the 8 orientations gather the grey of their patches only (no
    whole float64 grey): the same signatures as the reference, bit for bit."""
    rgb = _large(2100, 2000, border)
    assert rgb.shape[0] * rgb.shape[1] > WHOLE_GREY_MAX_PIXELS
    assert certified_signatures(rgb, LAYOUTS) is not None
    assert np.array_equal(sig.orientations(rgb), reference_orientations(rgb))


@pytest.mark.slow
def test_a_49_megapixel_picture_is_signed_in_a_few_bytes_per_pixel():
    """7000×7000 (under the default 50 MP limit): the 8 orientations allocate at most
    4 bytes per pixel beyond the decoded RGB pixels (peak measured by tracemalloc, which
    NumPy reports its arrays to), where a whole float64 grey alone is 8."""
    import tracemalloc

    tile = np.asarray(Image.fromarray(photo("astronaut")).resize((700, 700)))
    rgb = np.tile(tile, (10, 10, 1))  # quick to make
    tracemalloc.start()
    try:
        sig.orientations(rgb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 4 * rgb.shape[0] * rgb.shape[1], f"{peak / rgb.shape[0] / rgb.shape[1]:.1f} B/px"
