"""The one exception tree of lookalike. It knows nothing of HTTP or exit codes.

::

    LookalikeError
     ├── InvalidImage          the bytes are not an image we can decode
     │    └── ImageTooLarge    over the byte or pixel limit
     ├── FetchError            a URL could not or may not be fetched
     ├── InvalidRequest        a parameter is missing or malformed
     ├── NotFound              no stored image has that filepath
     ├── BackendUnavailable    the store cannot be reached right now
     ├── Overloaded            too much work in hand: try again shortly
     └── ConfigError           a setting is malformed or inconsistent

The edges map these to responses in one place each: status codes in ``api``, exit
codes in ``cli``.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "FetchError",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidRequest",
    "LookalikeError",
    "NotFound",
    "Overloaded",
]


class LookalikeError(Exception):
    """Base of every error lookalike raises on purpose; its message is safe to show a user."""


class InvalidImage(LookalikeError):
    """The input could not be decoded as a supported image."""


class ImageTooLarge(InvalidImage):
    """The input exceeds the configured byte or pixel limit."""


class FetchError(LookalikeError):
    """A URL could not be fetched, or the address policy refused it; ``reason`` names
    which (refused, http_status, dns, timeout, connection), for the metrics."""

    def __init__(self, message: str, reason: str = "connection") -> None:
        super().__init__(message)
        self.reason = reason


class InvalidRequest(LookalikeError):
    """A parameter is missing or malformed."""


class NotFound(LookalikeError):
    """No stored image has the requested filepath."""


class BackendUnavailable(LookalikeError):
    """The store cannot be reached or cannot answer right now."""


class ConfigError(LookalikeError):
    """A setting is malformed, or settings contradict each other."""


class Overloaded(LookalikeError):
    """Too many images are being decoded already; the request may be tried again."""
