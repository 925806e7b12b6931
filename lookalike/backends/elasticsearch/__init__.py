"""The Elasticsearch store (``lookalike[elasticsearch]``): ``store`` (the backend), ``queries``
(request bodies and response shapes: pure, no client) and ``migrate`` (from the layout of
Match and image-match to lookalike's).

``ElasticsearchBackend`` is imported on first use, so that ``queries`` can be imported
without loading the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import ElasticsearchBackend

__all__ = ["ElasticsearchBackend"]


def __getattr__(name: str) -> Any:
    if name == "ElasticsearchBackend":
        from .store import ElasticsearchBackend

        return ElasticsearchBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
