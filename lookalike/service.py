"""Lookalike: the one place that turns images into signatures and asks the store.

Built once from Settings and handed to the HTTP API and the CLI, which only translate
their inputs and outputs. Images arrive as bytes or as a local path; everything here
raises errors from ``errors`` and nothing else.

Searches come in three methods (``records.METHODS``): ``signature`` compares Goldberg
signatures (copies, edits, rotations); ``embedding`` compares CNN embeddings when the
collection has them (``Settings.embeddings``: look-alikes and crops); ``hybrid`` runs
both and puts each image at the better of its two distances, an embedding distance
first scaled onto the signature's so that the two default cutoffs coincide; a signature
match the signature is unsure of is dropped when the embeddings disagree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt

from . import embeddings, images, signature
from .backends import Backend, one_process_only, open_backend
from .config import Settings
from .errors import (
    ConfigError,
    InvalidImage,
    InvalidRequest,
    LookalikeError,
    NotFound,
    Overloaded,
)
from .fetch import AddressPolicy
from .fetch import fetch as fetch_url
from .records import (
    METHODS,
    Comparison,
    FileResult,
    Filter,
    Footprint,
    Match,
    Metadata,
    Record,
    check_filepath,
    check_filter,
    check_metadata,
    servable,
)
from .vectors import as_stored, cosine_distances

__all__ = [
    "SIGNATURE_SURE",
    "ImageSource",
    "Lookalike",
    "one_process_store",
]

T = TypeVar("T")
R = TypeVar("R")

ImageSource = bytes | str | os.PathLike[str]
"""Image bytes, or the path of a local image file."""


def one_process_store(settings: Settings) -> bool:
    """Whether the configured store can be open in one process at a time (Milvus Lite):
    a server must then run one worker."""
    return one_process_only(settings.store)


class Lookalike:
    """Add, search, compare and manage images in one store."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None) -> None:
        self.settings = settings or Settings()
        self._policy = AddressPolicy.from_settings(self.settings)  # before opening anything
        if self.settings.embeddings:  # onnxruntime loaded after usearch crashes the process
            embeddings.load_runtime()
        if backend is None:
            backend = open_backend(self.settings.store, self.settings)
        self.backend = backend
        self._decode_slots = threading.BoundedSemaphore(self.settings.max_decodes)

    @contextlib.contextmanager
    def _decoding(self) -> Iterator[None]:
        """One of the ``max_decodes`` slots of this process for decoding and signing an
        image, which bounds the memory they take at once; Overloaded if none frees up
        within ``decode_wait`` seconds."""
        if not self._decode_slots.acquire(timeout=self.settings.decode_wait):
            raise Overloaded(
                f"busy: {self.settings.max_decodes} images are being decoded; try again shortly"
            )
        try:
            yield
        finally:
            self._decode_slots.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    # -- images ---------------------------------------------------------------------------

    def pixels(self, source: ImageSource) -> npt.NDArray[np.uint8]:
        """Decode an image within the configured limits: H×W×3 RGB (reduced in scale if
        the fast-decode setting is on)."""
        return _decoded(source, self.settings)[0]

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
        with self._decoding():
            return signature.signature(*_decoded(source, self.settings))

    def embed(self, pixels: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """CNN embeddings (n, 1280) of RGB images, the model loaded on first use."""
        return _embed(self.settings, pixels)

    # -- writes ---------------------------------------------------------------------------

    def add(self, filepath: str, source: ImageSource, metadata: Metadata | None = None) -> Record:
        """Store an image under ``filepath``, replacing any image stored under it."""
        # A bad request fails before it costs a decode (the store checks the record again:
        # it may be used without the service).
        name, meta = check_filepath(filepath, new=True), check_metadata(metadata)
        with self._decoding():
            pixels, footprint = _decoded(source, self.settings)
            embedding = self.embed([pixels])[0] if self.settings.embeddings else None
            sig = signature.signature(pixels, footprint)
            del pixels
        if embedding is None and not sig.any():
            raise InvalidImage(BLANK)
        record = Record(name, sig, meta, embedding=embedding)
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
        settings = self.settings
        if count > 1 and settings.embedding_threads == 0:  # a process per core already
            settings = settings.replace(embedding_threads=1)
        sign = partial(_sign_files, settings)  # pickled once per chunk, not per file
        pending: list[_Signed] = []
        try:
            for chunk in _parallel_map(sign, chunks, count):
                pending.extend(chunk)
                if len(pending) >= batch:
                    yield from self._store(pending)
                    pending = []
        except BaseException as error:  # what was signed is stored, however the run ends
            stored = list(self._store(pending))
            if not isinstance(error, GeneratorExit):
                yield from stored
            raise
        yield from self._store(pending)

    def _store(self, signed: list[_Signed]) -> Iterator[FileResult]:
        outcome: list[_Signed] = []
        for name, sig, vector in signed:
            try:
                outcome.append((check_filepath(name, new=True), sig, vector))
            except InvalidRequest as error:  # e.g. a file name that is not valid Unicode
                outcome.append((name, str(error), None))
            else:
                if isinstance(sig, bytes) and vector is None and not any(sig):
                    outcome[-1] = (name, BLANK, None)
        good = [
            Record(name, np.frombuffer(sig, dtype=np.int8), embedding=vector)
            for name, sig, vector in outcome
            if isinstance(sig, bytes)
        ]
        if good:
            self.backend.add_many(good)
        for name, sig, _ in outcome:
            yield FileResult(name, None if isinstance(sig, bytes) else sig)

    def delete(self, filepath: str) -> None:
        """Remove the image stored under ``filepath``; NotFound if there is none."""
        if not self.backend.delete(filepath):
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
        method: str | None = None,
        collapse: str | None = None,
    ) -> list[Match]:
        """Stored images like this one, best first.

        With ``all_orientations`` (the default setting) the query is also tried rotated by
        90°, 180°, 270° and mirrored — all 8 in one pass. ``method``: see the module's
        docstring (default: the setting). ``min_score`` (0–100) and ``max_distance`` are
        two spellings of one cutoff, on the method's scale; the stricter wins. ``collapse``
        names a metadata key: at most one result (the best) per value of it.
        """
        method = self._method(method)
        options = self._search_options(method, limit, max_distance, min_score, where, collapse)
        rotate = self.settings.all_orientations if all_orientations is None else all_orientations
        turns = range(len(signature.ORIENTATIONS) if rotate else 1)
        signatures = embedded = None
        with self._decoding():  # after the cheap checks
            pixels, footprint = _decoded(source, self.settings)
            if method != "embedding":
                sign = signature.orientations if rotate else signature.signature
                signatures = sign(pixels, footprint)
                if method == "signature" and not signatures.any():
                    raise InvalidImage(BLANK)
            if method != "signature":
                embedded = self.embed([signature.turn(pixels, i) for i in turns])
            del pixels
        return self._search(method, signatures, embedded, options)

    def search_stored(
        self,
        filepath: str,
        *,
        limit: int | None = None,
        max_distance: float | None = None,
        min_score: float | None = None,
        where: Filter | None = None,
        method: str | None = None,
        collapse: str | None = None,
    ) -> list[Match]:
        """Stored images like the one stored under ``filepath`` (itself included)."""
        method = self._method(method)
        options = self._search_options(method, limit, max_distance, min_score, where, collapse)
        record = self.get(filepath)
        if method != "signature" and record.embedding is None:
            raise InvalidRequest(f"{filepath!r} was stored without an embedding")
        embedded = None if record.embedding is None else record.embedding[None]
        return self._search(method, record.signature, embedded, options)

    def _method(self, method: str | None) -> str:
        method = self.settings.search_method if method is None else method
        if method not in METHODS:
            raise InvalidRequest(f"method must be one of {', '.join(METHODS)}")
        if method != "signature" and not self.settings.embeddings:
            raise InvalidRequest(
                f"method {method} needs embeddings: start lookalike with LOOKALIKE_EMBEDDINGS=true"
            )
        return method

    def _search(
        self,
        method: str,
        signatures: npt.NDArray[np.int8] | None,
        embedded: npt.NDArray[np.float32] | None,
        options: dict[str, Any],
    ) -> list[Match]:
        limit, where, collapse = options["limit"], options["where"], options["collapse"]
        if collapse is not None:  # room for the results that collapsing will drop
            limit = max(limit, min(limit * _COLLAPSE_FETCH, _COLLAPSE_MOST))
        found: list[Match] = []
        if signatures is not None and method != "embedding":
            cutoff = options["signature_cutoff"]
            queries = np.atleast_2d(signatures)
            found += self.backend.search(queries, limit=limit, max_distance=cutoff, where=where)
        if embedded is not None and method != "signature":
            cutoff = options["embedding_cutoff"]
            found += self.backend.search_embedding(
                embedded, limit=limit, max_distance=cutoff, where=where
            )
        ranked: Iterable[Match] = found
        if method == "hybrid" and embedded is not None:
            by_embedding = {m.filepath for m in found if m.method == "embedding"}
            ranked = (
                match
                for match in _fuse(found, self._hybrid_scale)
                if match.filepath in by_embedding or not self._vetoed(match, embedded)
            )
        if collapse is not None:
            ranked = _collapse(ranked, collapse)
        return [servable(match) for match in islice(ranked, options["limit"])]

    @property
    def _hybrid_scale(self) -> float:
        """What an embedding distance is multiplied by to sit on the signature's scale."""
        return self.settings.max_distance / self.settings.embedding_max_distance

    def _vetoed(self, match: Match, embedded: npt.NDArray[np.float32]) -> bool:
        """Whether hybrid drops this match found by the signature alone: one the signature
        is unsure of (distance from ``SIGNATURE_SURE`` on) when the embeddings call the two
        pictures unrelated (distance at least twice the embedding cutoff): smooth,
        featureless images have close signatures without looking alike. A record without
        an embedding is kept. Asked lazily, best match first, until enough are kept."""
        if match.method != "signature" or match.distance < SIGNATURE_SURE:
            return False
        record = self.backend.get(match.filepath)
        if record is None or record.embedding is None:
            return False
        distance, _ = cosine_distances(embedded, record.embedding[None])
        return bool(distance[0] >= 2 * self.settings.embedding_max_distance)

    def _search_options(
        self,
        method: str,
        limit: int | None,
        max_distance: float | None,
        min_score: float | None,
        where: Filter | None,
        collapse: str | None = None,
    ) -> dict[str, Any]:
        """Limit, filter, collapse key and a cutoff per method. In hybrid, a cutoff given is on the
        signature's scale, and the embedding's follows it."""
        widest = 2.0 if method == "embedding" else 1.0
        default = self.settings.embedding_max_distance if method == "embedding" else None
        cutoff = default or self.settings.max_distance
        if max_distance is not None:
            if not 0.0 <= max_distance <= widest:
                raise InvalidRequest(f"max_distance must be between 0 and {widest:g}")
            cutoff = max_distance
        if min_score is not None:
            if not 0.0 <= min_score <= 100.0:
                raise InvalidRequest("min_score must be between 0 and 100")
            # "At least min_score": nudge the strict cutoff past rounding of score ↔ distance
            # (distinct distances differ by far more than 1e-12).
            cutoff = min(cutoff, 1.0 - min_score / 100.0 + 1e-12)
        count = self.settings.search_limit if limit is None else limit
        if count < 1:
            raise InvalidRequest("limit must be a positive integer")
        scale = self.settings.embedding_max_distance / self.settings.max_distance
        if collapse is not None and (not isinstance(collapse, str) or not collapse):
            raise InvalidRequest("collapse must name a metadata key")
        return {
            "limit": count,
            "where": check_filter(where),  # before decoding the query
            "collapse": collapse,
            "signature_cutoff": cutoff,
            "embedding_cutoff": cutoff if method == "embedding" else cutoff * scale,
        }

    def compare(
        self,
        first: ImageSource,
        second: ImageSource,
        *,
        all_orientations: bool = False,
        method: str = "signature",
    ) -> Comparison:
        """How alike two images are; with ``all_orientations`` the second may be turned.
        ``method`` as for ``search``; with embeddings enabled, both methods' scores are
        reported whatever the method."""
        method = self._method(method)
        with self._decoding():
            return self._compare(first, second, all_orientations, method)

    def _compare(
        self, first: ImageSource, second: ImageSource, all_orientations: bool, method: str
    ) -> Comparison:
        (one, one_footprint), (two, two_footprint) = (
            _decoded(first, self.settings),
            _decoded(second, self.settings),
        )
        a = signature.signature(one, one_footprint)
        sign = signature.orientations if all_orientations else signature.signature
        rows = np.atleast_2d(sign(two, two_footprint))
        found = []
        if a.any() and rows.any():
            d = signature.distances(rows, a)
            turn = int(np.argmin(d))
            found.append(Comparison(float(d[turn]), signature.ORIENTATIONS[turn]))
        elif method == "signature":  # blank signatures are at distance 1, even from themselves
            raise InvalidImage(BLANK)
        if self.settings.embeddings:
            turns = range(len(signature.ORIENTATIONS) if all_orientations else 1)
            vectors = self.embed([one, *(signature.turn(two, i) for i in turns)])
            cosine, best = cosine_distances(vectors[1:], vectors[:1])
            orientation = signature.ORIENTATIONS[int(best[0])]
            found.append(Comparison(float(cosine[0]), orientation, "embedding"))
        scores = {c.method: c.score for c in found}
        if method == "hybrid":
            scale = self._hybrid_scale
            by_signature = [c if c.method == "signature" else _scaled(c, scale) for c in found]
            chosen = min(by_signature, key=lambda c: c.distance)
        else:
            chosen = next(c for c in found if c.method == method)
        return dataclasses.replace(chosen, scores=scores if len(scores) > 1 else None)

    def get(self, filepath: str) -> Record:
        record = self.backend.get(filepath)
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

_Signed = tuple[str, bytes | str, npt.NDArray[np.float32] | None]
"""A file's name, and its signature as bytes (or an error message), and its embedding."""


def _fuse(found: list[Match], scale: float) -> list[Match]:
    """Hybrid results: one per image, at the better of its distances, an embedding
    distance multiplied by ``scale`` (signature cutoff / embedding cutoff) first."""
    best: dict[str, Match] = {}
    for match in found:
        if match.method == "embedding":
            match = dataclasses.replace(match, distance=_rescaled(match.distance, scale))
        kept = best.get(match.filepath)
        if kept is None or (match.distance, match.method) < (kept.distance, kept.method):
            best[match.filepath] = match
    return sorted(best.values(), key=lambda m: (m.distance, m.filepath))


BLANK = (
    "the image has no detail for the signature (one colour, or a few pixels): it could never"
    " be found by it; with LOOKALIKE_EMBEDDINGS=true such images are stored and found by"
    " their embedding"
)
SIGNATURE_SURE = 0.40
"""A signature distance below which the same picture is very likely (image-match's 0.40)."""

_COLLAPSE_FETCH = 10  # a collapsed search looks at 10 × limit matches ...
_COLLAPSE_MOST = 10_000  # ... or at most this many


def _collapse(found: Iterable[Match], key: str) -> Iterator[Match]:
    """The first (best) match of each value of metadata ``key``; matches without the key
    stand for themselves."""
    seen: set[str] = set()
    for match in found:
        metadata = match.metadata or {}
        if key in metadata:
            value = json.dumps(metadata[key], sort_keys=True)  # lists and objects too
            if value in seen:
                continue
            seen.add(value)
        yield match


def _scaled(comparison: Comparison, scale: float) -> Comparison:
    return dataclasses.replace(comparison, distance=_rescaled(comparison.distance, scale))


def _rescaled(distance: float, scale: float) -> float:
    """An embedding distance on the signature's scale (at most 1, as distances are)."""
    return min(distance * scale, 1.0)


_encoders: dict[tuple[str, int], embeddings.Encoder] = {}  # one model per process
_encoders_lock = threading.Lock()


def _embed(settings: Settings, pixels: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    """Embeddings as stores keep them, by this process's model (loaded on first use)."""
    key = (settings.model_cache, settings.embedding_threads)
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = embeddings.Encoder.load(
                settings.model_cache or None, threads=settings.embedding_threads
            )
    return as_stored(_encoders[key].embed(pixels))


def _decoded(
    source: ImageSource, settings: Settings
) -> tuple[npt.NDArray[np.uint8], Footprint | None]:
    """RGB pixels within the limits, and their footprint if fast decoding reduced them."""
    limits: dict[str, Any] = {
        "max_bytes": settings.max_image_bytes,
        "max_pixels": settings.max_image_pixels,
        "reduce": settings.fast_decode,
    }
    if isinstance(source, bytes):
        return images.decode_reduced(source, **limits)
    return images.read_reduced(source, **limits)


def _sign_files(settings: Settings, chunk: list[tuple[str, str]]) -> list[_Signed]:
    """Signatures (as bytes) or error messages for a chunk of ``(filepath, path)`` files,
    and their embeddings when the collection has them."""
    out: list[_Signed] = []
    decoded: list[tuple[int, npt.NDArray[np.uint8]]] = []
    for name, path in chunk:
        try:
            pixels, footprint = _decoded(path, settings)
            out.append((name, signature.signature(pixels, footprint).tobytes(), None))
            decoded.append((len(out) - 1, pixels))
        except LookalikeError as error:
            out.append((name, str(error), None))
    if settings.embeddings and decoded:
        vectors = _embed(settings, [p for _, p in decoded])
        for (i, _), vector in zip(decoded, vectors, strict=True):
            out[i] = (out[i][0], out[i][1], vector)
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
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        in_flight: deque[Future[R]] = deque()
        try:
            for item in items:
                in_flight.append(pool.submit(function, item))
                if len(in_flight) >= workers * 4:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        except BrokenProcessPool:
            # A worker was killed (the OOM killer, a signal): hand on every result that
            # was finished, in order, then say so; the caller stores what it was given.
            while in_flight and in_flight[0].done() and in_flight[0].exception() is None:
                yield in_flight.popleft().result()
            raise LookalikeError(
                "a decoding worker process died (killed, or out of memory?); the images"
                " signed before it died were stored"
            ) from None


def _exit_with_parent(parent: int) -> None:
    """In each worker: exit as soon as the process that started it is gone (killed, even
    by SIGKILL), rather than live on holding its terminal and pipes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
