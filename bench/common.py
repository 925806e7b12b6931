"""Helpers shared by the benchmarks: timing statistics, tables, JSON results, test photos,
synthetic 1/f images and the image edits the benchmarks apply.

Run the benchmarks as scripts (``python bench/signature.py``); they import this module
from their own folder. Nothing here imports ``lookalike``, so it can be used from any
environment that has NumPy and Pillow (scikit-image is needed for the photos).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

RGB = npt.NDArray[np.uint8]
Edit = Callable[[RGB], RGB]

BENCH: Final = Path(__file__).resolve().parent
RESULTS: Final = BENCH / "results"
CACHE: Final = RESULTS / "cache"

# scikit-image's bundled photos, in the order the benchmarks use them. Loaders that need
# the network (pooch) are skipped by ``photos``. "chelsea" and "cat" are the same photo.
PHOTO_NAMES: Final = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "coins",
    "moon",
    "page",
    "text",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle",
    "retina",
    "clock",
    "cell",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
)
COLOUR_PHOTO_NAMES: Final = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle",
    "retina",
    "colorwheel",
)


# -- statistics, tables, results ----------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return float(np.median(np.fromiter(values, dtype=np.float64)))


def percentile(values: Iterable[float], q: float) -> float:
    return float(np.percentile(np.fromiter(values, dtype=np.float64), q))


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, mean, median, p90, p99, min and max of a sample."""
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": len(a),
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts += [value.rjust(width) for value, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.1f}"
    return str(value)


def environment() -> dict[str, Any]:
    """Where and with what the benchmark ran, for the JSON results."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "blas_threads_env": {
            k: os.environ[k]
            for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
            if k in os.environ
        },
        "load_average": os.getloadavg(),
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "lookalike"],
            capture_output=True,
            text=True,
            cwd=BENCH,
        ).stdout.strip()
        info["commit"] = commit + ("+dirty" if dirty else "")
    except OSError:
        pass
    return info


def threadpools() -> list[dict[str, Any]] | str:
    """threadpoolctl's view of the BLAS/OpenMP pools, or why it is not available."""
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"threadpoolctl not installed; numpy BLAS: {blas.get('name')} {blas.get('version')}"
    return [
        {k: pool.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
        for pool in threadpool_info()
    ]


def write_results(name: str, config: dict[str, Any], results: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "config": config,
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# -- a server ------------------------------------------------------------------------------


@contextlib.contextmanager
def lookalike_serve(store: Path, workers: int, **environment: str) -> Iterator[tuple[str, int]]:
    """`lookalike serve` in a subprocess on a free loopback port with a SQLite ``store``,
    ``workers`` processes and more settings from ``environment`` (the caller's own
    LOOKALIKE_ settings left out); yields its URL and pid, and stops it on exit."""
    import httpx  # the benchmarks that start no server run without it

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env |= {
        "LOOKALIKE_BACKEND": "sqlite:///" + str(store),
        "LOOKALIKE_LOG_LEVEL": "warning",
        "WORKER_COUNT": str(workers),
        "PORT": str(port),
        **environment,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "serve"], env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("lookalike serve did not start")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# -- process memory -----------------------------------------------------------------------


def memory_status() -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and RssAnon of this process, in bytes (Linux only)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


# -- photos and encodings -----------------------------------------------------------------


@cache
def photos() -> dict[str, RGB]:
    """scikit-image's photos that load without the network, as H×W×3 uint8 (grey stacked)."""
    from skimage import data

    out: dict[str, RGB] = {}
    for name in PHOTO_NAMES:
        loader = getattr(data, "stereo_motorcycle" if name == "motorcycle" else name, None)
        if loader is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = loader()
        except Exception:  # needs pooch or the network: skip it
            continue
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
        out[name] = as_rgb(np.asarray(image))
    return out


def as_rgb(image: npt.NDArray[Any]) -> RGB:
    if image.dtype != np.uint8:
        image = np.clip(image * 255 if image.max() <= 1 else image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def encode(image: RGB, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """Encode an RGB array: JPEG (4:2:0, the Pillow default) or fast lossless PNG."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    else:
        Image.fromarray(image).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def decode_rgb(data: bytes) -> RGB:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def resize_to(image: RGB, width: int, height: int) -> RGB:
    """Centre-crop to the target aspect ratio, then resize with Lanczos."""
    h, w = image.shape[:2]
    if w * height > h * width:  # too wide
        new_w = round(h * width / height)
        image = image[:, (w - new_w) // 2 : (w - new_w) // 2 + new_w]
    else:
        new_h = round(w * height / width)
        image = image[(h - new_h) // 2 : (h - new_h) // 2 + new_h]
    return _pil_op(image, lambda im: im.resize((width, height), Image.Resampling.LANCZOS))


def resize_long_side(image: RGB, long_side: int) -> RGB:
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return _pil_op(image, lambda im: im.resize(size, Image.Resampling.LANCZOS))


def add_grain(image: RGB, sigma: float, rng: np.random.Generator) -> RGB:
    """Gaussian sensor-like noise of ``sigma`` grey levels (0 leaves the image as it is)."""
    if sigma <= 0:
        return image
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _pil_op(image: RGB, op: Callable[[Image.Image], Image.Image]) -> RGB:
    return np.asarray(op(Image.fromarray(image)).convert("RGB"), dtype=np.uint8)


# -- synthetic 1/f images -----------------------------------------------------------------


def pink_fields(
    rng: np.random.Generator,
    count: int,
    shape: tuple[int, int] = (48, 48),
    exponent: tuple[float, float] = (1.0, 2.0),
    contrast: tuple[float, float] = (0.03, 0.12),
) -> npt.NDArray[np.float64]:
    """``count`` random grey images with a 1/f^a amplitude spectrum, like natural scenes.

    ``a`` is drawn per image from ``exponent``, the standard deviation from ``contrast``
    and the mean level from [0.25, 0.75]. The defaults give 48×48 fields whose signatures
    have about the share of zeros (near-equal neighbours) that photos' signatures have.
    Values lie in [0, 1] on the 8-bit grid, as grey levels decoded from a file do.
    Vectorised: one FFT for the whole batch.
    """
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    a = rng.uniform(*exponent, size=(count, 1, 1))
    amplitude = np.exp(-a * np.log(f)[None])
    amplitude[:, 0, 0] = 0.0
    spectrum = np.empty(amplitude.shape, dtype=np.complex128)
    spectrum.real = rng.standard_normal(amplitude.shape) * amplitude
    spectrum.imag = rng.standard_normal(amplitude.shape) * amplitude
    field = np.fft.irfft2(spectrum, s=(h, w))
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    field *= rng.uniform(*contrast, size=(count, 1, 1))
    field += rng.uniform(0.25, 0.75, size=(count, 1, 1))
    out: npt.NDArray[np.float64] = np.rint(np.clip(field, 0, 1) * 255) / 255
    return out


def pink_photo(rng: np.random.Generator, height: int, width: int) -> RGB:
    """A colour 1/f image: a luminance field plus weaker, smoother chroma fields."""
    luma = pink_fields(rng, 1, (height, width), contrast=(0.12, 0.25))[0]
    chroma = pink_fields(rng, 2, (height, width), exponent=(1.4, 2.0), contrast=(0.1, 0.2)) - 0.5
    tint = rng.uniform(-0.15, 0.15, size=3)
    rgb = np.stack(
        [
            luma + 0.6 * chroma[0] + tint[0],
            luma - 0.3 * chroma[0] - 0.3 * chroma[1] + tint[1],
            luma + 0.6 * chroma[1] + tint[2],
        ],
        axis=2,
    )
    out: RGB = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return out


# -- edits --------------------------------------------------------------------------------


def crop(image: RGB, fraction: float, rng: np.random.Generator | None = None) -> RGB:
    """Keep ``fraction`` of each side: centred, or at a random offset given ``rng``."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    if rng is None:
        top, left = (h - ch) // 2, (w - cw) // 2
    else:
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(image[top : top + ch, left : left + cw])


def scale(image: RGB, factor: float) -> RGB:
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return _pil_op(image, lambda im: im.resize(size, Image.Resampling.BICUBIC))


def squash(image: RGB, vertical: float = 0.7) -> RGB:
    h, w = image.shape[:2]
    size = (w, max(1, round(h * vertical)))
    return _pil_op(image, lambda im: im.resize(size, Image.Resampling.BICUBIC))


def brightness(image: RGB, factor: float) -> RGB:
    return _pil_op(image, lambda im: ImageEnhance.Brightness(im).enhance(factor))


def contrast(image: RGB, factor: float) -> RGB:
    return _pil_op(image, lambda im: ImageEnhance.Contrast(im).enhance(factor))


def blur(image: RGB, radius: float) -> RGB:
    return _pil_op(image, lambda im: im.filter(ImageFilter.GaussianBlur(radius)))


def jpeg(image: RGB, quality: int) -> RGB:
    return decode_rgb(encode(image, "JPEG", quality))


def grayscale(image: RGB) -> RGB:
    return _pil_op(image, lambda im: im.convert("L"))


def rotate(image: RGB, degrees: float) -> RGB:
    """Rotate counter-clockwise about the centre, same size, black corners (bicubic)."""
    return _pil_op(image, lambda im: im.rotate(degrees, Image.Resampling.BICUBIC))


def rot90(image: RGB, quarter_turns: int) -> RGB:
    return np.ascontiguousarray(np.rot90(image, quarter_turns))


def mirror(image: RGB) -> RGB:
    return np.ascontiguousarray(image[:, ::-1])


def pad(image: RGB, fraction: float = 0.1, colour: int = 255) -> RGB:
    """A border of ``fraction`` of each side's length on every side."""
    h, w = image.shape[:2]
    border = (round(w * fraction), round(h * fraction))
    return _pil_op(image, lambda im: ImageOps.expand(im, border, fill=(colour,) * 3))


def watermark(image: RGB) -> RGB:
    """A semi-transparent white box with dark text in the lower-right corner."""
    base = Image.fromarray(image).convert("RGBA")
    w, h = base.size
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    box = (int(w * 0.62), int(h * 0.84), int(w * 0.97), int(h * 0.96))
    draw.rectangle(box, fill=(255, 255, 255, 140))
    draw.text((box[0] + 6, box[1] + 4), "© lookalike 2025", fill=(0, 0, 0, 200))
    return np.asarray(Image.alpha_composite(base, overlay).convert("RGB"), dtype=np.uint8)


def noise(image: RGB, sigma: float, rng: np.random.Generator) -> RGB:
    return add_grain(image, sigma, rng)


def random_edit(image: RGB, rng: np.random.Generator) -> RGB:
    """One to three random everyday edits: crops, resizes, tone, noise, turns, flips, JPEG."""
    steps: list[Edit] = [
        lambda im: crop(im, float(rng.uniform(0.6, 0.95)), rng),
        lambda im: scale(im, float(rng.uniform(0.3, 1.2))),
        lambda im: brightness(im, float(rng.uniform(0.7, 1.4))),
        lambda im: contrast(im, float(rng.uniform(0.7, 1.4))),
        lambda im: noise(im, float(rng.uniform(2, 12)), rng),
        lambda im: rot90(im, int(rng.integers(1, 4))),
        lambda im: rotate(im, float(rng.uniform(-8, 8))),
        mirror,
        lambda im: jpeg(im, int(rng.integers(15, 85))),
    ]
    for i in rng.choice(len(steps), size=int(rng.integers(1, 4)), replace=False):
        image = steps[int(i)](image)
    return image
