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

METHODS: tuple[str, ...] = ("signature", "embedding", "hybrid")
"""How a search compares images: the Goldberg signature (copies), the CNN embedding
(look-alikes and crops), or both fused."""

HYBRID_ORIENTATIONS: tuple[str, ...] = ("all", "mirror", "identity")
"""What a hybrid search may embed its query in (``hybrid_orientations``)."""

__all__ = ["HYBRID_ORIENTATIONS", "METHODS", "VERSION", "Settings", "setting_variables"]

VERSION = "0.1.0"
"""lookalike's version (``lookalike.__version__``; the same as pyproject.toml's)."""

DEFAULT_BACKEND = "sqlite:///data/lookalike.db"


def _setting(default: Any, help: str, env: str | None = None, secret: bool = False) -> Any:
    return field(default=default, repr=not secret, metadata={"help": help, "env": env})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable about a lookalike process."""

    backend: str = _setting(
        DEFAULT_BACKEND,
        "Store URL: sqlite:///relative.db, sqlite:////absolute.db, memory://, Milvus Lite"
        " milvus:///relative.db or milvus:////absolute.db, a Milvus server milvus://host:19530"
        " or milvus+https://host, MongoDB mongodb://host/database.collection",
    )
    elasticsearch_url: str = _setting(
        "",
        "If set, the store is this Elasticsearch (host:port means http)",
        env="ELASTICSEARCH_URL",
    )
    elasticsearch_index: str = _setting(
        "images", "Elasticsearch index (or alias) of the images", env="ELASTICSEARCH_INDEX"
    )
    elasticsearch_doc_type: str = _setting(
        "image",
        "Accepted for Match's sake and ignored: Elasticsearch 7+ has no types",
        env="ELASTICSEARCH_DOC_TYPE",
    )
    elasticsearch_stage: str = _setting(
        "knn",
        "Elasticsearch candidate stage: knn (HNSW) or words (image-match's);"
        " indices written by Match or image-match always use words",
    )
    elasticsearch_knn: int = _setting(
        500, "kNN candidates (k) per query orientation, from 2k HNSW candidates"
    )
    elasticsearch_words: int = _setting(
        1000, "Word-query candidates per query orientation (image-match used 100)"
    )
    elasticsearch_embedding_knn: int = _setting(
        100,
        "Embedding kNN candidates (k) per query orientation, from 2k int8 HNSW candidates"
        " (at most 10000)",
    )
    elasticsearch_refresh: str = _setting(
        "wait_for", "Elasticsearch refresh after writes: wait_for (visible at once), true, false"
    )
    elasticsearch_timeout: float = _setting(10.0, "Seconds an Elasticsearch request may take")
    milvus_token: str = _setting(
        "", "Token (or user:password) for a Milvus server or Zilliz Cloud", secret=True
    )
    milvus_timeout: float = _setting(10.0, "Seconds a Milvus request may take")
    milvus_collection: str = _setting(
        "images",
        "Milvus collection of the images (and <name>_embeddings, <name>_previews for their"
        " embeddings and previews)",
    )
    milvus_index: str = _setting(
        "HNSW", "Milvus vector index: HNSW, FLAT (exact, slower) or AUTOINDEX (Zilliz Cloud)"
    )
    milvus_candidates: int = _setting(
        32,
        "Milvus candidates per query orientation at first; more are asked for while a record"
        " left out could still belong in the results",
    )
    milvus_ef: int = _setting(
        128, "Milvus HNSW search breadth (at least the candidates): more is slower, recalls more"
    )
    embeddings: bool = _setting(
        False,
        "Store a CNN embedding of every image added, for method=embedding and hybrid"
        " (needs lookalike[cnn])",
    )
    search_method: str = _setting(
        "signature",
        "Default search method: signature (copies), embedding (look-alikes, crops) or hybrid",
    )
    verify: bool = _setting(
        True,
        "Check the best embedding and hybrid results with local features (the verify extra;"
        " needs the stored thumbnails): a copy the embeddings put beyond the cutoff is found"
        " when it verifies, and results say which region of each picture the other shows",
    )
    hybrid_orientations: str = _setting(
        "all",
        "Orientations hybrid search embeds the query in: all (8 CNN passes, as embedding"
        " does), or mirror (as it is and mirrored) or identity, fewer passes, the signature"
        " finding turned copies: about twice as fast, fewer pictures inside pictures found",
    )
    verify_candidates: int = _setting(
        5, "Results (and candidates beyond the cutoff) one search checks by verification"
    )
    embedding_max_distance: float = _setting(
        0.25, "Default embedding search cutoff, as 1 − cosine similarity (score above 75)"
    )
    embedding_threads: int = _setting(
        0, "Threads of the embedding model per process; 0 lets onnxruntime choose"
    )
    model_cache: str = _setting(
        "", "Folder for the embedding model's ONNX graph; empty: ~/.cache/lookalike"
    )
    max_image_bytes: int = _setting(20_000_000, "Largest accepted image, in bytes")
    max_image_pixels: int = _setting(
        50_000_000, "Largest accepted image, in pixels (checked before decoding)"
    )
    request_timeout: float = _setting(
        30.0, "Seconds a client has to send a whole request, headers and body (then 408 or close)"
    )
    max_decodes: int = _setting(
        2, "Images one worker process decodes at once; more requests wait (see the next)"
    )
    decode_wait: float = _setting(
        10.0, "Seconds a request waits for a decode slot before a 503 with Retry-After"
    )
    max_distance: float = _setting(
        0.45, "Default search cutoff: matches at or beyond this distance are dropped"
    )
    search_limit: int = _setting(100, "Default maximum number of search results")
    index_min_rows: int = _setting(
        50_000,
        "Images from which a SQLite store searches an index, built in the background;"
        " 0: only `lookalike reindex` builds one",
    )
    embedding_index_min_rows: int = _setting(
        20_000,
        "Embeddings from which a SQLite store searches an HNSW index of them, built in the"
        " background; 0: never",
    )
    index_nprobe: int = _setting(
        32, "Index lists searched per query orientation: more is slower, with higher recall"
    )
    all_orientations: bool = _setting(
        True, "Search rotated and mirrored copies by default", env="ALL_ORIENTATIONS"
    )
    fast_decode: bool = _setting(
        False,
        "Decode large JPEGs at reduced scale: faster, signatures within ~0.03 of exact",
    )
    thumbnails: bool = _setting(
        True,
        "Keep a thumbnail (256 px, ~10 KB JPEG) of every image added, for the page;"
        " sizes are kept either way",
    )
    duplicates_nprobe: int = _setting(
        16,
        "k-means lists each image is compared with in `lookalike duplicates` beyond 20,000"
        " images: more is slower, finds more pairs",
    )
    jobs_dir: str = _setting(
        "",
        "Folder of background jobs' state, shared by the workers (default: beside a SQLite"
        " store, else in the temporary folder)",
    )
    ingest_workers: int = _setting(
        0, "Processes that sign images for `lookalike add` and `POST /add_batch`; 0: one per core"
    )
    batch_max_items: int = _setting(1000, "Most images one `POST /add_batch` may carry")
    batch_max_bytes: int = _setting(
        100_000_000, "Largest `POST /add_batch` body, in bytes (it is held in memory)"
    )
    host: str = _setting("127.0.0.1", "Address `lookalike serve` listens on")
    port: int = _setting(8888, "Port `lookalike serve` listens on", env="PORT")
    workers: int = _setting(4, "Worker processes of `lookalike serve`", env="WORKER_COUNT")
    api_key: str = _setting(
        "", "If set, every endpoint but /ping and /ready needs `Authorization: Bearer <key>`"
    )
    log_level: str = _setting("info", "Logging level: debug, info, warning or error")
    metrics_public: bool = _setting(
        False, "Let `GET /metrics` answer without the API key (for a scraper without it)"
    )
    allow_private_urls: bool = _setting(
        False, "Let `url` inputs reach loopback, private, link-local and reserved addresses"
    )
    url_allowlist: str = _setting(
        "", "Comma-separated networks `url` inputs may reach even if private, e.g. 10.1.0.0/16"
    )
    fetch_timeout: float = _setting(10.0, "Seconds a `url` input may take to download, in all")
    fetch_connect_timeout: float = _setting(3.0, "Seconds to connect to a `url` input's server")

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
        if self.duplicates_nprobe < 1:
            raise ConfigError("LOOKALIKE_DUPLICATES_NPROBE must be at least 1")
        if self.batch_max_items < 1 or self.batch_max_bytes < 1:
            raise ConfigError("batch_max_items and batch_max_bytes must be positive")
        if self.ingest_workers < 0:
            raise ConfigError("ingest_workers must be 0 (one per core) or more")
        if not 0 < self.port < 65536:
            raise ConfigError("PORT must be between 1 and 65535")
        if self.workers < 1:
            raise ConfigError("WORKER_COUNT must be at least 1")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("LOOKALIKE_LOG_LEVEL must be debug, info, warning or error")
        if self.request_timeout <= 0:
            raise ConfigError("request_timeout must be positive")
        if self.max_decodes < 1 or self.decode_wait < 0:
            raise ConfigError("max_decodes must be at least 1 and decode_wait not negative")
        if self.fetch_timeout <= 0 or self.fetch_connect_timeout <= 0:
            raise ConfigError("fetch timeouts must be positive")
        if self.elasticsearch_stage not in ("words", "knn"):
            raise ConfigError("LOOKALIKE_ELASTICSEARCH_STAGE must be words or knn")
        if (
            min(self.elasticsearch_knn, self.elasticsearch_words, self.elasticsearch_embedding_knn)
            < 1
            or self.elasticsearch_timeout <= 0
        ):
            raise ConfigError("Elasticsearch candidates and timeout must be positive")
        if self.elasticsearch_embedding_knn > 10_000:
            raise ConfigError("LOOKALIKE_ELASTICSEARCH_EMBEDDING_KNN is at most 10000")
        if self.search_method not in METHODS:
            raise ConfigError("LOOKALIKE_SEARCH_METHOD must be signature, embedding or hybrid")
        if self.search_method != "signature" and not self.embeddings:
            raise ConfigError(f"search method {self.search_method} needs LOOKALIKE_EMBEDDINGS=true")
        if self.hybrid_orientations not in HYBRID_ORIENTATIONS:
            raise ConfigError("LOOKALIKE_HYBRID_ORIENTATIONS must be all, mirror or identity")
        if self.verify_candidates < 0:
            raise ConfigError("verify_candidates must be 0 (none) or more")
        if not 0.0 < self.embedding_max_distance <= 2.0:
            raise ConfigError("embedding_max_distance must be in (0, 2]")
        if self.embedding_threads < 0 or self.milvus_timeout <= 0:
            raise ConfigError("embedding_threads must be 0 or more, milvus_timeout positive")
        if self.milvus_index not in ("HNSW", "FLAT", "AUTOINDEX"):
            raise ConfigError("LOOKALIKE_MILVUS_INDEX must be HNSW, FLAT or AUTOINDEX")
        if not 1 <= self.milvus_candidates <= 16_384 or not 1 <= self.milvus_ef <= 16_384:
            raise ConfigError("LOOKALIKE_MILVUS_CANDIDATES and _EF must be from 1 to 16384")
        if self.elasticsearch_refresh not in ("wait_for", "true", "false"):
            raise ConfigError("LOOKALIKE_ELASTICSEARCH_REFRESH must be wait_for, true or false")
        return self

    @property
    def search_methods(self) -> list[str]:
        """The search methods this service offers: all three with embeddings."""
        return list(METHODS) if self.embeddings else ["signature"]

    @property
    def store(self) -> str:
        """The URL of the store to open: ``ELASTICSEARCH_URL`` if set (as in Match), else
        ``backend``."""
        url = self.elasticsearch_url.strip()
        if not url:
            return self.backend
        return url if "://" in url else f"http://{url}"


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
