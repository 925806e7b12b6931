"""The package's public names, and what importing it costs: a change to either is a
change of the public promise, made on purpose."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import lookalike

PUBLIC = [
    "BackendUnavailable",
    "ConfigError",
    "FetchError",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidRequest",
    "Lookalike",
    "LookalikeError",
    "Match",
    "NotFound",
    "Record",
    "Settings",
]
OPTIONAL = ["elasticsearch", "pymilvus", "milvus_lite", "pymongo", "onnxruntime", "onnx", "usearch"]


def test_the_public_names_are_pinned_and_all_resolve() -> None:
    assert sorted(lookalike.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(lookalike, name) is not None, name
    from lookalike.service import Lookalike

    assert lookalike.Lookalike is Lookalike


def test_the_version_is_the_one_pyproject_declares() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert lookalike.__version__ == project["project"]["version"]


def imported_after(statement: str) -> set[str]:
    """The modules loaded by ``statement`` in a fresh interpreter."""
    probe = f"import sys; {statement}; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def packages(modules: set[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


def test_importing_lookalike_loads_no_store_client_framework_or_model() -> None:
    """`import lookalike` loads neither the service nor any store client, web framework
    or model runtime; the service class loads no optional store client or model either:
    each comes with the store or the model a service opens."""
    bare = imported_after("import lookalike")
    assert "lookalike.service" not in bare
    assert not packages(bare) & {*OPTIONAL, "fastapi", "starlette", "uvicorn"}
    service = imported_after("from lookalike import Lookalike")
    assert "lookalike.service" in service
    assert not packages(service) & set(OPTIONAL), packages(service) & set(OPTIONAL)
