"""The 8 symmetries of the square (4 rotations × mirror), encoded once.

Each orientation has a name (``ORIENTATIONS``, index 0 the identity) and a layout
(``LAYOUTS``): the image transposed or not, then its rows and/or its columns reversed.
The layout is what the code works with: ``turn`` is a view built from it, the signature
reads the grey image through it instead of turning 8 copies, and a ``Footprint`` turns
by it. ``EXIF`` says which orientation puts upright a picture that a camera stored with
an EXIF orientation tag.

Pure Python and NumPy: Pillow's names for these symmetries live with the decoder.
"""

from __future__ import annotations

from typing import Any, Final

import numpy.typing as npt

__all__ = ["EXIF", "LAYOUTS", "ORIENTATIONS", "Layout", "apply_layout", "turn"]

Layout = tuple[bool, bool, bool]
"""(transposed, rows reversed, columns reversed), applied in that order."""

# Names as NumPy would make them: np.rot90 turns a quarter anticlockwise, a mirror is
# np.fliplr first. Stored signatures were searched in this order: never reorder.
_TABLE: Final[tuple[tuple[str, Layout], ...]] = (
    ("identity", (False, False, False)),
    ("rot90", (True, True, False)),
    ("rot180", (False, True, True)),
    ("rot270", (True, False, True)),
    ("mirror", (False, False, True)),
    ("mirror_rot90", (True, False, False)),
    ("mirror_rot180", (False, True, False)),
    ("mirror_rot270", (True, True, True)),
)
ORIENTATIONS: Final = tuple(name for name, _ in _TABLE)
LAYOUTS: Final = tuple(layout for _, layout in _TABLE)

# EXIF Orientation (tag 0x0112) → the orientation that turns the stored pixels upright.
EXIF: Final = {
    tag: ORIENTATIONS.index(name)
    for tag, name in {
        1: "identity",
        2: "mirror",
        3: "rot180",
        4: "mirror_rot180",
        5: "mirror_rot90",
        6: "rot270",
        7: "mirror_rot270",
        8: "rot90",
    }.items()
}


def turn(image: npt.NDArray[Any], orientation: int) -> npt.NDArray[Any]:
    """``ORIENTATIONS[orientation]`` applied to an image (2-D, or H×W×channels): a view
    (the image itself for the identity)."""
    return apply_layout(image, LAYOUTS[orientation])


def apply_layout(image: npt.NDArray[Any], layout: Layout) -> npt.NDArray[Any]:
    """The image transposed, then with its rows and/or columns reversed, as ``layout``
    says: a view (the image itself if it says nothing)."""
    transposed, flip_rows, flip_columns = layout
    turned = image.swapaxes(0, 1) if transposed else image
    if flip_rows or flip_columns:
        turned = turned[:: -1 if flip_rows else 1, :: -1 if flip_columns else 1]
    return turned
