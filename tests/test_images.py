"""images: formats, first frames, EXIF orientation, RGB conversion, limits and bad input."""

from __future__ import annotations

import io
import os
import re
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from skimage import data as photos

from lookalike.errors import ImageTooLarge, InvalidImage
from lookalike.images import decode, decode_reduced, read
from lookalike.records import Footprint

MAX_BYTES = 50_000_000
MAX_PIXELS = 50_000_000
CAT = photos.chelsea()  # 300×451 RGB, not square: orientation shows in the shape
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)

RGB = npt.NDArray[np.uint8]


def dec(data: bytes, **overrides: Any) -> RGB:
    limits: dict[str, Any] = {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS}
    return decode(data, **(limits | overrides))


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow_rgb(data: bytes) -> RGB:
    """image-match's conversion, the reference; Pillow's own warnings are not under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def mean_error(a: RGB, b: RGB) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose valid IHDR claims width × height, followed by a few bytes of pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def frames(*colours: tuple[int, int, int]) -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), colour) for colour in colours]


def assert_rgb_array(rgb: RGB, shape: tuple[int, int]) -> None:
    assert rgb.shape == (*shape, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous


# -- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0.0),
        ("BMP", {}, 0.0),
        ("TIFF", {}, 0.0),
        ("TIFF", {"compression": "tiff_lzw"}, 0.0),
        ("WEBP", {"lossless": True}, 0.0),
        ("WEBP", {"quality": 90}, 4.0),
        ("JPEG", {"quality": 90}, 4.0),
        ("JPEG", {"quality": 90, "progressive": True}, 4.0),
        ("GIF", {}, 12.0),
    ],
)
def test_each_format_decodes_to_rgb(fmt: str, options: dict[str, Any], tolerance: float) -> None:
    rgb = dec(encode(Image.fromarray(CAT), fmt, **options))
    assert_rgb_array(rgb, CAT.shape[:2])
    assert mean_error(rgb, CAT) <= tolerance


def test_mpo_gives_its_first_image() -> None:
    first, second = frames(RED, BLUE)
    rgb = dec(encode(first, "MPO", save_all=True, append_images=[second]))
    assert_rgb_array(rgb, (30, 40))
    assert mean_error(rgb, np.asarray(first)) < 2


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("GIF", {"duration": 100, "loop": 0}),
        ("WEBP", {"duration": 100, "lossless": True}),
        ("TIFF", {}),
        ("PNG", {"duration": 100}),  # APNG
    ],
)
def test_animations_and_multipage_files_give_the_first_frame(
    fmt: str, options: dict[str, Any]
) -> None:
    first, *rest = frames(RED, GREEN, BLUE)
    data = encode(first, fmt, save_all=True, append_images=rest, **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    rgb = dec(data)
    assert_rgb_array(rgb, (30, 40))
    assert np.array_equal(rgb[15, 20], RED)


# -- image-match's conversion -------------------------------------------------------------


def test_plain_rgb_jpeg_is_exactly_image_match_conversion() -> None:
    data = encode(Image.fromarray(CAT), "JPEG", quality=85)
    rgb = dec(data)
    assert np.array_equal(rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def _with_alpha(mode: str) -> Image.Image:
    image = Image.fromarray(CAT).convert(mode)
    alpha = np.random.default_rng(0).integers(0, 256, CAT.shape[:2], dtype=np.uint8)
    image.putalpha(Image.fromarray(alpha))
    return image


def _palette_with_transparency() -> bytes:
    # Pillow warns when it converts this one; decode must stay silent all the same.
    palette = Image.fromarray(CAT).convert("P")
    return encode(palette, "PNG", transparency=bytes(range(0, 256)))


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("RGBA", lambda: encode(_with_alpha("RGB"), "PNG")),
        ("LA", lambda: encode(_with_alpha("L"), "PNG")),
        ("L", lambda: encode(Image.fromarray(CAT).convert("L"), "PNG")),
        ("1", lambda: encode(Image.fromarray(CAT).convert("1"), "PNG")),
        ("P", lambda: encode(Image.fromarray(CAT).convert("P"), "PNG")),
        (
            "P with one transparent index",
            lambda: encode(Image.fromarray(CAT).convert("P"), "PNG", transparency=3),
        ),
        ("P with an alpha per index", _palette_with_transparency),
        ("PA TIFF", lambda: encode(Image.fromarray(CAT).convert("PA"), "TIFF")),
        ("CMYK JPEG", lambda: encode(Image.fromarray(CAT).convert("CMYK"), "JPEG")),
        ("CMYK TIFF", lambda: encode(Image.fromarray(CAT).convert("CMYK"), "TIFF")),
        ("YCbCr TIFF", lambda: encode(Image.fromarray(CAT).convert("YCbCr"), "TIFF")),
        ("LAB TIFF", lambda: encode(Image.fromarray(CAT).convert("LAB"), "TIFF")),
        ("L JPEG", lambda: encode(Image.fromarray(CAT).convert("L"), "JPEG")),
        ("RGBA TIFF", lambda: encode(_with_alpha("RGB"), "TIFF")),
        ("P BMP", lambda: encode(Image.fromarray(CAT).convert("P"), "BMP")),
    ],
)
def test_every_mode_converts_as_image_match_does(name: str, make: Any) -> None:
    data = make()
    assert Image.open(io.BytesIO(data)).mode == name.split()[0]
    rgb = dec(data)
    assert_rgb_array(rgb, CAT.shape[:2])
    assert np.array_equal(rgb, pillow_rgb(data)), name


def test_alpha_is_dropped_not_composited() -> None:
    image = Image.new("RGBA", (8, 8), (200, 100, 50, 0))
    assert np.all(dec(encode(image, "PNG")) == (200, 100, 50))


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("PNG", "<u2"), ("TIFF", "<u2"), ("TIFF", ">u2"), ("TIFF", "<i4")]
)
def test_sixteen_bit_grey_is_scaled_not_clipped(fmt: str, dtype: str) -> None:
    ramp = (np.arange(64 * 32).reshape(32, 64) * 32).astype(dtype)
    image = Image.fromarray(ramp)
    data = encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode in {"I;16", "I;16B", "I"}
    rgb = dec(data)
    assert_rgb_array(rgb, (32, 64))
    expected = (ramp.astype(np.int64) >> 8).astype(np.uint8)
    for channel in range(3):
        assert np.array_equal(rgb[..., channel], expected)
    assert rgb.max() > 200  # convert("RGB") would have clipped nearly everything to 255


def test_sixteen_bit_colour_keeps_the_high_byte() -> None:
    pixels = np.array([[[0x1234, 0xABCD, 0xFF00], [0x00FF, 0x8000, 0xFFFF]]], dtype=">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)  # filter type 0 per row
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )
    assert dec(data).tolist() == [[[0x12, 0xAB, 0xFF], [0x00, 0x80, 0xFF]]]


def test_thirty_two_bit_grey_is_clipped_to_sixteen_bits_then_scaled() -> None:
    values = np.array([[-5, 0, 255, 256, 65535, 70000]], dtype=np.int32)
    rgb = dec(encode(Image.fromarray(values), "TIFF"))
    assert rgb[0, :, 0].tolist() == [0, 0, 0, 1, 255, 255]


# -- EXIF orientation ---------------------------------------------------------------------


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


# Orientation tag → the array operation that shows the picture upright.
UPRIGHT = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied_exactly(orientation: int) -> None:
    data = encode(Image.fromarray(CAT), "PNG", exif=_exif(orientation))
    assert np.array_equal(dec(data), UPRIGHT[orientation](CAT))


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_of_a_jpeg(orientation: int) -> None:
    data = encode(Image.fromarray(CAT), "JPEG", quality=95, exif=_exif(orientation))
    rgb = dec(data)
    assert_rgb_array(rgb, (CAT.shape[1], CAT.shape[0]))
    assert mean_error(rgb, UPRIGHT[orientation](CAT)) < 3


def test_unreadable_exif_leaves_the_image_as_stored() -> None:
    data = encode(Image.fromarray(CAT), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff")
    assert np.array_equal(dec(data), pillow_rgb(data))


def test_exif_that_pillow_cannot_rewrite_still_orients() -> None:
    # Orientation 6, and DateTime (an ASCII tag) stored as a RATIONAL: Pillow reads it,
    # rotates the pixels, then fails to write the EXIF back without the orientation.
    entries = struct.pack(">HHII", 0x0112, 3, 1, 6 << 16) + struct.pack(">HHII", 0x0132, 5, 1, 38)
    ifd = b"MM\x00*" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)
    exif = b"Exif\x00\x00" + ifd + struct.pack(">II", 1, 2)
    assert np.array_equal(dec(encode(Image.fromarray(CAT), "PNG", exif=exif)), UPRIGHT[6](CAT))


# -- limits -------------------------------------------------------------------------------


def test_byte_limit() -> None:
    data = encode(Image.fromarray(CAT), "PNG")
    assert dec(data, max_bytes=len(data)).shape == CAT.shape
    with pytest.raises(ImageTooLarge, match=f"{len(data):,} bytes; the limit is"):
        dec(data, max_bytes=len(data) - 1)


def test_byte_limit_message_in_megabytes() -> None:
    with pytest.raises(ImageTooLarge) as raised:
        dec(bytes(25_000_000), max_bytes=20_000_000)
    assert str(raised.value) == "image is 25.0 MB; the limit is 20.0 MB"


def test_pixel_limit() -> None:
    data = encode(Image.fromarray(CAT), "PNG")
    pixels = CAT.shape[0] * CAT.shape[1]
    assert dec(data, max_pixels=pixels).shape == CAT.shape
    with pytest.raises(ImageTooLarge, match=rf"451×300 = {pixels:,} pixels; the limit is 1,000"):
        dec(data, max_pixels=1_000)


def test_pixel_limit_is_checked_on_the_header_before_decoding() -> None:
    data = png_header_only(8_000, 8_000)  # 64 Mpx: over our limit, under Pillow's
    started = time.perf_counter()
    with pytest.raises(
        ImageTooLarge, match="8000×8000 = 64,000,000 pixels; the limit is 50,000,000"
    ):
        dec(data)
    assert time.perf_counter() - started < 0.5


def test_huge_header_is_refused_quickly() -> None:
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        dec(png_header_only(100_000, 100_000))
    assert time.perf_counter() - started < 0.5


def test_a_bomb_refused_by_pillow_is_named_by_the_configured_limit() -> None:
    """Pillow refuses this header on opening; the message names the (lower) limit that
    the service was configured with, not Pillow's."""
    with pytest.raises(ImageTooLarge, match="limit of 50,000,000 pixels"):
        dec(png_header_only(100_000, 100_000), max_pixels=50_000_000)


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_pillow_bomb_limit_holds_with_a_generous_limit_and_warns_nothing(side: int) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None and side * side > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLarge, match="safety limit"):
            dec(png_header_only(side, side), max_pixels=10**12)
    assert caught == []


def test_webp_canvas_is_checked_before_pillow_allocates_it() -> None:
    header = b"VP8X" + struct.pack("<I", 10) + bytes(4)
    header += (10_000 - 1).to_bytes(3, "little") + (8_000 - 1).to_bytes(3, "little")
    data = b"RIFF" + struct.pack("<I", 4 + len(header) + 16) + b"WEBP" + header + bytes(16)
    with pytest.raises(ImageTooLarge, match="10000×8000 = 80,000,000 pixels"):
        dec(data)


def test_gif_frame_larger_than_its_screen_counts() -> None:
    gif = (
        b"GIF89a"
        + struct.pack("<HHBBB", 1, 1, 0, 0, 0)  # a 1×1 screen, no palette
        + b","
        + struct.pack("<HHHHB", 0, 0, 8_000, 8_000, 0)  # an 8000×8000 frame
        + b"\x02\x02\x44\x01\x00;"
    )
    with pytest.raises(ImageTooLarge, match="8000×8000"):
        dec(gif, max_pixels=1_000)


# -- bad input ----------------------------------------------------------------------------


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        dec(b"")


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).bytes(2_000),
        b"Hello, this is a text file, not a picture.\n" * 20,
        b"%PDF-1.4\n" + bytes(500),
        encode(Image.fromarray(CAT), "PPM"),
        encode(Image.fromarray(CAT), "ICO"),
        encode(Image.fromarray(CAT), "TGA"),
    ],
    ids=["random", "text", "pdf", "ppm", "ico", "tga"],
)
def test_unsupported_input(data: bytes) -> None:
    with pytest.raises(InvalidImage, match=r"not a supported image \(JPEG, PNG, GIF, WebP, BMP"):
        dec(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_images_are_invalid(fmt: str, keep: float) -> None:
    data = encode(Image.fromarray(CAT), fmt)
    with pytest.raises(InvalidImage) as raised:
        dec(data[: int(len(data) * keep)])
    assert not isinstance(raised.value, ImageTooLarge)
    assert "truncated" in str(raised.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_truncated_headers_are_invalid(fmt: str) -> None:
    data = encode(Image.fromarray(CAT), fmt)
    with pytest.raises(InvalidImage, match="header is truncated or invalid"):
        dec(data[:20])


def test_zero_size_image_is_invalid() -> None:
    with pytest.raises(InvalidImage, match="PNG: its header is truncated or invalid"):
        dec(png_header_only(0, 10))


def test_damaged_images_raise_only_invalid_image() -> None:
    """Flipped bytes anywhere: a picture or InvalidImage, never Pillow's own errors."""
    rng = np.random.default_rng(7)
    small = Image.fromarray(CAT[:48, :64])
    samples = [
        encode(small, "JPEG"),
        encode(small, "PNG"),
        encode(small.convert("P"), "GIF"),
        encode(small, "BMP"),
        encode(small, "TIFF"),
        encode(small, "WEBP"),
    ]
    for sample in samples:
        for _ in range(60):
            damaged = bytearray(sample)
            for position in rng.integers(0, len(damaged), size=rng.integers(1, 6)):
                damaged[position] = int(rng.integers(0, 256))
            try:
                rgb = dec(bytes(damaged), max_pixels=1_000_000)
            except InvalidImage as error:
                assert "Traceback" not in str(error)
            else:
                assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


# -- read ---------------------------------------------------------------------------------


def test_read_matches_decode(tmp_path: Path) -> None:
    data = encode(Image.fromarray(CAT), "JPEG")
    path = tmp_path / "cat.jpg"
    path.write_bytes(data)
    for name in (path, str(path)):
        rgb = read(name, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        assert np.array_equal(rgb, dec(data))


def test_read_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(InvalidImage, match=re.escape(f"no such file: {missing}")):
        read(missing, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_read_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match=re.escape(f"cannot read {tmp_path}")):
        read(tmp_path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_read_refuses_an_oversized_file_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as file:
        file.write(encode(Image.fromarray(CAT), "PNG"))
        file.truncate(2**31)  # sparse: 2 GiB that would take seconds to read
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=r"2147\.5 MB; the limit is 20\.0 MB"):
        read(path, max_bytes=20_000_000, max_pixels=MAX_PIXELS)
    assert time.perf_counter() - started < 0.5


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_read_is_bounded_when_the_size_is_unknown() -> None:
    with pytest.raises(ImageTooLarge, match="1,001 bytes; the limit is 1,000 bytes"):
        read("/dev/zero", max_bytes=1_000, max_pixels=MAX_PIXELS)


# -- fast mode ----------------------------------------------------------------------------


def _jpeg_of_size(width: int, height: int) -> bytes:
    gradient = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.broadcast_to(gradient[None, :, None], (height, width, 3))
    return encode(Image.fromarray(np.ascontiguousarray(rgb)), "JPEG", quality=80)


@pytest.mark.parametrize(
    ("size", "decoded"),
    [
        ((2000, 1333), (667, 1000)),
        ((1333, 2000), (1000, 667)),
        ((4200, 2800), (700, 1050)),
        ((1100, 1030), (515, 550)),
        ((1500, 1023), (512, 750)),  # libjpeg rounds 511.5 up
        ((1000, 1020), (1020, 1000)),
        ((640, 480), (480, 640)),
    ],
)
def test_fast_jpeg_keeps_the_short_side_at_least_512(
    size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    data = _jpeg_of_size(*size)
    rgb = dec(data, fast=True)
    assert_rgb_array(rgb, decoded)
    assert min(decoded) >= min(512, *size)
    assert dec(data).shape[:2] == (size[1], size[0])


def test_fast_result_is_close_to_a_reduced_full_decode() -> None:
    data = _jpeg_of_size(2000, 1333)
    small = dec(data, fast=True)
    full = np.asarray(Image.fromarray(dec(data)).resize((1000, 667), Image.Resampling.BOX))
    assert mean_error(small, full) < 2


def test_fast_is_ignored_for_other_formats() -> None:
    data = encode(Image.new("RGB", (2000, 1333), GREEN), "PNG")
    assert dec(data, fast=True).shape == (1333, 2000, 3)


def test_fast_checks_the_full_size_against_the_pixel_limit() -> None:
    with pytest.raises(ImageTooLarge, match="2000×1333"):
        dec(_jpeg_of_size(2000, 1333), fast=True, max_pixels=1_000_000)


# -- reduced decoding and its footprint -------------------------------------------------


def _blocky_jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    """Black and white blocks of 3×3 pixels: sharp edges off every 2-, 4- and 8-pixel grid."""
    rng = np.random.default_rng(width * 7 + height)
    cells = rng.integers(0, 2, (-(-height // 3), -(-width // 3)), dtype=np.uint8) * 255
    grey = np.repeat(np.repeat(cells, 3, 0), 3, 1)[:height, :width]
    image = Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=2))
    return encode(image, "JPEG", quality=95, exif=_exif(orientation))


def _box_means(full: RGB, footprint: Footprint) -> npt.NDArray[np.float64]:
    """The mean of ``full`` over each reduced pixel's footprint."""
    out = full.astype(np.float64)
    for axis in (0, 1):
        size, scale = footprint.shape[axis], footprint.scale
        starts = np.arange(footprint.reduced_size(size)) * scale - footprint.offsets[axis]
        lo, hi = np.clip(starts, 0, size), np.clip(starts + scale, 0, size)
        summed = np.cumsum(np.insert(out, 0, 0.0, axis=axis), axis=axis)
        out = (summed.take(hi, axis=axis) - summed.take(lo, axis=axis)) / np.expand_dims(
            hi - lo, tuple(a for a in range(3) if a != axis)
        )
    return out


def test_a_small_or_non_jpeg_image_has_no_footprint() -> None:
    for data in (
        encode(Image.fromarray(CAT), "JPEG"),
        encode(Image.new("RGB", (2000, 1333)), "PNG"),
    ):
        pixels, footprint = decode_reduced(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        assert footprint is None
        assert np.array_equal(pixels, dec(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_footprint_says_where_reduced_pixels_lie(orientation: int) -> None:
    """1031 × 1029 (odd, not multiples of 2): a flip anchors the reduced grid at the far
    edge. The reduced pixels must fit the means of the full-size pixels their footprint
    names (libjpeg's reduced IDCT is close to, not exactly, a box filter) far better than
    those of the same grid anchored at any other edge."""
    data = _blocky_jpeg(1031, 1029, orientation)
    full = dec(data)
    pixels, footprint = decode_reduced(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert footprint is not None and footprint.scale == 2
    assert footprint.shape == full.shape[:2]
    assert pixels.shape[:2] == tuple(footprint.reduced_size(n) for n in footprint.shape)
    error = np.abs(_box_means(full, footprint) - pixels).mean()
    assert error < 25
    for offsets in ((0, 0), (0, 1), (1, 0), (1, 1)):
        if offsets != footprint.offsets:
            other = Footprint(2, footprint.shape, offsets)
            assert np.abs(_box_means(full, other) - pixels).mean() > 1.5 * error


def test_footprints_turn_like_the_pixels() -> None:
    footprint = Footprint(4, (1001, 1998))  # reduced to 251 × 500
    assert footprint.turned(False, True, False) == Footprint(4, (1001, 1998), (3, 0))
    assert footprint.turned(True, False, True) == Footprint(4, (1998, 1001), (0, 3))
    assert footprint.turned(False, True, True).turned(False, True, True) == footprint
