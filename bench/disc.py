"""DISC21-style edits: the heavy copies of Meta's Image Similarity Challenge (2021), made
here with Pillow and NumPy rather than AugLy, so that the benchmark needs no more than
the project does. Each edit takes a photo and a random generator and returns the edited
picture with, where it is a rectangle, the box of the query that shows the photo and the
box of the photo that the query shows (relative coordinates ``[x0, y0, x1, y1]``): the
truth a returned region is measured against.

The kinds follow the challenge's description of its edits (screenshots, collages, overlays,
heavy crops, borders, emoji, captions, perspective, pixelation…); their parameters are
this project's own choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from common import RGB, blur, grayscale, jpeg, mirror, noise, pink_photo, rot90, rotate
from PIL import Image, ImageDraw

Box = tuple[float, float, float, float]
FULL: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Edited:
    """An edited picture; ``query``: where the photo is in it, ``stored``: which part of
    the photo it shows (None where the copy is not an axis-aligned rectangle)."""

    image: RGB
    query: Box | None
    stored: Box | None


DiscEdit = Callable[[RGB, np.random.Generator], Edited]


def _pil(image: RGB) -> Image.Image:
    return Image.fromarray(image)


def _array(image: Image.Image) -> RGB:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _resized(image: RGB, width: int, height: int) -> Image.Image:
    return _pil(image).resize((max(1, width), max(1, height)), Image.Resampling.LANCZOS)


def _text_lines(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    rng: np.random.Generator,
    shade: int = 60,
) -> None:
    """Grey bars where a page would have lines of text."""
    x0, y0, x1, y1 = box
    y = y0
    while y + 10 < y1:
        end = x0 + int((x1 - x0) * rng.uniform(0.5, 1.0))
        draw.rectangle((x0, y, end, y + 7), fill=(shade, shade, shade))
        y += 16


def pasted(photo: RGB, canvas: Image.Image, box: tuple[int, int, int, int]) -> Edited:
    """``photo`` resized into ``box`` of ``canvas``."""
    x0, y0, x1, y1 = box
    canvas.paste(_resized(photo, x1 - x0, y1 - y0), (x0, y0))
    w, h = canvas.size
    return Edited(_array(canvas), (x0 / w, y0 / h, x1 / w, y1 / h), FULL)


def screenshot(photo: RGB, rng: np.random.Generator) -> Edited:
    """The photo in a post on a phone's screen or in a web page: bars, text, buttons."""
    phone = bool(rng.integers(2))
    w, h = (540, 1080) if phone else (1280, 800)
    canvas = Image.new("RGB", (w, h), (250, 250, 250) if rng.integers(2) else (24, 24, 28))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, w, int(h * 0.06)), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    ph, pw = photo.shape[:2]
    if phone:
        width = int(w * rng.uniform(0.86, 1.0))
        height = int(width * ph / pw)
        x0, y0 = (w - width) // 2, int(h * rng.uniform(0.15, 0.25))
    else:
        height = int(h * rng.uniform(0.45, 0.6))
        width = int(height * pw / ph)
        x0, y0 = int(w * rng.uniform(0.05, 0.2)), int(h * rng.uniform(0.15, 0.25))
        _text_lines(draw, (x0 + width + 30, y0, w - 40, y0 + height), rng)
    _text_lines(draw, (20, int(h * 0.08), w - 20, y0 - 10), rng)
    _text_lines(draw, (20, y0 + height + 20, w - 20, h - 60), rng)
    for i in range(3):  # like, comment, share
        bx = 20 + i * 90
        draw.rounded_rectangle((bx, h - 50, bx + 70, h - 20), radius=10, fill=(90, 120, 200))
    return pasted(photo, canvas, (x0, y0, x0 + width, y0 + min(height, h - y0)))


def collage(photo: RGB, rng: np.random.Generator) -> Edited:
    """The photo, smaller, pasted onto an unrelated picture."""
    h, w = (int(v) for v in rng.choice([(480, 640), (640, 480), (600, 600)]))
    background = _pil(pink_photo(rng, h, w))
    ph, pw = photo.shape[:2]
    share = rng.uniform(0.35, 0.55)  # of the background's long side
    scale = share * max(w, h) / max(ph, pw)
    width, height = min(w, int(pw * scale)), min(h, int(ph * scale))
    x0, y0 = int(rng.integers(0, w - width + 1)), int(rng.integers(0, h - height + 1))
    return pasted(photo, background, (x0, y0, x0 + width, y0 + height))


def stripes(photo: RGB, rng: np.random.Generator) -> Edited:
    """Opaque bars across the photo (about a quarter of it covered)."""
    image = _pil(photo)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    vertical = bool(rng.integers(2))
    count = int(rng.integers(3, 6))
    thickness = 0.25 / count
    for i in range(count):
        start = (i + rng.uniform(0.2, 0.8)) / count
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if vertical:
            draw.rectangle((int(start * w), 0, int((start + thickness) * w), h), fill=colour)
        else:
            draw.rectangle((0, int(start * h), w, int((start + thickness) * h)), fill=colour)
    return Edited(_array(image), FULL, FULL)


def cropped(photo: RGB, box: Box) -> Edited:
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = box
    part = photo[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]
    return Edited(np.ascontiguousarray(part), FULL, box)


def corner_crop(photo: RGB, rng: np.random.Generator, keep: float = 0.6) -> Edited:
    """One corner, ``keep`` of each side."""
    left, top = bool(rng.integers(2)), bool(rng.integers(2))
    x0 = 0.0 if left else 1 - keep
    y0 = 0.0 if top else 1 - keep
    return cropped(photo, (x0, y0, x0 + keep, y0 + keep))


def centre_crop(photo: RGB, rng: np.random.Generator, keep: float = 0.5) -> Edited:
    """The centre, ``keep`` of each side."""
    edge = (1 - keep) / 2
    return cropped(photo, (edge, edge, 1 - edge, 1 - edge))


def strip(photo: RGB, rng: np.random.Generator, keep: float = 0.45) -> Edited:
    """The full width, ``keep`` of the height, anywhere."""
    y0 = float(rng.uniform(0, 1 - keep))
    return cropped(photo, (0.0, y0, 1.0, y0 + keep))


def framed(photo: RGB, rng: np.random.Generator) -> Edited:
    """Grey, blurred, inside a wide black border (a fifth of each side)."""
    inner = _pil(blur(grayscale(photo), radius=1.5))
    w, h = inner.size
    bw, bh = int(w * 0.2), int(h * 0.2)
    canvas = Image.new("RGB", (w + 2 * bw, h + 2 * bh), (0, 0, 0))
    canvas.paste(inner, (bw, bh))
    W, H = canvas.size
    return Edited(_array(canvas), (bw / W, bh / H, (bw + w) / W, (bh + h) / H), FULL)


def emoji(photo: RGB, rng: np.random.Generator) -> Edited:
    """A large smiling face over the photo (a third of its short side across)."""
    image = _pil(photo)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    r = int(min(w, h) * rng.uniform(0.17, 0.22))
    cx, cy = int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 204, 0), outline=(120, 80, 0))
    for dx in (-r // 3, r // 3):
        draw.ellipse((cx + dx - r // 8, cy - r // 3, cx + dx + r // 8, cy - r // 12), fill=0)
    draw.arc((cx - r // 2, cy - r // 4, cx + r // 2, cy + r // 2), 20, 160, fill=0, width=6)
    return Edited(_array(image), FULL, FULL)


def caption(photo: RGB, rng: np.random.Generator) -> Edited:
    """A meme: a white band above the photo with a line of black text."""
    image = _pil(photo)
    w, h = image.size
    band = int(h * 0.22)
    canvas = Image.new("RGB", (w, h + band), (255, 255, 255))
    canvas.paste(image, (0, band))
    _text_lines(ImageDraw.Draw(canvas), (20, band // 3, w - 20, band - 10), rng, shade=0)
    return Edited(_array(canvas), (0.0, band / (h + band), 1.0, 1.0), FULL)


def text_overlay(photo: RGB, rng: np.random.Generator) -> Edited:
    image = _pil(photo)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for _ in range(3):
        x, y = int(rng.uniform(0, w * 0.5)), int(rng.uniform(0, h * 0.9))
        draw.text((x, y), "NOT THE ORIGINAL " * 2, fill=(255, 255, 255), font_size=h // 14)
    return Edited(_array(image), FULL, FULL)


def perspective(photo: RGB, rng: np.random.Generator) -> Edited:
    image = _pil(photo)
    w, h = image.size
    d = 0.12
    corners = [(rng.uniform(0, d) * w, rng.uniform(0, d) * h) for _ in range(4)]
    quad = (
        corners[0][0], corners[0][1],
        corners[1][0], h - corners[1][1],
        w - corners[2][0], h - corners[2][1],
        w - corners[3][0], corners[3][1],
    )  # fmt: skip
    return Edited(_array(image.transform((w, h), Image.Transform.QUAD, quad)), None, None)


def pixelate(photo: RGB, rng: np.random.Generator) -> Edited:
    image = _pil(photo)
    w, h = image.size
    small = image.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.BILINEAR)
    return Edited(_array(small.resize((w, h), Image.Resampling.NEAREST)), FULL, FULL)


def colour_shift(photo: RGB, rng: np.random.Generator) -> Edited:
    shifted = photo.astype(np.int16) + rng.integers(-60, 60, 3)
    return Edited(np.clip(shifted, 0, 255).astype(np.uint8), FULL, FULL)


def tiny(photo: RGB, rng: np.random.Generator) -> Edited:
    """A thumbnail: the long side 96 pixels."""
    h, w = photo.shape[:2]
    s = 96 / max(h, w)
    return Edited(_array(_resized(photo, int(w * s), int(h * s))), FULL, FULL)


def mirror_crop_jpeg(photo: RGB, rng: np.random.Generator) -> Edited:
    flipped = cropped(mirror(photo), (0.1, 0.1, 0.9, 0.9))
    return Edited(jpeg(flipped.image, 30), FULL, (0.1, 0.1, 0.9, 0.9))  # of the mirror


def rotate_crop(photo: RGB, rng: np.random.Generator) -> Edited:
    part = cropped(photo, (0.1, 0.1, 0.9, 0.9))
    return Edited(rot90(part.image, 1), None, None)


# The six the issue singles out come first.
DISC_EDITS: dict[str, DiscEdit] = {
    "screenshot (phone or web page)": screenshot,
    "collage (pasted onto another picture)": collage,
    "opaque stripes": stripes,
    "corner crop 60 %": corner_crop,
    "centre crop 50 %": centre_crop,
    "strip (full width, 45 % high)": strip,
    "grey + blur + wide black border": framed,
    "large emoji": emoji,
    "meme caption band": caption,
    "text overlay": text_overlay,
    "perspective": perspective,
    "rotate 15°": lambda photo, rng: Edited(rotate(photo, 15), None, None),
    "pixelate": pixelate,
    "noise": lambda photo, rng: Edited(noise(photo, 20, rng), FULL, FULL),
    "colour shift": colour_shift,
    "tiny copy (96 px)": tiny,
    "mirror + crop + JPEG": mirror_crop_jpeg,
    "rotate 90° + crop": rotate_crop,
}
HARD = list(DISC_EDITS)[:6]


def disc_edit(name: str, photo_name: str, seed: int) -> Callable[[RGB], Edited]:
    """The edit ``name`` with a generator of its own for each photo (reproducible)."""
    key = sum(ord(c) * 131**i for i, c in enumerate(name + "/" + photo_name)) % 2**32
    return partial(DISC_EDITS[name], rng=np.random.default_rng([seed, key]))
