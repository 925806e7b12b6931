"""lookalike: have we seen this picture before?"""

from .config import Settings
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

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "FetchError",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidRequest",
    "LookalikeError",
    "Match",
    "NotFound",
    "Record",
    "Settings",
]
__version__ = "0.1.0"
