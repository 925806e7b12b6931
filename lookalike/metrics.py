"""What the service counts, for ``GET /metrics`` (Prometheus text format, through the
official ``prometheus_client``).

Every worker process counts into its own files in ``PROMETHEUS_MULTIPROC_DIR`` when
that is set (``lookalike serve`` sets it for its workers), and ``exposition`` sums them
all, so whichever worker answers a scrape reports the whole service. Without it (one
process) the counts are this process's. The store's size and index state are read at
scrape time by the worker answering (the store is shared).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import FetchError, ImageTooLarge, LookalikeError

__all__ = [
    "CONTENT_TYPE",
    "FETCH_FAILURES",
    "IMAGES_ADDED",
    "IMAGES_DELETED",
    "JOBS",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SEARCHES",
    "exposition",
    "fetch_failed",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "lookalike_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"]
)
REQUEST_SECONDS = Histogram(
    "lookalike_request_seconds",
    "Time to answer an HTTP request, by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
IMAGES_ADDED = Counter(
    "lookalike_images_added", "Images stored (added or replaced), by way in", ["via"]
)
IMAGES_DELETED = Counter("lookalike_images_deleted", "Images deleted")
SEARCHES = Counter("lookalike_searches", "Searches made, by method", ["method"])
FETCH_FAILURES = Counter(
    "lookalike_fetch_failures", "URL inputs that could not be fetched, by reason", ["reason"]
)
JOBS = Counter(
    "lookalike_jobs", "Background jobs started and ended, by kind and state", ["kind", "state"]
)


def fetch_failed(error: FetchError | ImageTooLarge) -> None:
    """Count a failed URL fetch under its reason (``FetchError.reason``)."""
    reason = error.reason if isinstance(error, FetchError) else "too_large"
    FETCH_FAILURES.labels(reason).inc()


def exposition(store_facts: Callable[[], dict[str, Any]]) -> tuple[bytes, str]:
    """The metrics page, and its content type: every process's counts (summed where
    they are kept per process), then the store's size and index state from
    ``store_facts`` (``Lookalike.stats``)."""
    if os.environ.get(MULTIPROCESS):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counts = generate_latest(registry)
    else:
        counts = generate_latest(REGISTRY)
    store = CollectorRegistry()
    store.register(_StoreCollector(store_facts))
    return counts + generate_latest(store), CONTENT_TYPE


class _StoreCollector(Collector):
    """The store as ``stats`` sees it at scrape time."""

    def __init__(self, facts: Callable[[], dict[str, Any]]) -> None:
        self.facts = facts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            facts, up = self.facts(), 1.0
        except LookalikeError:
            facts, up = {}, 0.0
        yield GaugeMetricFamily("lookalike_store_up", "1 if the store answered", value=up)
        if "count" in facts:
            yield GaugeMetricFamily(
                "lookalike_store_images", "Images in the store", value=float(facts["count"])
            )
        if "index" in facts:
            info = GaugeMetricFamily(
                "lookalike_index_info",
                "The store's search indices as it names them (the value is always 1)",
                labels=["index", "embedding_index"],
            )
            labels = [str(facts["index"]), str(facts.get("embedding_index", "none"))]
            info.add_metric(labels, 1.0)
            yield info
        building = GaugeMetricFamily(
            "lookalike_index_building", "1 while an index is being built", labels=["index"]
        )
        for name, key in (
            ("signature", "index_building"),
            ("embedding", "embedding_index_building"),
        ):
            if key in facts:
                building.add_metric([name], float(bool(facts[key])))
        yield building
