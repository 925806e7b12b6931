"""Settings: read from an environment mapping, validated, and all documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike import ConfigError, Settings
from lookalike.config import setting_variables

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults():
    settings = Settings.from_env({})
    assert settings.backend == "sqlite:///data/lookalike.db"
    assert settings.max_distance == 0.45
    assert settings.max_image_bytes == 20_000_000
    assert settings.max_image_pixels == 50_000_000
    assert settings.all_orientations is True


def test_environment_is_parsed_by_type():
    settings = Settings.from_env(
        {
            "LOOKALIKE_BACKEND": "memory://",
            "LOOKALIKE_MAX_IMAGE_BYTES": "1_000",
            "LOOKALIKE_MAX_DISTANCE": "0.3",
            "ALL_ORIENTATIONS": "false",
            "LOOKALIKE_FAST_DECODE": "yes",
            "UNRELATED": "ignored",
        }
    )
    assert settings.backend == "memory://"
    assert settings.max_image_bytes == 1000
    assert settings.max_distance == 0.3
    assert settings.all_orientations is False
    assert settings.fast_decode is True


@pytest.mark.parametrize(
    "environ",
    [
        {"LOOKALIKE_MAX_IMAGE_BYTES": "lots"},
        {"LOOKALIKE_MAX_IMAGE_BYTES": "0"},
        {"LOOKALIKE_MAX_DISTANCE": "1.5"},
        {"ALL_ORIENTATIONS": "maybe"},
        {"LOOKALIKE_SEARCH_LIMIT": "-3"},
    ],
)
def test_bad_values_name_the_variable(environ):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    if "=" in str(raised.value):
        assert next(iter(environ)) in str(raised.value)


def test_every_setting_is_in_the_readme_table_with_its_default():
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|", README.read_text(), flags=re.MULTILINE)
    documented = dict(rows)
    for variable, default, _help in setting_variables():
        assert variable in documented, f"{variable} is not documented in README.md"
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert documented[variable] == shown, f"README shows the wrong default for {variable}"


def test_importing_lookalike_pulls_in_no_heavy_optional_library():
    code = (
        "import sys, lookalike, lookalike.service, lookalike.cli\n"
        "heavy = {'torch', 'elasticsearch', 'pymilvus', 'onnxruntime', 'fastapi', 'cv2'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
