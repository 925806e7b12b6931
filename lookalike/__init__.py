"""lookalike: have we seen this picture before?

The public names are these (``__all__``, pinned by a test). ``Lookalike``, the service,
is imported on first use, so that ``import lookalike`` (for its signature, say) stays
quick and loads no store, web framework or model.
"""

from typing import TYPE_CHECKING, Any

from .config import VERSION, Settings
from .errors import (
    BackendUnavailable,
    ConfigError,
    FetchError,
    ImageTooLarge,
    InvalidImage,
    InvalidRequest,
    LookalikeError,
    NotFound,
)
from .records import Match, Record

if TYPE_CHECKING:
    from .service import Lookalike

__all__ = [
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
__version__ = VERSION


def __getattr__(name: str) -> Any:
    if name == "Lookalike":
        from .service import Lookalike

        return Lookalike
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
