"""The README's Python examples run as written, on real photos, in a fresh folder."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike import images, signature

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.fixture
def pictures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the examples name: a scan and its query copy, two pictures, a big JPEG."""
    monkeypatch.chdir(tmp_path)
    cat = Image.fromarray(data.chelsea())
    cat.save("scan.jpg", quality=90)
    cat.resize((cat.width // 2, cat.height // 2)).save("query.jpg", quality=70)
    cat.save("a.jpg", quality=95)
    cat.transpose(Image.Transpose.ROTATE_90).save("b.jpg", quality=80)
    Image.fromarray(data.rocket()).resize((2000, 1408)).save("big.jpg", quality=90)
    return tmp_path


def test_the_readme_has_its_three_python_examples() -> None:
    assert len(EXAMPLES) == 3


def test_the_service_example(pictures: Path) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(EXAMPLES[0], "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    score, filepath, orientation, metadata = lines[0].split(" ", 3)
    assert float(score) > 80 and filepath == "archive/1987/0001.jpg"
    assert (orientation, metadata) == ("identity", "{'box': 12}")
    assert 0 <= float(lines[-1]) < 100  # a.jpg against b.jpg, turned, without orientations
    assert (pictures / "data" / "photos.db").exists()


def test_the_signature_example(pictures: Path) -> None:
    names: dict[str, Any] = {}
    exec(compile(EXAMPLES[1], "README.md", "exec"), names)
    a, b = names["a"], names["b"]
    assert a.shape == b.shape == (648,) and a.dtype == np.int8
    turned = signature.orientations(images.read("b.jpg", **names["limits"]))
    assert min(signature.distance(a, row) for row in turned) < 0.4  # b is a turned copy
    assert names["footprint"] is not None and names["pixels"].shape == (704, 1000, 3)


def test_the_image_match_example(pictures: Path) -> None:
    """An image-match program, its import changed: the distance image-match would give
    (lookalike's, which the golden vectors pin to image-match's) and its shapes."""
    printed = io.StringIO()
    names: dict[str, Any] = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(EXAMPLES[2], "README.md", "exec"), names)
    distance, shape = printed.getvalue().splitlines()
    limits = {"max_bytes": 20_000_000, "max_pixels": 50_000_000}
    a = signature.signature(images.read("a.jpg", **limits))
    b = signature.signature(images.read("b.jpg", **limits))
    assert float(distance) == signature.distance(a, b) and names["a"].tolist() == a.tolist()
    assert shape == "(100,)"
