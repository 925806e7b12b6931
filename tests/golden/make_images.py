"""Write the golden test images into ``tests/golden/images/``.

Run from the repository root with the project's dev environment::

    .venv/bin/python tests/golden/make_images.py

The photographs come from the sample data bundled with scikit-image (see README.md in
this folder for their licences); the rest is drawn here from fixed formulas and a seeded
random generator. Output is deterministic for a given Pillow / zlib / libjpeg, but the
committed files are the reference: the golden vectors were computed from them, so only
regenerate the images together with ``signatures.json`` (see README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parent / "images"
MAX_SIDE = 400
JPEG_QUALITY = 85
SEED = 20240611


def _photo(name: str, max_side: int = MAX_SIDE) -> Image.Image:
    """A scikit-image sample photo as a Pillow image, downsized so its longest side fits."""
    array = getattr(data, name)()
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)
    image = Image.fromarray(array)
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, **options)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _gif(image: Image.Image, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="GIF", **options)
    return buffer.getvalue()


# -- photographs ----------------------------------------------------------------------------


def astronaut_png() -> bytes:
    return _png(_photo("astronaut", 256))


def camera_grey_png() -> bytes:
    """An 8-bit greyscale ("L") PNG."""
    return _png(_photo("camera", 256))


def chelsea_jpg() -> bytes:
    return _jpeg(_photo("chelsea"))


def coffee_jpg() -> bytes:
    return _jpeg(_photo("coffee"))


def rocket_jpg() -> bytes:
    return _jpeg(_photo("rocket"))


def rocket_progressive_jpg() -> bytes:
    return _jpeg(_photo("rocket", 300), progressive=True, subsampling=0)


def rocket_cmyk_jpg() -> bytes:
    """A CMYK JPEG (Pillow decodes it to CMYK and converts to RGB)."""
    return _jpeg(_photo("rocket", 240).convert("CMYK"))


def hubble_deep_field_jpg() -> bytes:
    return _jpeg(_photo("hubble_deep_field"))


def coins_grey_jpg() -> bytes:
    """A greyscale (single-component) JPEG."""
    return _jpeg(_photo("coins"))


def grass_grey_png() -> bytes:
    return _png(_photo("grass", 160))


def coffee_exif_rotated_jpg() -> bytes:
    """A JPEG whose EXIF says "rotate 90° clockwise"; image-match ignores the tag."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return _jpeg(_photo("coffee", 320), exif=exif.tobytes())


def horse_bilevel_png() -> bytes:
    """A 1-bit ("1" mode) PNG."""
    return _png(_photo("horse", 200).convert("1"))


def chelsea_rgba_png() -> bytes:
    """RGBA with an alpha ramp and a fully transparent band holding noise in its RGB.

    image-match drops the alpha channel (``convert("RGB")``), so the hidden noise counts.
    """
    rgb = np.asarray(_photo("chelsea", 240).convert("RGB")).copy()
    height, width = rgb.shape[:2]
    rng = np.random.default_rng(SEED)
    band = slice(0, height // 6)
    rgb[band] = rng.integers(0, 256, size=rgb[band].shape, dtype=np.uint8)
    alpha = np.tile(np.linspace(255, 64, width).astype(np.uint8), (height, 1))
    alpha[band] = 0
    return _png(Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA"))


def astronaut_palette_gif() -> bytes:
    """A 64-colour palette GIF with a transparency index."""
    image = _photo("astronaut", 200).quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=0)
    return _gif(image, transparency=0)


# -- drawn ----------------------------------------------------------------------------------


def gradient_png() -> bytes:
    """A smooth RGB gradient: red left to right, green top to bottom, blue diagonally."""
    height, width = 150, 200
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.dstack(
        [
            np.round(255 * x / (width - 1)),
            np.round(255 * y / (height - 1)),
            np.round(255 * (x + y) / (width + height - 2)),
        ]
    ).astype(np.uint8)
    return _png(Image.fromarray(rgb, mode="RGB"))


def grey_steps_png() -> bytes:
    """Flat grey blocks whose levels differ by exactly 1, 2 or 3 steps of 1/255.

    Neighbouring grid points straddle the "identical" tolerance of 2/255, so rounding in
    the grey conversion and the patch means decides their signature values.
    """
    steps = np.array([0, 2, 4, 5, 7, 9, 12, 14, 16, 17, 19, 21])
    levels = (118 + steps[(np.arange(12)[:, None] + 5 * np.arange(9)[None, :]) % 12]).astype(
        np.uint8
    )
    grey = np.kron(levels, np.ones((16, 20), dtype=np.uint8))
    return _png(Image.fromarray(np.dstack([grey, grey, grey]), mode="RGB"))


def colour_blocks_png() -> bytes:
    """Flat colour blocks, some of them of equal grey level under BT.709 weights."""
    palette = np.array(
        [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [128, 128, 128],
            [130, 130, 130],
            [54, 54, 54],  # about the grey of pure red
            [255, 255, 0],
            [0, 255, 255],
            [255, 0, 255],
        ],
        dtype=np.uint8,
    )
    index = (np.arange(6)[:, None] * 2 + np.arange(8)[None, :] * 5) % len(palette)
    rgb = palette[np.kron(index, np.ones((25, 25), dtype=np.int64))]
    return _png(Image.fromarray(rgb, mode="RGB"))


def flat_png() -> bytes:
    """A single flat colour: a featureless image, signature all zeros."""
    return _png(Image.new("RGB", (160, 120), (90, 140, 200)))


def nearly_flat_png() -> bytes:
    """A flat grey with ±1 noise and a faint, wide bump of 3 levels.

    Almost every difference is below the 2/255 tolerance: the signature has just a couple
    of non-zero values, so the quantiles are taken over one or two samples.
    """
    rng = np.random.default_rng(SEED + 1)
    y, x = np.mgrid[0:120, 0:160]
    bump = np.round(3 * np.exp(-((y - 58) ** 2 + (x - 83) ** 2) / (2 * 16.0**2)))
    g = (128 + rng.integers(-1, 2, size=(120, 160)) + bump).astype(np.uint8)
    return _png(Image.fromarray(np.dstack([g, g, g]), mode="RGB"))


def tall_thin_png() -> bytes:
    """37 pixels wide, 300 high: the grid is much denser across than along."""
    rgb = np.asarray(_photo("coffee", 600).convert("RGB"))[50:350, 300:337]
    return _png(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"))


def tiny_png() -> bytes:
    """12 pixels wide, 9 high: grid points and 2×2 patches overlap."""
    rng = np.random.default_rng(SEED + 2)
    return _png(Image.fromarray(rng.integers(0, 256, size=(9, 12, 3), dtype=np.uint8), mode="RGB"))


IMAGES: dict[str, Callable[[], bytes]] = {
    "astronaut.png": astronaut_png,
    "camera_grey.png": camera_grey_png,
    "chelsea.jpg": chelsea_jpg,
    "coffee.jpg": coffee_jpg,
    "rocket.jpg": rocket_jpg,
    "rocket_progressive.jpg": rocket_progressive_jpg,
    "rocket_cmyk.jpg": rocket_cmyk_jpg,
    "hubble_deep_field.jpg": hubble_deep_field_jpg,
    "coins_grey.jpg": coins_grey_jpg,
    "grass_grey.png": grass_grey_png,
    "coffee_exif_rotated.jpg": coffee_exif_rotated_jpg,
    "horse_bilevel.png": horse_bilevel_png,
    "chelsea_rgba.png": chelsea_rgba_png,
    "astronaut_palette.gif": astronaut_palette_gif,
    "gradient.png": gradient_png,
    "grey_steps.png": grey_steps_png,
    "colour_blocks.png": colour_blocks_png,
    "flat.png": flat_png,
    "nearly_flat.png": nearly_flat_png,
    "tall_thin.png": tall_thin_png,
    "tiny.png": tiny_png,
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, make in IMAGES.items():
        content = make()
        (OUT / name).write_bytes(content)
        total += len(content)
        with Image.open(BytesIO(content)) as image:
            print(
                f"{name:26} {image.format:4} {image.mode:5} {image.size!s:12} {len(content):8,} B"
            )
    print(f"{len(IMAGES)} images, {total:,} bytes")


if __name__ == "__main__":
    main()
