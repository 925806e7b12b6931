"""orientations: the 8 symmetries of the square, their layouts, and EXIF's numbering."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike import signature
from lookalike.orientations import EXIF, LAYOUTS, ORIENTATIONS, turn

IMAGE = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)  # not square: turns show

# What each name means, in NumPy's own words.
NUMPY = {
    "identity": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "mirror": np.fliplr,
    "mirror_rot90": lambda a: np.rot90(np.fliplr(a), 1),
    "mirror_rot180": lambda a: np.rot90(np.fliplr(a), 2),
    "mirror_rot270": lambda a: np.rot90(np.fliplr(a), 3),
}


def test_the_names_their_order_and_the_signatures_names_are_one() -> None:
    assert list(ORIENTATIONS) == list(NUMPY)
    assert len(LAYOUTS) == len(set(LAYOUTS)) == 8
    assert signature.ORIENTATIONS is ORIENTATIONS
    assert signature.turn is turn


@pytest.mark.parametrize("i", range(8))
def test_turn_is_a_view_of_the_numpy_symmetry(i: int) -> None:
    turned = turn(IMAGE, i)
    expected = NUMPY[ORIENTATIONS[i]](IMAGE)
    assert np.array_equal(turned, expected)
    assert turned.strides == expected.strides
    assert np.shares_memory(turned, IMAGE)
    assert np.array_equal(turn(IMAGE[:, :, 0], i), expected[:, :, 0])


@pytest.mark.parametrize("tag", range(1, 9))
def test_the_exif_orientation_is_pillows(tag: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = tag
    buffer = BytesIO()
    Image.fromarray(IMAGE).save(buffer, "PNG", exif=exif)
    with Image.open(buffer) as image:
        upright = np.asarray(ImageOps.exif_transpose(image))
    assert np.array_equal(turn(IMAGE, EXIF[tag]), upright)
