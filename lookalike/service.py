"""Lookalike: the one place that turns images into signatures and asks the store.

Built once from Settings and handed to the HTTP API and the CLI, which only translate
their inputs and outputs. Images arrive as bytes or as a local path; everything here
raises errors from ``errors`` and nothing else.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt

from . import images, signature
from .backends import Backend, open_backend
from .backends.base import Filter, check_filepath, check_filter, check_metadata
from .config import Settings
from .errors import ConfigError, InvalidRequest, LookalikeError, NotFound
from .fetch import AddressPolicy
from .fetch import fetch as fetch_url
from .records import Match, Metadata, Record, score_of

__all__ = ["Comparison", "FileResult", "ImageSource", "Lookalike"]

T = TypeVar("T")
R = TypeVar("R")

ImageSource = bytes | str | os.PathLike[str]
"""Image bytes, or the path of a local image file."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """How alike two images are: Match's score, the distance and the orientation used."""

    distance: float
    orientation: str = "identity"

    @property
    def score(self) -> float:
        return score_of(self.distance)

    def to_json(self) -> dict[str, Any]:
        """The result object of ``/compare`` and of ``lookalike compare --json``."""
        return {"score": self.score, "distance": self.distance, "orientation": self.orientation}


@dataclass(frozen=True, slots=True)
class FileResult:
    """The outcome of adding one file: ``error`` is None when it was stored."""

    filepath: str
    error: str | None = None


class Lookalike:
    """Add, search, compare and manage images in one store."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None) -> None:
        self.settings = settings or Settings()
        self._policy = AddressPolicy.from_settings(self.settings)  # before opening anything
        if backend is None:
            backend = open_backend(self.settings.store, self.settings)
        self.backend = backend

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    # -- images ---------------------------------------------------------------------------

    def pixels(self, source: ImageSource) -> npt.NDArray[np.uint8]:
        """Decode an image within the configured limits: H×W×3 RGB."""
        return _pixels(source, self.settings)

    def fetch(self, url: str) -> bytes:
        """Download an image URL within the configured limits and address policy."""
        return fetch_url(
            url,
            max_bytes=self.settings.max_image_bytes,
            policy=self._policy,
            timeout=self.settings.fetch_timeout,
            connect_timeout=self.settings.fetch_connect_timeout,
        )

    def signature(self, source: ImageSource) -> npt.NDArray[np.int8]:
        """The image-match signature of an image (648 values in -2..2)."""
        return signature.signature(self.pixels(source))

    # -- writes ---------------------------------------------------------------------------

    def add(self, filepath: str, source: ImageSource, metadata: Metadata | None = None) -> Record:
        """Store an image under ``filepath``, replacing any image stored under it."""
        name, meta = (
            check_filepath(filepath),
            check_metadata(metadata),
        )  # cheap checks before decoding
        record = Record(name, self.signature(source), meta)
        self.backend.add(record)
        return record

    def add_many(self, records: Iterable[Record]) -> int:
        """Store precomputed records in batches; returns how many were stored."""
        return self.backend.add_many(records)

    def add_files(
        self,
        files: Iterable[tuple[str, Path]],
        *,
        workers: int | None = None,
        batch: int = 1000,
    ) -> Iterator[FileResult]:
        """Sign ``(filepath, path)`` pairs in parallel processes and store them in batches.

        Yields one result per file, in input order, after its batch is stored. A file that
        cannot be read or decoded is reported and skipped; the others are stored.
        """
        count = workers or self.settings.ingest_workers or os.cpu_count() or 1
        chunks = _chunks((name, os.fspath(path)) for name, path in files)
        sign = partial(_sign_files, self.settings)  # pickled once per chunk, not per file
        pending: list[tuple[str, bytes | str]] = []
        for chunk in _parallel_map(sign, chunks, count):
            pending.extend(chunk)
            if len(pending) >= batch:
                yield from self._store(pending)
                pending = []
        yield from self._store(pending)

    def _store(self, signed: list[tuple[str, bytes | str]]) -> Iterator[FileResult]:
        outcome: list[tuple[str, bytes | str]] = []
        for name, sig in signed:
            try:
                outcome.append((check_filepath(name), sig))
            except InvalidRequest as error:  # e.g. a file name that is not valid Unicode
                outcome.append((name, str(error)))
        good = [
            Record(name, np.frombuffer(sig, dtype=np.int8))
            for name, sig in outcome
            if isinstance(sig, bytes)
        ]
        if good:
            self.backend.add_many(good)
        for name, sig in outcome:
            yield FileResult(name, None if isinstance(sig, bytes) else sig)

    def delete(self, filepath: str) -> None:
        """Remove the image stored under ``filepath``; NotFound if there is none."""
        if not self.backend.delete(check_filepath(filepath)):
            raise NotFound(f"no image is stored under {filepath!r}")

    # -- reads ----------------------------------------------------------------------------

    def search(
        self,
        source: ImageSource,
        *,
        all_orientations: bool | None = None,
        limit: int | None = None,
        max_distance: float | None = None,
        min_score: float | None = None,
        where: Filter | None = None,
    ) -> list[Match]:
        """Stored images like this one, best first.

        With ``all_orientations`` (the default setting) the query is also tried rotated by
        90°, 180°, 270° and mirrored — all 8 in one pass. ``min_score`` (0–100) and
        ``max_distance`` are two spellings of one cutoff; the stricter wins.
        """
        options = self._search_options(limit, max_distance, min_score, where)  # before decoding
        pixels = self.pixels(source)
        rotate = self.settings.all_orientations if all_orientations is None else all_orientations
        queries = signature.orientations(pixels) if rotate else signature.signature(pixels)[None]
        return self.backend.search(queries, **options)

    def search_stored(
        self,
        filepath: str,
        *,
        limit: int | None = None,
        max_distance: float | None = None,
        min_score: float | None = None,
        where: Filter | None = None,
    ) -> list[Match]:
        """Stored images like the one stored under ``filepath`` (itself included)."""
        options = self._search_options(limit, max_distance, min_score, where)
        record = self.get(filepath)
        return self.backend.search(record.signature[None], **options)

    def _search_options(
        self,
        limit: int | None,
        max_distance: float | None,
        min_score: float | None,
        where: Filter | None,
    ) -> dict[str, Any]:
        cutoff = self.settings.max_distance if max_distance is None else max_distance
        if not 0.0 <= cutoff <= 1.0:
            raise InvalidRequest("max_distance must be between 0 and 1")
        if min_score is not None:
            if not 0.0 <= min_score <= 100.0:
                raise InvalidRequest("min_score must be between 0 and 100")
            # "At least min_score": nudge the strict cutoff past rounding of score ↔ distance
            # (distinct distances differ by far more than 1e-12).
            cutoff = min(cutoff, 1.0 - min_score / 100.0 + 1e-12)
        count = self.settings.search_limit if limit is None else limit
        if count < 1:
            raise InvalidRequest("limit must be a positive integer")
        return {"limit": count, "max_distance": cutoff, "where": check_filter(where)}

    def compare(
        self, first: ImageSource, second: ImageSource, *, all_orientations: bool = False
    ) -> Comparison:
        """How alike two images are; with ``all_orientations`` the second may be turned."""
        a = signature.signature(self.pixels(first))
        pixels = self.pixels(second)
        if not all_orientations:
            return Comparison(signature.distance(a, signature.signature(pixels)))
        d = signature.distances(signature.orientations(pixels), a)
        best = int(np.argmin(d))
        return Comparison(float(d[best]), signature.ORIENTATIONS[best])

    def get(self, filepath: str) -> Record:
        record = self.backend.get(check_filepath(filepath))
        if record is None:
            raise NotFound(f"no image is stored under {filepath!r}")
        return record

    def count(self) -> int:
        return self.backend.count()

    def stats(self) -> dict[str, Any]:
        """What the store holds and what its search state costs in this process."""
        return self.backend.stats()

    def migrate(
        self, target: str, *, swap: bool = False, progress: Callable[[int], object] | None = None
    ) -> dict[str, Any]:
        """Copy an Elasticsearch index written by Match or image-match into lookalike's
        layout (see ``ElasticsearchBackend.migrate``)."""
        migrate = getattr(self.backend, "migrate", None)
        if migrate is None:
            raise ConfigError("migrate works on an Elasticsearch store: set ELASTICSEARCH_URL")
        facts: dict[str, Any] = migrate(target, swap=swap, progress=progress)
        return facts

    def reindex(self) -> dict[str, Any]:
        """Rebuild the store's search index from its records now; returns ``stats()``."""
        return self.backend.reindex()

    def list(self, offset: int = 0, limit: int = 20) -> list[str]:
        """Stored filepaths in insertion order."""
        if offset < 0:
            raise InvalidRequest("offset must be 0 or more")
        if limit < 0:
            raise InvalidRequest("limit must be 0 or more")
        return self.backend.list(offset, limit)


# -- helpers (module level so that worker processes can run them) ---------------------------


def _pixels(source: ImageSource, settings: Settings) -> npt.NDArray[np.uint8]:
    limits: dict[str, Any] = {
        "max_bytes": settings.max_image_bytes,
        "max_pixels": settings.max_image_pixels,
        "fast": settings.fast_decode,
    }
    if isinstance(source, bytes):
        return images.decode(source, **limits)
    return images.read(source, **limits)


def _sign_files(settings: Settings, chunk: list[tuple[str, str]]) -> list[tuple[str, bytes | str]]:
    """Signatures (as bytes) or error messages for a chunk of ``(filepath, path)`` files."""
    out: list[tuple[str, bytes | str]] = []
    for name, path in chunk:
        try:
            out.append((name, signature.signature(_pixels(path, settings)).tobytes()))
        except LookalikeError as error:
            out.append((name, str(error)))
    return out


def _chunks(items: Iterable[tuple[str, str]], size: int = 32) -> Iterator[list[tuple[str, str]]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _parallel_map(function: Callable[[T], R], items: Iterator[T], workers: int) -> Iterator[R]:
    """``map`` over worker processes, in order, with a bounded number of items in flight."""
    if workers <= 1:
        yield from map(function, items)
        return
    # Spawned, not forked: workers start clean (no inherited threads or connections) and
    # read the environment the caller prepared for them.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        in_flight: deque[Future[R]] = deque()
        for item in items:
            in_flight.append(pool.submit(function, item))
            if len(in_flight) >= workers * 4:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
