"""One Elasticsearch index as the store and the migration use it, through the official
client (``connect``): every request retried (``call``), the layout read once when the index
is first used (``layout``: the index created if missing, the ``embedding`` and ``preview``
fields added to a lookalike index made before they existed), and bulk upserts (``write``).
``DistinctMarks`` keeps a store's distinct marks in a second index beside it."""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from typing import Any, TypeVar

from ...errors import BackendUnavailable, ConfigError
from ...records import Record
from .queries import (
    DISTINCT_PAGE,
    EMBEDDING,
    PREVIEW,
    Layout,
    distinct_delete_query,
    distinct_document,
    distinct_id,
    distinct_index,
    distinct_mapping,
    distinct_page_body,
    distinct_pairs,
    embedding_field,
    embedding_field_problem,
    error_reason,
    hits_of,
    layout_of,
    mapping,
    preview_field,
    preview_field_problem,
    upsert_action,
)

try:
    import elasticsearch
    from elasticsearch import helpers
except ImportError:  # pragma: no cover - exercised where the extra is missing
    elasticsearch = None  # type: ignore[assignment]

__all__ = ["DistinctMarks", "Index", "check_installed", "connect"]

T = TypeVar("T")

log = logging.getLogger(__package__)  # the name it had when the store was one module

_TRANSIENT = (429, 502, 503, 504)
_LEGACY_EMBEDDINGS = (
    "it was written by Match or image-match; `lookalike migrate` moves it to the new"
    " layout, which holds embeddings"
)
_LEGACY_PREVIEWS = (
    "it was written by Match or image-match; `lookalike migrate` moves it to the new"
    " layout, which holds previews"
)


def check_installed() -> None:
    """ConfigError where the client is not installed."""
    if elasticsearch is None:
        raise ConfigError("the Elasticsearch store needs: pip install 'lookalike[elasticsearch]'")


def connect(url: str, timeout: float) -> Any:
    """The official client for the cluster at ``url``; it retries nothing (``Index.call``
    does). Typed as Any: bodies are plain dicts unpacked into the client's calls."""
    return elasticsearch.Elasticsearch(
        url, request_timeout=timeout, max_retries=0, retry_on_timeout=False
    )


@dataclass(eq=False)
class Index:
    """The index ``name`` on the cluster ``es`` talks to (``shown_url`` for messages)."""

    es: Any
    name: str
    _: KW_ONLY
    shown_url: str
    refresh: str
    retries: int
    # Why this index cannot hold embeddings (legacy layout, or the field was refused),
    # known once the index is opened; None if it can.
    no_embeddings: str | None = field(default=None, init=False)
    no_previews: str | None = field(default=None, init=False)  # likewise for previews
    _found: Layout | None = field(default=None, init=False)
    _warned: bool = field(default=False, init=False)

    def exists(self) -> bool:
        if self._found is not None:
            return True
        return bool(self.call(lambda: self.es.indices.exists(index=self.name)))

    def layout(self) -> Layout:
        """The index's layout, read once (the index is created if missing)."""
        if self._found is None:
            if not self.exists():
                self._create()
            answer = self.call(lambda: self.es.indices.get_mapping(index=self.name))
            found = next(iter(answer.values()))["mappings"]
            layout = layout_of(found)
            self.no_embeddings = (
                _LEGACY_EMBEDDINGS if layout.legacy else self._embedding_field(found)
            )
            self.no_previews = _LEGACY_PREVIEWS if layout.legacy else self._preview_field(found)
            self._found = layout
        return self._found

    def count(self) -> int:
        if not self.exists():
            return 0
        return int(self.call(lambda: self.es.count(index=self.name))["count"])

    def count_embeddings(self) -> int:
        if self.layout().legacy or self.no_embeddings:
            return 0
        body = {"query": {"exists": {"field": EMBEDDING}}}
        return int(self.call(lambda: self.es.count(index=self.name, **body))["count"])

    def write(self, records: builtins.list[Record]) -> None:
        """Upsert the records in one bulk request; failed items are reported, not half-kept
        silently (each item is an idempotent upsert, so a retry is safe)."""
        vector = not self.layout().legacy
        batch = [upsert_action(self.name, record, time.time_ns(), vector) for record in records]
        outcome: Any = self.call(
            lambda: helpers.bulk(self.es, batch, refresh=self.refresh, raise_on_error=False)
        )
        errors: builtins.list[dict[str, Any]] = outcome[1]
        if errors:
            first = next(iter(errors[0].values()))
            raise BackendUnavailable(
                f"Elasticsearch refused {len(errors)} documents: {error_reason(first.get('error'))}"
            )

    def warn_no_embeddings(self, reason: str | None = None) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "Elasticsearch index %r holds no embeddings, only signatures: %s",
                self.name,
                reason or self.no_embeddings,
            )

    def call(self, request: Callable[[], T]) -> T:
        """Run a request, retrying transient failures with exponential backoff."""
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return request()
            except elasticsearch.ApiError as error:
                if error.status_code not in _TRANSIENT or attempt == self.retries:
                    body = error.body.get("error") if isinstance(error.body, dict) else error.body
                    raise BackendUnavailable(
                        f"Elasticsearch at {self.shown_url} answered {error.status_code}:"
                        f" {error_reason(body)}"
                    ) from None
            except elasticsearch.TransportError as error:  # unreachable, timed out
                if attempt == self.retries:
                    raise BackendUnavailable(
                        f"Elasticsearch at {self.shown_url} is unreachable or too slow:"
                        f" {error.message}"
                    ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _embedding_field(self, index_mapping: dict[str, Any]) -> str | None:
        """Add the ``embedding`` field to a lookalike index made before embeddings existed;
        returns why the index cannot hold embeddings, or None. A refusal (an Elasticsearch
        older than 8.12, which lacks int8_hnsw, or a user without the manage privilege)
        leaves signatures working and is logged; unreachable clusters still raise."""
        problem = self._added_field(
            index_mapping, EMBEDDING, embedding_field(), embedding_field_problem(index_mapping)
        )
        if problem:
            self.warn_no_embeddings(problem)
        return problem

    def _preview_field(self, index_mapping: dict[str, Any]) -> str | None:
        """Add the ``preview`` field to a lookalike index made before previews existed;
        returns why the index cannot hold previews, or None. A refusal is logged: records
        are then kept without previews, and the page shows "no preview"."""
        problem = self._added_field(
            index_mapping, PREVIEW, preview_field(), preview_field_problem(index_mapping)
        )
        if problem:
            log.warning(
                "Elasticsearch index %r keeps no previews (sizes, thumbnails): %s",
                self.name,
                problem,
            )
        return problem

    def _added_field(
        self, index_mapping: dict[str, Any], name: str, field: dict[str, Any], problem: str | None
    ) -> str | None:
        """Put the field ``name`` into the mapping when it lacks it (and has no
        ``problem`` with it); returns the problem, or why Elasticsearch refused."""
        if problem is None and name not in (index_mapping.get("properties") or {}):
            answer = self.call(
                lambda: self.es.options(ignore_status=(400, 403)).indices.put_mapping(
                    index=self.name, properties={name: field}
                )
            )
            if answer.get("error") is not None:
                reason = error_reason(answer["error"])
                problem = f"Elasticsearch refused to add the {name!r} field: {reason}"
        return problem

    def _create(self) -> None:
        _create(self, self.name, mapping())


@dataclass(eq=False)
class DistinctMarks:
    """The distinct marks of the store on ``index``: one document per sorted pair, its id
    ``distinct_id``, in the index ``distinct_index(index.name)``, created with
    ``distinct_mapping`` by the first mark. Until that index has been seen, a read or a
    delete of the store asks whether it exists (one HEAD request); once seen, nothing."""

    index: Index
    name: str = field(init=False)
    _seen: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.name = distinct_index(self.index.name)

    def exists(self) -> bool:
        if not self._seen:
            es = self.index.es
            self._seen = bool(self.index.call(lambda: es.indices.exists(index=self.name)))
        return self._seen

    def mark(self, first: str, second: str) -> None:
        """Keep the mark of the sorted pair (again: the same document)."""
        if not self.exists():
            _create(self.index, self.name, distinct_mapping())
            self._seen = True
        put = partial(
            self.index.es.index,
            index=self.name,
            id=distinct_id(first, second),
            document=distinct_document(first, second),
            refresh=self.index.refresh,
        )
        self.index.call(put)

    def unmark(self, first: str, second: str) -> bool:
        """Delete the mark of the sorted pair; True if it was there (a missing index or
        document is a 404, and False)."""
        remove = partial(
            self.index.es.options(ignore_status=404).delete,
            index=self.name,
            id=distinct_id(first, second),
            refresh=self.index.refresh,
        )
        return bool(self.index.call(remove).get("result") == "deleted")

    def pairs(self) -> builtins.list[tuple[str, str]]:
        """Every mark in pair order, a page of ``DISTINCT_PAGE`` at a time."""
        if not self.exists():
            return []
        found: builtins.list[tuple[str, str]] = []
        after = None
        while True:
            body = distinct_page_body(after, DISTINCT_PAGE)
            hits = hits_of(self.index.call(partial(self.index.es.search, index=self.name, **body)))
            found.extend(distinct_pairs(hits))
            if len(hits) < DISTINCT_PAGE:
                return found
            after = hits[-1]["sort"]

    def forget(self, filepath: str) -> None:
        """Delete every mark naming ``filepath`` (its image is deleted), refreshed before
        it returns; a store that never kept a mark sends no _delete_by_query."""
        if not self.exists():
            return
        remove = partial(
            self.index.es.options(ignore_status=404).delete_by_query,
            index=self.name,
            conflicts="proceed",  # a mark deleted meanwhile is no failure
            refresh=True,
            **distinct_delete_query(filepath),
        )
        answer = self.index.call(remove)
        if answer.get("status") == 404:  # the marks index was deleted meanwhile
            self._seen = False
        if failures := answer.get("failures"):
            raise BackendUnavailable(
                f"Elasticsearch at {self.index.shown_url} failed to delete the distinct marks"
                f" of {filepath!r} from {self.name!r}: {error_reason(failures[0].get('cause'))}"
            )


def _create(index: Index, name: str, mappings: dict[str, Any]) -> None:
    """Create the index ``name``; another process creating it first is fine, a refused
    mapping (e.g. a cluster too old for it) is reported rather than found missing later."""
    answer = index.call(
        lambda: index.es.options(ignore_status=400).indices.create(index=name, mappings=mappings)
    )
    error = answer.get("error")
    if error is not None and not (
        isinstance(error, dict) and error.get("type") == "resource_already_exists_exception"
    ):
        raise BackendUnavailable(
            f"Elasticsearch at {index.shown_url} refused to create {name!r}: {error_reason(error)}"
        )
