"""The EfficientNet-Lite0 encoder: golden embeddings from the torch reference, ImageNet
labels, offline loading, the weights' checksum and the graph cache.

The golden vectors in ``golden/embeddings/`` were computed once by the reference
implementation in torch (``golden/make_embeddings.py``); torch is not needed here.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from lookalike import embeddings
from lookalike.embeddings.graph import same_pads
from lookalike.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden" / "embeddings"
META = json.loads((GOLDEN / "embeddings.json").read_text())
PHOTOS: list[str] = META["photos"]
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def pixels(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(data, name)()[..., :3])


def requires_runtime() -> None:
    pytest.importorskip("onnxruntime", reason="the cnn extra is not installed (onnxruntime)")
    pytest.importorskip("onnx", reason="the cnn extra is not installed (onnx)")
    pytest.importorskip(embeddings.WEIGHTS_PACKAGE, reason="the EfficientNet weights package")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir: Path) -> embeddings.Encoder:
    requires_runtime()
    return embeddings.Encoder.load(cache_dir, threads=1)


# --- without the extra ---------------------------------------------------------------


def test_import_lookalike_imports_no_model_library() -> None:
    code = (
        "import sys, lookalike, lookalike.embeddings\n"
        "loaded = {'onnx', 'onnxruntime', 'torch'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ConfigError, match=r"pip install 'lookalike\[cnn\]'"):
        embeddings.Encoder.load(tmp_path)


def test_state_dict_reader_refuses_other_globals() -> None:
    header = b"".join(
        pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )
    evil = pickle.dumps(shutil.rmtree, protocol=2)  # any callable beyond the four allowed
    with pytest.raises(ConfigError, match=r"refusing to load shutil\.rmtree"):
        embeddings.read_state_dict(header + evil)
    with pytest.raises(ConfigError, match="cannot read"):
        embeddings.read_state_dict(b"not a torch file")


def test_same_padding_is_tensorflows() -> None:
    assert same_pads(224, 3, 2) == ([0, 0, 1, 1], 112)
    assert same_pads(56, 5, 2) == ([1, 1, 2, 2], 28)
    assert same_pads(14, 5, 1) == ([2, 2, 2, 2], 14)
    assert same_pads(7, 1, 1) == ([0, 0, 0, 0], 7)


def test_preprocess_shape_range_and_validation() -> None:
    batch = embeddings.preprocess([pixels("rocket"), np.zeros((5, 9, 3), np.uint8)])
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    with pytest.raises(ValueError, match="uint8 RGB"):
        embeddings.preprocess([np.zeros((8, 8), np.uint8)])


# --- the model -----------------------------------------------------------------------


@pytest.mark.parametrize("crop", [True, False], ids=["crop", "full"])
def test_golden_embeddings_match_the_torch_reference(
    encoder: embeddings.Encoder, cache_dir: Path, crop: bool
) -> None:
    golden = np.load(GOLDEN / f"embeddings_{'crop' if crop else 'full'}.npy")
    model = embeddings.Encoder.load(cache_dir, threads=1, crop=crop)
    vectors = model.embed([pixels(name) for name in PHOTOS], batch_size=3)
    assert vectors.shape == (len(PHOTOS), embeddings.DIMENSION) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    cosines = np.sum(vectors * golden, axis=1)
    assert cosines.min() >= 0.9999, dict(zip(PHOTOS, cosines.tolist(), strict=True))
    # and the photos are told apart: no other photo is that close
    cross = vectors @ golden.T
    assert (cross - np.eye(len(PHOTOS)) * 2).max() < 0.9


def test_imagenet_labels(encoder: embeddings.Encoder) -> None:
    logits = encoder.classify([pixels("chelsea"), pixels("coffee")])
    assert int(np.argmax(logits[0])) in CATS
    assert int(np.argmax(logits[1])) == ESPRESSO
    golden = np.load(GOLDEN / "logits_crop.npy")
    rows = [PHOTOS.index("chelsea"), PHOTOS.index("coffee")]
    np.testing.assert_allclose(logits, golden[rows], atol=2e-3 * np.abs(golden).max())


def test_batches_agree_and_empty_input(encoder: embeddings.Encoder) -> None:
    images = [pixels(name) for name in PHOTOS]
    one_by_one = np.concatenate([encoder.embed([image]) for image in images])
    np.testing.assert_allclose(encoder.embed(images, batch_size=4), one_by_one, atol=1e-5)
    assert encoder.embed([]).shape == (0, embeddings.DIMENSION)


# --- weights and cache ---------------------------------------------------------------


def test_wrong_weights_are_refused(tmp_path: Path) -> None:
    requires_runtime()
    tampered = tmp_path / embeddings.WEIGHTS_FILE
    content = bytearray(embeddings._weights_path().read_bytes())
    content[-1] ^= 1
    tampered.write_bytes(content)
    with pytest.raises(ConfigError, match="sha256"):
        embeddings.Encoder.load(tmp_path / "cache", weights=tampered)
    assert not list((tmp_path / "cache").glob("*.onnx"))


def test_cache_is_reused_and_a_damaged_one_rebuilt(tmp_path: Path) -> None:
    requires_runtime()
    first = embeddings.Encoder.load(tmp_path)
    assert first.built and first.model_path.parent == tmp_path
    stamp = first.model_path.stat().st_mtime_ns
    second = embeddings.Encoder.load(tmp_path)
    assert not second.built and second.model_path.stat().st_mtime_ns == stamp
    good = first.model_path.read_bytes()

    first.model_path.write_bytes(good[: len(good) // 2])  # truncated
    third = embeddings.Encoder.load(tmp_path)
    assert third.built and first.model_path.read_bytes() == good

    first.model_path.write_bytes(b"garbage")  # and a digest to match it
    first.model_path.with_suffix(".onnx.sha256").write_text(embeddings._sha256(b"garbage"))
    fourth = embeddings.Encoder.load(tmp_path)
    assert fourth.built and first.model_path.read_bytes() == good
    image = [pixels("coffee")]
    np.testing.assert_array_equal(fourth.embed(image), second.embed(image))


@pytest.mark.slow
def test_loads_and_runs_without_network(tmp_path: Path) -> None:
    requires_runtime()
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import socket

            def _refuse(*args, **kwargs):
                raise OSError("network disabled by the test")

            socket.socket.connect = _refuse
            socket.socket.connect_ex = _refuse
            socket.create_connection = _refuse
            socket.getaddrinfo = _refuse
            """
        )
    )
    code = textwrap.dedent(
        f"""
        import numpy as np
        from skimage import data
        from lookalike.embeddings import Encoder
        encoder = Encoder.load({str(tmp_path / "cache")!r}, threads=1)
        assert encoder.built
        vectors = encoder.embed([data.coffee()])
        assert vectors.shape == (1, 1280) and abs(np.linalg.norm(vectors) - 1) < 1e-5
        print("offline ok")
        """
    )
    command = [sys.executable, "-c", code]
    if shutil.which("unshare"):  # a namespace with no network at all, where allowed
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
        if probe.returncode == 0:
            command = ["unshare", "-rn", *command]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "offline ok" in result.stdout
