"""Settings: one frozen dataclass, read from an environment mapping passed in.

Every field has a default and a one-line help text; the README's settings table is
checked against them by a test. Match's own variable names keep their meaning; every
other setting is ``LOOKALIKE_<FIELD NAME IN CAPITALS>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

__all__ = ["Settings", "setting_variables"]

DEFAULT_BACKEND = "sqlite:///data/lookalike.db"


def _setting(default: Any, help: str, env: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "env": env})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable about a lookalike process."""

    backend: str = _setting(
        DEFAULT_BACKEND, "Store URL: sqlite:///relative.db, sqlite:////absolute.db or memory://"
    )
    max_image_bytes: int = _setting(20_000_000, "Largest accepted image, in bytes")
    max_image_pixels: int = _setting(
        50_000_000, "Largest accepted image, in pixels (checked before decoding)"
    )
    max_distance: float = _setting(
        0.45, "Default search cutoff: matches at or beyond this distance are dropped"
    )
    search_limit: int = _setting(100, "Default maximum number of search results")
    all_orientations: bool = _setting(
        True, "Search rotated and mirrored copies by default", env="ALL_ORIENTATIONS"
    )
    fast_decode: bool = _setting(
        False, "Decode large JPEGs at reduced scale: faster, signatures drift slightly"
    )
    ingest_workers: int = _setting(0, "Processes used by `lookalike add`; 0 means one per core")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from an environment mapping (``os.environ`` or a test's dict)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = _variable(f)
            if name in environ:
                values[f.name] = _parse(name, environ[name], f.default)
        return cls(**values).validated()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes).validated()

    def validated(self) -> Settings:
        if self.max_image_bytes <= 0 or self.max_image_pixels <= 0:
            raise ConfigError("image limits must be positive")
        if not 0.0 < self.max_distance <= 1.0:
            raise ConfigError("max_distance must be in (0, 1]")
        if self.search_limit <= 0:
            raise ConfigError("search_limit must be positive")
        if self.ingest_workers < 0:
            raise ConfigError("ingest_workers must be 0 (one per core) or more")
        return self


def setting_variables() -> list[tuple[str, Any, str]]:
    """(environment variable, default, help) for every setting, in declaration order."""
    return [(_variable(f), f.default, f.metadata["help"]) for f in fields(Settings)]


def _variable(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("env") or "LOOKALIKE_" + f.name.upper()


def _parse(name: str, raw: str, default: Any) -> Any:
    text = raw.strip()
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            return int(text.replace("_", ""))
        if isinstance(default, float):
            return float(text)
    except ValueError as error:
        raise ConfigError(f"{name}={raw!r}: {error}") from None
    return text
