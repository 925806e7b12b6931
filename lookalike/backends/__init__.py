"""Stores behind one seam, ``base.Backend``; ``open_backend(url)`` picks one by the URL's scheme.

* ``memory://`` — in memory, nothing persists (the reference implementation);
* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` — the default;
* ``http(s)://host:9200`` — Elasticsearch (``lookalike[elasticsearch]``), as
  ``ELASTICSEARCH_URL`` selects it;
* ``milvus:///relative.db`` or ``milvus:////absolute.db`` — Milvus Lite in a local file,
  ``milvus://host:19530`` or ``milvus+https://host`` — a Milvus server or Zilliz Cloud
  (``lookalike[milvus]``);
* ``mongodb://host/database.collection`` (or ``mongodb+srv://``) — a MongoDB collection in
  image-match's layout (``lookalike[mongodb]``).

Each store builds itself from ``(url, settings)`` (``Backend.from_url``). They are imported
lazily, so that a client library is only needed when its store is used.
"""

from __future__ import annotations

from importlib import import_module
from urllib.parse import urlsplit

from ..config import Settings
from ..errors import ConfigError
from .base import Backend

__all__ = ["Backend", "open_backend"]

_STORES = {
    "memory": "memory:MemoryBackend",
    "sqlite": "sqlite:SQLiteBackend",
    "http": "elasticsearch:ElasticsearchBackend",
    "https": "elasticsearch:ElasticsearchBackend",
    "milvus": "milvus:MilvusBackend",
    "milvus+http": "milvus:MilvusBackend",
    "milvus+https": "milvus:MilvusBackend",
    "mongodb": "mongodb:MongoBackend",
    "mongodb+srv": "mongodb:MongoBackend",
}
"""URL scheme → ``module:class`` of the store, in this package."""


def open_backend(url: str, settings: Settings | None = None) -> Backend:
    """Open the store a URL names, creating it if needed; ``settings`` tune it."""
    where = _STORES.get(urlsplit(url).scheme)
    if where is None:
        raise ConfigError(
            f"unknown store {url!r}: use sqlite:///path.db, memory://, milvus:///path.db,"
            " milvus://host:19530, mongodb://host/database.collection or an Elasticsearch"
            " http(s) URL"
        )
    module, name = where.split(":")
    store: type[Backend] = getattr(import_module(f".{module}", __name__), name)
    return store.from_url(url, settings or Settings())
