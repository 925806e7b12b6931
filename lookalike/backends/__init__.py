"""Stores behind one protocol; ``open_backend(url)`` picks one by the URL's scheme.

* ``memory://`` — in memory, nothing persists (the reference implementation);
* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` — the default;
* ``http(s)://host:9200`` — Elasticsearch (``lookalike[elasticsearch]``), as
  ``ELASTICSEARCH_URL`` selects it;
* ``milvus:///relative.db`` or ``milvus:////absolute.db`` — Milvus Lite in a local file,
  ``milvus://host:19530`` or ``milvus+https://host`` — a Milvus server or Zilliz Cloud
  (``lookalike[milvus]``).

Backends are imported lazily so that a client library is only needed when it is used.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..config import Settings
from ..errors import ConfigError
from .base import Backend

__all__ = ["Backend", "one_process_only", "open_backend"]


def open_backend(url: str, settings: Settings | None = None) -> Backend:
    """Open the store a URL names, creating it if needed; ``settings`` tune it."""
    settings = settings or Settings()
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend()
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        path = url[len("sqlite://") :]
        if not path.startswith("/") or len(path) < 2:
            raise ConfigError(f"{url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
        return SQLiteBackend(
            path[1:],
            index_min_rows=settings.index_min_rows,
            nprobe=settings.index_nprobe,
            embedding_index_min_rows=settings.embedding_index_min_rows,
        )
    if scheme in ("http", "https"):
        from .elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend(
            url,
            index=settings.elasticsearch_index,
            knn=settings.elasticsearch_knn,
            words=settings.elasticsearch_words,
            embedding_knn=settings.elasticsearch_embedding_knn,
            stage=settings.elasticsearch_stage,
            refresh=settings.elasticsearch_refresh,
            timeout=settings.elasticsearch_timeout,
        )
    if scheme in ("milvus", "milvus+http", "milvus+https"):
        from .milvus import MilvusBackend

        return MilvusBackend(
            url,
            collection=settings.milvus_collection,
            index=settings.milvus_index,
            candidates=settings.milvus_candidates,
            ef=settings.milvus_ef,
            token=settings.milvus_token,
            timeout=settings.milvus_timeout,
        )
    raise ConfigError(
        f"unknown store {url!r}: use sqlite:///path.db, memory://, milvus:///path.db,"
        " milvus://host:19530 or an Elasticsearch http(s) URL"
    )


def one_process_only(url: str) -> bool:
    """Whether the store a URL names can be open in one process at a time: Milvus Lite
    runs inside its process and locks its folder."""
    if urlsplit(url).scheme != "milvus":
        return False
    from .milvus_queries import parse_url  # no client library: safe to import

    return parse_url(url).lite is not None
