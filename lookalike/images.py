"""Bytes or a file → the H×W×3 ``uint8`` RGB array ``signature`` needs; the only decoder.

Pillow only, restricted to JPEG (and MPO), PNG, GIF, WebP, BMP and TIFF; animated and
multi-page files give their first frame. Limits come before any pixel is decoded: the
byte count first, then width × height as the header states it, so a decompression bomb
is refused after reading a few hundred bytes.

The conversion to RGB is image-match 1.1.2's, ``Image.convert("RGB")`` (alpha dropped
without compositing, palettes looked up as Pillow does), so the signature of a file is
bit-identical to the one image-match stored for it, with two deliberate deviations:

* the EXIF orientation is applied (image-match ignored it), so a photo a camera stored
  sideways matches its upright copy;
* 16-bit grey images (Pillow modes ``I;16*`` and ``I``, the latter clipped to 0–65535
  first) are scaled to 8 bits (``value >> 8``) where ``convert`` clips them at 255 and
  turns most of them white. Pillow already reduces 16-bit colour to its high byte.

``decode_reduced`` lets libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale (never
below 512 pixels on the short side), several times faster, and says where the reduced
pixels lie on the full-size picture (a ``Footprint``), so that ``signature`` can lay its
grid where the full-size picture's would be.

The arrays returned are read-only (NumPy views of Pillow's bytes): copy before writing.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image

from .errors import ImageTooLarge, InvalidImage
from .orientations import EXIF, LAYOUTS, ORIENTATIONS
from .records import Footprint

__all__ = [
    "FORMATS",
    "THUMBNAIL_SIDE",
    "decode",
    "decode_reduced",
    "read",
    "read_reduced",
    "thumbnail",
]

RGBArray = npt.NDArray[np.uint8]

# Pillow's names for the formats we open, in the order they are tried. MPO (stereo
# JPEG) has no opener of its own: Pillow's JPEG opener returns it.
FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
_UNSUPPORTED: Final = "not a supported image (JPEG, PNG, GIF, WebP, BMP, TIFF)"
_MAGIC: Final = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_JPEG_FORMATS: Final = frozenset({"JPEG", "MPO"})
_SIXTEEN_BIT_GREY: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_DRAFT_SCALES: Final = (8, 4, 2)  # libjpeg's reductions, strongest first
_FAST_MIN_SIDE: Final = 512
THUMBNAIL_SIDE: Final = 256
_THUMBNAIL_QUALITIES: Final = (80, 60, 40)  # lower only for pictures of noise
# Pillow's name for each orientation but the identity (``orientations.ORIENTATIONS``).
_TRANSPOSES: Final = {
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "mirror_rot90": Image.Transpose.TRANSPOSE,
    "mirror_rot180": Image.Transpose.FLIP_TOP_BOTTOM,
    "mirror_rot270": Image.Transpose.TRANSVERSE,
}


def decode(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    fast: bool = False,
    as_image_match: bool = False,
) -> RGBArray:
    """Decode an image to a read-only, C-contiguous H×W×3 ``uint8`` RGB array.

    Raises ``ImageTooLarge`` when ``data`` is over ``max_bytes`` or the image over
    ``max_pixels``, and ``InvalidImage`` for anything else that cannot be decoded.
    ``fast`` decodes large JPEGs at a reduced scale (see ``decode_reduced``).
    ``as_image_match`` drops both deviations of this module's docstring: the pixels are
    exactly image-match's (no EXIF orientation, ``convert("RGB")`` for every mode).
    """
    return decode_reduced(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        reduce=fast,
        as_image_match=as_image_match,
    )[0]


def decode_reduced(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    reduce: bool = True,
    as_image_match: bool = False,
) -> tuple[RGBArray, Footprint | None]:
    """``decode``, a large JPEG at reduced scale: the pixels, and their ``Footprint`` on
    the full-size picture (None when nothing was reduced)."""
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {_sizes(len(data), max_bytes)}")
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    # Pillow warns about corrupt metadata, noise here (the pixels are what matter), and
    # about images over its own pixel limit, which must be refused, not decoded. Warning
    # filters are process-wide, not per thread, so these touch only Pillow's warnings.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"PIL\.")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _decode(data, max_pixels, reduce, as_image_match)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Pillow's own check, on opening: name whichever limit is the lower one
            safety = Image.MAX_IMAGE_PIXELS
            if safety is not None and safety < max_pixels:
                message = f"image is over the decoder's safety limit of {safety:,} pixels"
            else:
                message = f"image is over the limit of {max_pixels:,} pixels"
            raise ImageTooLarge(message) from error
        except MemoryError as error:
            raise ImageTooLarge("not enough memory to decode this image") from error


def read(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    max_pixels: int,
    fast: bool = False,
    as_image_match: bool = False,
) -> RGBArray:
    """Read and decode an image file, refusing one over ``max_bytes`` before reading it.

    Raises ``InvalidImage`` (with the path in the message) when the file cannot be read,
    otherwise as ``decode``.
    """
    return read_reduced(
        path,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        reduce=fast,
        as_image_match=as_image_match,
    )[0]


def read_reduced(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    max_pixels: int,
    reduce: bool = True,
    as_image_match: bool = False,
) -> tuple[RGBArray, Footprint | None]:
    """``read``, as ``decode_reduced`` decodes."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise ImageTooLarge(f"image is {_sizes(size, max_bytes)}")
            # Bounded even when the size lied: pipes and devices report 0, files grow.
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise InvalidImage(f"no such file: {name}") from None
    except OSError as error:
        raise InvalidImage(f"cannot read {name}: {error.strerror or 'I/O error'}") from error
    return decode_reduced(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        reduce=reduce,
        as_image_match=as_image_match,
    )


def _decode(
    data: bytes, max_pixels: int, reduce: bool, as_image_match: bool
) -> tuple[RGBArray, Footprint | None]:
    webp_size = _webp_size(data)
    if webp_size is not None:
        _check_pixels(webp_size, max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
        raise
    except Exception as error:  # Pillow's openers raise anything on hostile headers
        kind = _sniff(data)
        if kind is None:
            raise InvalidImage(_UNSUPPORTED) from error
        raise InvalidImage(
            f"cannot decode this {kind}: its header is truncated or invalid"
        ) from error
    with image:
        kind = image.format or "image"
        _check_pixels(image.size, max_pixels)
        width, height = image.size
        scale = _draft(image) if reduce and kind in _JPEG_FORMATS else 1
        try:
            image.load()
            upright = 0 if as_image_match else _upright(image)
            turned = image if not upright else _transposed(image, upright)
            if turned is image:
                upright = 0
            rgb = _to_rgb(turned, as_image_match)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
            raise
        except Exception as error:
            raise InvalidImage(f"cannot decode this {kind}: it is truncated or corrupt") from error
        if scale == 1:
            return rgb, None
        footprint = Footprint(scale, (height, width))
        if upright:
            footprint = footprint.turned(*LAYOUTS[upright])
        if rgb.shape[:2] != footprint.reduced_shape:
            return rgb, None  # libjpeg reduced otherwise than asked: sign what it decoded
        return rgb, footprint


def thumbnail(pixels: RGBArray, max_bytes: int) -> bytes:
    """A JPEG of decoded RGB pixels, its long side at most ``THUMBNAIL_SIDE``, of at most
    ``max_bytes`` (ValueError if even the lowest quality is larger)."""
    height, width = pixels.shape[:2]
    # frombuffer reads the array in place; the resize makes the only copy
    image = Image.frombuffer("RGB", (width, height), np.ascontiguousarray(pixels), "raw")
    # reducing_gap 1: a box reduction by a whole factor, not below the final size, then
    # Lanczos: 2x faster than a gap of 2 on a 640 px photo (4.1 to 1.9 ms, two thirds of
    # what an add cost), and no visible difference at this size
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS, reducing_gap=1.0)
    for quality in _THUMBNAIL_QUALITIES:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= max_bytes:
            return out.getvalue()
    raise ValueError(f"no thumbnail of this picture fits {max_bytes} bytes")


def _transposed(image: Image.Image, orientation: int) -> Image.Image:
    """The image turned by ``ORIENTATIONS[orientation]`` (not the identity), or as it is if
    Pillow cannot turn it: the orientation is metadata, never a reason to refuse a picture."""
    method = _TRANSPOSES[ORIENTATIONS[orientation]]
    try:
        return image.transpose(method)
    except Exception:  # Pillow raises anything on odd modes
        return image


def _upright(image: Image.Image) -> int:
    """The orientation (index in ``ORIENTATIONS``) that its EXIF asks for; 0, the identity,
    without one. Orientation is metadata: broken EXIF must not reject a picture
    image-match accepted."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # Pillow raises anything on hostile EXIF
        return 0
    return EXIF.get(orientation, 0)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}×{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,} pixels"
        )


def _draft(image: Image.Image) -> int:
    """Ask libjpeg for the strongest reduction that keeps the short side >= 512 px; the
    reduction asked for (1: none)."""
    width, height = image.size
    short = min(width, height)
    for scale in _DRAFT_SCALES:
        if -(-short // scale) >= _FAST_MIN_SIDE:  # libjpeg rounds the reduced size up
            # Pillow picks the scale as size // requested, which floor division makes
            # exactly `scale` for any side over 64 px.
            image.draft("RGB", (width // scale, height // scale))
            return scale
    return 1


def _to_rgb(image: Image.Image, as_image_match: bool) -> RGBArray:
    if image.mode in _SIXTEEN_BIT_GREY and not as_image_match:
        grey = np.asarray(image)
        if image.mode == "I":  # 32-bit container of (normally) 16-bit samples
            grey = np.clip(grey, 0, 0xFFFF)
        eight = (grey >> 8).astype(np.uint8)
        rgb = np.repeat(eight[:, :, np.newaxis], 3, axis=2)
        rgb.flags.writeable = False
        return rgb
    # convert("RGB") of an RGB image is a copy; skipping it changes no pixel.
    converted = image if image.mode == "RGB" else image.convert("RGB")
    return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8))


def _sniff(data: bytes) -> str | None:
    """The supported format a file claims by its first bytes, to word the error message."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size from a WebP header, or None for anything else.

    Pillow's WebP opener allocates the canvas while opening, before its size can be
    checked, so WebP is checked on the raw header first.
    """
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return _le(data[24:27]) + 1, _le(data[27:30]) + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = _le(data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return _le(data[26:28]) & 0x3FFF, _le(data[28:30]) & 0x3FFF
    return None


def _le(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def _sizes(size: int, limit: int) -> str:
    """'25.0 MB; the limit is 20.0 MB', in bytes when megabytes would not tell them apart."""
    if limit >= 1_000_000 and f"{size / 1e6:.1f}" != f"{limit / 1e6:.1f}":
        return f"{size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB"
    return f"{size:,} bytes; the limit is {limit:,} bytes"
