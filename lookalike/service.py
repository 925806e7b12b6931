"""Lookalike: the one place that turns images into signatures and asks the store.

Built once from Settings and handed to the HTTP API and the CLI, which only translate
their inputs and outputs. Images (bytes or a local path) flow one way: decode (``ingest``)
→ sign (``signature``) and embed (``embeddings``) → store (``backends``); what a search
request means and how its results are fused is ``search``. It raises ``errors`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import IO, Any, NamedTuple, Self, Unpack

import numpy as np
import numpy.typing as npt

from . import embeddings, export, ingest, metrics, orientations, selfjoin, signature, verify
from .backends import Backend, open_backend
from .config import Settings
from .duplicates import KEEP_RULES, Group, grouped
from .errors import (
    ConfigError,
    FetchError,
    ImageTooLarge,
    InvalidImage,
    InvalidRequest,
    LookalikeError,
    NotFound,
    Overloaded,
)
from .fetch import AddressPolicy
from .fetch import fetch as fetch_url
from .ingest import BLANK, ImageSource
from .jobs import Jobs, Progress
from .records import (
    BatchItem,
    Comparison,
    FileResult,
    Match,
    Metadata,
    Preview,
    Record,
    check_filepath,
    check_metadata,
)
from .search import (
    SearchOptions,
    SearchParameters,
    chosen_comparison,
    hybrid_scale,
    method_of,
    results,
    sure_distance,
    sure_embedding_distance,
    with_verdicts,
)
from .vectors import cosine_distances

__all__ = ["ImageSource", "Lookalike"]

_FILE_WINDOW = 50_000  # files checked against the store, then signed, at a time
_BATCH_CHUNK = 64  # images of a batch stored in one write
_BATCH_THREADS = 4  # of a batch fetched at once (as many decoded as decode slots allow)
_WRITTEN = ("added", "replaced")
_EXPORT_PAGE = 1000  # records read, or written, at a time by export and import


def _same_import(stored: Record | None, record: Record) -> bool:
    """Whether ``stored`` is ``record`` as an earlier run of the same import wrote it."""
    return (
        stored is not None
        and record.updated is not None
        and stored.updated == record.updated
        and np.array_equal(stored.signature, record.signature)
    )


def _cropped(pixels: npt.NDArray[np.uint8], box: tuple[float, ...]) -> npt.NDArray[np.uint8]:
    """The part of an image inside a box of relative coordinates [x0, y0, x1, y1]."""
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = box
    return pixels[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)]


class _Pending(NamedTuple):
    """An image to sign, then store under ``name``: "added" or "replaced"."""

    name: str
    source: ImageSource
    metadata: Metadata | None
    status: str


def _signed_record(pending: _Pending, signed: ingest.Signed) -> tuple[Record | None, str]:
    """The record of a signed image and what storing it does, or None and why not."""
    made = ingest.record_of(signed, pending.metadata)
    return (made, pending.status) if isinstance(made, Record) else (None, made)


def _turned(match: Match, turns: Sequence[int]) -> Match:
    """A store's embedding match, whose orientation names its query row, named by the
    orientation that row was embedded in."""
    row = orientations.ORIENTATIONS.index(match.orientation)
    return dataclasses.replace(match, orientation=orientations.ORIENTATIONS[turns[row]])


def _once(item: BatchItem, seen: set[str]) -> BatchItem:
    """The item, or a failed one if its filepath came earlier in the batch."""
    if item.error is None and item.filepath is not None:
        if item.filepath in seen:
            return dataclasses.replace(item, error="this filepath is given earlier in the batch")
        seen.add(item.filepath)
    return item


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
        signers = self.settings.ingest_workers or os.cpu_count() or 1
        self._signer = ingest.Signer(self.settings, signers) if signers > 1 else None

    @contextlib.contextmanager
    def _decoding(self, patient: bool = False) -> Iterator[None]:
        """One of this process's ``max_decodes`` slots for decoding and signing an image
        (they bound the memory taken at once); Overloaded after ``decode_wait`` seconds,
        unless ``patient``."""
        wait = None if patient else self.settings.decode_wait
        if not self._decode_slots.acquire(timeout=wait):
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
        self.stop_workers()
        self.backend.close()

    def stop_workers(self) -> None:
        """Stop the processes that sign batches (a later batch starts new ones)."""
        if self._signer is not None:
            self._signer.close()

    # -- images ---------------------------------------------------------------------------

    def pixels(self, source: ImageSource) -> npt.NDArray[np.uint8]:
        """An image decoded within the limits: H×W×3 RGB (reduced if ``fast_decode``)."""
        return ingest.decoded(source, self.settings)[0]

    def fetch(self, url: str) -> bytes:
        """Download an image URL within the configured limits and address policy."""
        try:
            return fetch_url(
                url,
                max_bytes=self.settings.max_image_bytes,
                policy=self._policy,
                timeout=self.settings.fetch_timeout,
                connect_timeout=self.settings.fetch_connect_timeout,
            )
        except (FetchError, ImageTooLarge) as error:
            metrics.fetch_failed(error)
            raise

    def signature(self, source: ImageSource) -> npt.NDArray[np.int8]:
        """The image-match signature of an image (648 values in -2..2)."""
        with self._decoding():
            return signature.signature(*ingest.decoded(source, self.settings))

    def embed(self, pixels: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """CNN embeddings (n, 1280) of RGB images, the model loaded on first use."""
        return ingest.embedded(self.settings, pixels)

    # -- writes ---------------------------------------------------------------------------

    def add(self, filepath: str, source: ImageSource, metadata: Metadata | None = None) -> Record:
        """Store an image under ``filepath``, replacing any image stored under it."""
        return self.add_reported(filepath, source, metadata)[0]

    def add_reported(
        self, filepath: str, source: ImageSource, metadata: Metadata | None = None
    ) -> tuple[Record, str]:
        """``add``, and what it did: "added", "replaced", or "unchanged" when the record
        under ``filepath`` was made from the same bytes, with the same metadata and all
        this collection keeps (then nothing is decoded or written)."""
        record, status = self._prepared(filepath, source, metadata)
        if status != "unchanged":
            self.backend.add(record)
            metrics.IMAGES_ADDED.labels("add").inc()
        return record, status

    def _prepared(
        self,
        filepath: str,
        source: ImageSource,
        metadata: Metadata | None,
    ) -> tuple[Record, str]:
        """The record to store under ``filepath`` and what storing it does (added,
        replaced), or the stored record, "unchanged" (``_same_source``)."""
        pending = self._pending(filepath, source, metadata)
        if isinstance(pending, Record):
            return pending, "unchanged"
        return self._made_record(pending.name, source, pending.metadata), pending.status

    def _pending(
        self, filepath: str, source: ImageSource, metadata: Metadata | None
    ) -> Record | _Pending:
        """The stored record if it was made from this very source, else what is left to
        do: sign the source, then store it (added, or replacing a record)."""
        # A bad request fails before it costs a decode (the store checks the record again:
        # it may be used without the service).
        name, meta = check_filepath(filepath, new=True), check_metadata(metadata)
        stored = self.backend.get(name)
        if stored is not None and self._same_source(stored, source, meta):
            return stored
        return _Pending(name, source, meta, "added" if stored is None else "replaced")

    def _made_record(self, name: str, source: ImageSource, metadata: Metadata | None) -> Record:
        """The record of an image: decoded, signed, embedded, previewed."""
        with self._decoding():
            pixels, footprint = ingest.decoded(source, self.settings)
            embedding = self.embed([pixels])[0] if self.settings.embeddings else None
            sig = signature.signature(pixels, footprint)
            if embedding is None and not sig.any():
                raise InvalidImage(BLANK)
            preview = ingest.preview(self.settings, source, pixels, footprint)
            del pixels
        return Record(name, sig, metadata, embedding=embedding, preview=preview)

    def add_batch(
        self, items: Sequence[BatchItem], progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        """Add each item as ``add_reported`` would, ``_BATCH_CHUNK`` at a time: URLs
        fetched and images decoded by a few threads at once, each chunk stored in one
        write. Returns one ``{"filepath", "status"}`` per item, in order: status added,
        replaced, unchanged, or failed with its ``error`` (an item that fails, fails
        alone; so does a filepath given again later in the batch)."""
        seen: set[str] = set()
        results: list[dict[str, Any]] = []
        with ThreadPoolExecutor(_BATCH_THREADS, thread_name_prefix="batch") as threads:
            for start in range(0, len(items), _BATCH_CHUNK):
                chunk = [_once(item, seen) for item in items[start : start + _BATCH_CHUNK]]
                made = self._batch_records(chunk, threads)
                written = self.backend.add_many(
                    r for r, done in made if r is not None and done in _WRITTEN
                )
                metrics.IMAGES_ADDED.labels("batch").inc(written)
                for item, (record, status) in zip(chunk, made, strict=True):
                    answer: dict[str, Any] = {"filepath": item.filepath}
                    if record is None:
                        answer |= {"status": "failed", "error": status}
                    else:
                        answer |= {"filepath": record.filepath, "status": status}
                    results.append(answer)
                if progress is not None:
                    progress(len(results), len(items))
        return results

    def _batch_records(
        self, chunk: list[BatchItem], threads: ThreadPoolExecutor
    ) -> list[tuple[Record | None, str]]:
        """Each item's record and what storing it does, or None and why it fails: URLs
        fetched and stored records compared by ``threads``, the images left to sign signed
        by the signing processes (by ``threads`` where there are none)."""
        made = list(threads.map(self._batch_item, chunk))
        todo = {i: one for i, one in enumerate(made) if isinstance(one, _Pending)}
        sources = [(one.name, one.source) for one in todo.values()]
        try:
            if self._signer is not None and len(sources) > 1:
                signed = self._signer.sign(sources)
            else:
                signed = list(threads.map(self._signed_here, sources))
        except LookalikeError as error:  # a signing process died: these fail, alone
            signed = [ingest.Signed(name, error=str(error)) for name, _ in sources]
        done = {i: _signed_record(one, s) for (i, one), s in zip(todo.items(), signed, strict=True)}
        return [done[i] if isinstance(one, _Pending) else one for i, one in enumerate(made)]

    def _batch_item(self, item: BatchItem) -> tuple[Record | None, str] | _Pending:
        """An item's stored record if unchanged, what is left to do, or why it fails."""
        try:
            if item.error is not None:
                raise InvalidRequest(item.error)
            filepath = check_filepath(item.filepath or "", new=True)  # before a fetch
            check_metadata(item.metadata)
            source = item.content if item.content is not None else self.fetch(item.url or "")
            pending = self._pending(filepath, source, item.metadata)
        except LookalikeError as error:
            return None, str(error)
        return (pending, "unchanged") if isinstance(pending, Record) else pending

    def _signed_here(self, item: tuple[str, ImageSource]) -> ingest.Signed:
        """One image signed in this process, in a decode slot (waiting as long as it
        takes, as a background job may)."""
        with self._decoding(patient=True):
            return ingest.sign_images(self.settings, [item])[0]

    def start_add_batch(self, items: Sequence[BatchItem]) -> str:
        """``add_batch`` as a background job (``jobs``); its id."""
        items = list(items)
        return self.jobs.start(
            "add_batch",
            lambda progress: (self.add_batch(items, progress), {}),
            {"items": len(items)},
        )

    def export(self, out: IO[str], progress: Callable[[int], object] | None = None) -> int:
        """Write the whole collection to ``out`` in the export format (``export``), oldest
        first, then the distinct marks; returns how many records. Records added while it
        runs may be left out (for a consistent copy of a SQLite store: ``backup``)."""
        out.write(export.header(self.backend.count()) + "\n")
        written = offset = 0
        while page := self.backend.list(offset, _EXPORT_PAGE):
            offset += len(page)
            previews, records = self.backend.previews(page), self.backend.get_many(page)
            for path in page:
                record = records.get(path)
                if record is not None:  # unless deleted since it was listed
                    out.write(export.record_line(record, previews.get(path)) + "\n")
                    written += 1
            if progress is not None:
                progress(len(page))
        for mark in self.backend.distinct():
            out.write(export.mark_line(mark) + "\n")
        return written

    def import_(
        self, lines: Iterable[str], progress: Callable[[int], object] | None = None
    ) -> dict[str, int]:
        """Load an export into the store, ``_EXPORT_PAGE`` records per write, keeping every
        field as exported (times included). A record already stored as exported (the same
        update time and signature) is skipped, so an interrupted import run again resumes;
        InvalidRequest naming the line of a malformed one (the lines before it are
        stored). Returns the records imported and skipped, and the marks."""
        counts = {"imported": 0, "skipped": 0, "marks": 0, "marks_skipped": 0}
        batch: list[Record] = []
        marks: list[export.Mark] = []

        def flush() -> None:
            stored = self.backend.get_many([r.filepath for r in batch])
            fresh = [r for r in batch if not _same_import(stored.get(r.filepath), r)]
            self.backend.add_many(fresh)
            metrics.IMAGES_ADDED.labels("import").inc(len(fresh))
            counts["imported"] += len(fresh)
            counts["skipped"] += len(batch) - len(fresh)
            if progress is not None:
                progress(len(batch))
            batch.clear()

        try:
            for _, item in export.read(lines):
                if isinstance(item, Record):
                    batch.append(item)
                    if len(batch) >= _EXPORT_PAGE:
                        flush()
                else:
                    marks.append(item)
        except InvalidRequest:
            flush()  # what was read before a malformed line is stored
            raise
        flush()
        for first, second in marks:
            try:
                self.backend.mark_distinct(first, second)
                counts["marks"] += 1
            except (ConfigError, NotFound):  # a store without marks, or a record left out
                counts["marks_skipped"] += 1
        return counts

    def _same_source(self, stored: Record, source: ImageSource, metadata: Metadata | None) -> bool:
        if stored.metadata != metadata or (self.settings.embeddings and stored.embedding is None):
            return False
        kept = self.backend.previews([stored.filepath], thumbnails=False).get(stored.filepath)
        if kept is None or kept.sha256 is None:
            return False
        if isinstance(source, bytes):
            return len(source) == kept.file_bytes and ingest.sha256(source) == kept.sha256
        try:
            return ingest.unchanged(kept, source)
        except OSError:
            return False  # the decode says why it cannot be read

    def add_many(self, records: Iterable[Record]) -> int:
        """Store precomputed records in batches; returns how many were stored."""
        return self.backend.add_many(records)

    def add_files(
        self,
        files: Iterable[tuple[str, Path]],
        *,
        workers: int | None = None,
        batch: int = 1000,
        force: bool = False,
    ) -> Iterator[FileResult]:
        """Sign ``(filepath, path)`` pairs in parallel processes and store them in batches.

        Yields one result per file, window by window of ``_FILE_WINDOW`` files: first, as
        they are found, the files stored before with the same content (the same length
        and modification time, or else the same SHA-256), which are not read again,
        reported ``unchanged`` (unless ``force``); then the others in input order, after
        their batch is stored. A file that cannot be read or decoded is reported and
        skipped; the others are stored.
        """
        count = workers or self.settings.ingest_workers or os.cpu_count() or 1
        named = ((name, os.fspath(path)) for name, path in files)
        # in windows, so that a re-run reports its unchanged files as it finds them and a
        # first run holds no more than a window of paths (a window costs a process pool)
        while window := list(islice(named, _FILE_WINDOW)):
            paths: list[tuple[str, str]] = []
            for item in window if force else self._changed_files(window):
                if isinstance(item, FileResult):
                    yield item
                else:
                    paths.append(item)
            if paths:
                yield from self._signed_and_stored(paths, count, batch)

    def _signed_and_stored(
        self, paths: list[tuple[str, str]], workers: int, batch: int
    ) -> Iterator[FileResult]:
        pending: list[ingest.Signed] = []
        try:
            for chunk in ingest.signed(self.settings, paths, workers):
                pending.extend(chunk)
                if len(pending) >= batch:
                    yield from self._store(pending)
                    pending = []
        except BaseException as error:  # what was signed is stored, however the run ends
            stored = self._store(pending)
            if not isinstance(error, GeneratorExit):
                yield from stored
            raise
        yield from self._store(pending)

    def _changed_files(
        self, files: list[tuple[str, str]]
    ) -> Iterator[tuple[str, str] | FileResult]:
        """The files to sign, as ``(filepath, path)``, and an ``unchanged`` result for
        each of the others. The store is asked about a thousand files at once."""
        for start in range(0, len(files), 1000):
            chunk = files[start : start + 1000]
            names = [name for name, _ in chunk if _valid_filepath(name)]
            stored = self.backend.previews(names, thumbnails=False) if names else {}
            same = [(name, path) for name, path in chunk if _same_file(stored.get(name), path)]
            if same and self.settings.embeddings:  # and the records have all that is kept
                records = self.backend.get_many([name for name, _ in same])
                same = [
                    (n, p) for n, p in same if n in records and records[n].embedding is not None
                ]
            unchanged = {name for name, _ in same}
            for name, path in chunk:
                if name in unchanged:
                    yield FileResult(name, unchanged=True)
                else:
                    yield name, path

    def _store(self, batch: list[ingest.Signed]) -> list[FileResult]:
        records, outcomes = ingest.records_of(batch)
        if records:
            self.backend.add_many(records)
            metrics.IMAGES_ADDED.labels("files").inc(len(records))
        return outcomes

    def delete(self, filepath: str) -> None:
        """Remove the image stored under ``filepath``; NotFound if there is none."""
        if not self.backend.delete(filepath):
            raise NotFound(f"no image is stored under {filepath!r}")
        metrics.IMAGES_DELETED.inc()

    # -- reads ----------------------------------------------------------------------------

    def search(
        self,
        source: ImageSource,
        *,
        all_orientations: bool | None = None,
        **parameters: Unpack[SearchParameters],
    ) -> list[Match]:
        """Stored images like this one, best first.

        With ``all_orientations`` (the default setting) the query is also tried rotated by
        90°, 180°, 270° and mirrored — all 8 in one pass. ``parameters``: ``limit``,
        ``max_distance`` or ``min_score``, ``where`` (a metadata filter), ``method`` and
        ``collapse`` (a metadata key: at most one result, the best, per value of it); see
        ``search.SearchOptions``.
        """
        options = SearchOptions.of(self.settings, **parameters)
        method = options.method
        rotate = self.settings.all_orientations if all_orientations is None else all_orientations
        turns: Sequence[int] = range(len(orientations.ORIENTATIONS) if rotate else 1)
        signatures = embedded = inner = query = None
        with self._decoding():  # after the cheap checks
            pixels, footprint = ingest.decoded(source, self.settings)
            if method != "embedding":
                sign = signature.orientations if rotate else signature.signature
                signatures = sign(pixels, footprint)
                if method == "signature" and not signatures.any():
                    raise InvalidImage(BLANK)
            if method != "signature":
                turns = self._embedded_turns(method, turns)
                rows = [orientations.turn(pixels, i) for i in turns]
                if self._verifies:  # and the pictures that may be inside this one
                    query = verify.Query(pixels)
                    rows += [_cropped(pixels, box) for box in verify.rectangles(pixels)]
                vectors = self.embed(rows)
                embedded, inner = vectors[: len(turns)], vectors[len(turns) :]
            del pixels
        return self._search(signatures, embedded, options, query, inner, turns)

    def _embedded_turns(self, method: str, turns: Sequence[int]) -> tuple[int, ...]:
        """The orientations a query is embedded in: those searched, but in hybrid only
        those ``hybrid_orientations`` names (each a CNN pass), as its signature finds
        turned copies itself."""
        if method != "hybrid" or self.settings.hybrid_orientations == "all":
            return tuple(turns)
        kept = {"mirror": ("identity", "mirror"), "identity": ("identity",)}
        named = kept[self.settings.hybrid_orientations]
        return tuple(i for i in turns if orientations.ORIENTATIONS[i] in named)

    def search_stored(self, filepath: str, **parameters: Unpack[SearchParameters]) -> list[Match]:
        """Stored images like the one stored under ``filepath`` (itself included)."""
        options = SearchOptions.of(self.settings, **parameters)
        record = self.get(filepath)
        if options.method != "signature" and record.embedding is None:
            raise InvalidRequest(f"{filepath!r} was stored without an embedding")
        embedded = None if record.embedding is None else record.embedding[None]
        return self._search(record.signature, embedded, options)

    def _search(
        self,
        signatures: npt.NDArray[np.int8] | None,
        embedded: npt.NDArray[np.float32] | None,
        options: SearchOptions,
        query: verify.Query | None = None,
        inner: npt.NDArray[np.float32] | None = None,
        turns: Sequence[int] | None = None,
    ) -> list[Match]:
        """The matches of a search. ``embedded`` holds the query's embeddings in the
        orientations ``turns`` (default: the first ``len(embedded)``). With a ``query`` to
        verify with, candidates are kept if local features verify them: embedding
        matches up to twice the cutoff, and the images nearest to the ``inner``
        embeddings (of pictures that may be inside the query); then the best results are
        checked (``verify.checked``)."""
        limit, where = options.fetch_limit, options.where
        metrics.SEARCHES.labels(options.method).inc()
        found: list[Match] = []
        if signatures is not None and options.method != "embedding":
            queries = np.atleast_2d(signatures)
            cutoff = options.signature_cutoff
            found += self.backend.search(queries, limit=limit, max_distance=cutoff, where=where)
        if embedded is not None and options.method != "signature":
            cutoff = options.embedding_cutoff
            lift = query is not None and sure_distance(options) is not None
            wide = max(cutoff, options.veto_distance) if lift else cutoff
            matches = self.backend.search_embedding(
                embedded, limit=limit, max_distance=wide, where=where
            )
            if turns is not None:  # a store names a match's orientation by its query row
                matches = [_turned(m, turns) for m in matches]
            found += [m for m in matches if m.distance < cutoff]
            if lift and query is not None:  # candidates beyond the cutoff, if verified
                most = self.settings.verify_candidates
                candidates = [m for m in matches if m.distance >= cutoff][:most]
                if inner is not None and len(inner):
                    known = {m.filepath for m in matches}
                    candidates += [
                        dataclasses.replace(m, orientation="identity")  # a row, not a turn
                        for m in self.backend.search_embedding(
                            inner, limit=most, max_distance=wide, where=where
                        )
                        if m.filepath not in known
                    ]
                sure = sure_embedding_distance(options)
                found += [
                    dataclasses.replace(m, distance=sure)
                    for m in self._checked(candidates, query, len(candidates))
                    if m.verified
                ]
        covered = None if turns is None else {orientations.ORIENTATIONS[i] for i in turns}
        answer = results(found, options, embedded, self._embedding_of, covered)
        if query is not None:
            by_signature = {m.filepath for m in found if m.method == "signature"}
            answer = with_verdicts(self._checked(answer, query), options, by_signature)
        return self._with_sizes(answer)

    @functools.cached_property
    def _verifies(self) -> bool:
        """Whether searches by embedding check their best results with local features."""
        settings = self.settings
        return settings.verify and settings.verify_candidates > 0 and verify.available()

    def _checked(
        self, matches: list[Match], query: verify.Query, most: int | None = None
    ) -> list[Match]:
        def thumbnails(paths: list[str]) -> dict[str, bytes]:
            previews = self.backend.previews(paths)
            return {p: v.thumbnail for p, v in previews.items() if v.thumbnail is not None}

        count = self.settings.verify_candidates if most is None else most
        return verify.checked(matches, query, thumbnails, count)

    def _with_sizes(self, matches: list[Match]) -> list[Match]:
        """The matches with their images' sizes, where the store kept them."""
        sizes = self.backend.previews([m.filepath for m in matches], thumbnails=False)
        return [dataclasses.replace(m, preview=sizes.get(m.filepath)) for m in matches]

    def _embedding_of(self, filepath: str) -> npt.NDArray[np.float32] | None:
        record = self.backend.get(filepath)
        return None if record is None else record.embedding

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
        method = method_of(self.settings, method)
        with self._decoding():
            one, one_footprint = ingest.decoded(first, self.settings)
            two, two_footprint = ingest.decoded(second, self.settings)
            a = signature.signature(one, one_footprint)
            sign = signature.orientations if all_orientations else signature.signature
            rows = np.atleast_2d(sign(two, two_footprint))
            found = []
            if a.any() and rows.any():
                d = signature.distances(rows, a)
                turn = int(np.argmin(d))
                found.append(Comparison(float(d[turn]), orientations.ORIENTATIONS[turn]))
            elif method == "signature":  # blank signatures are at distance 1, even from themselves
                raise InvalidImage(BLANK)
            if self.settings.embeddings:
                turns = range(len(orientations.ORIENTATIONS) if all_orientations else 1)
                vectors = self.embed([one, *(orientations.turn(two, i) for i in turns)])
                cosine, best = cosine_distances(vectors[1:], vectors[:1])
                orientation = orientations.ORIENTATIONS[int(best[0])]
                found.append(Comparison(float(cosine[0]), orientation, "embedding"))
        return chosen_comparison(found, method, hybrid_scale(self.settings))

    def duplicates(
        self,
        *,
        keep: str = "largest",
        strict: bool = False,
        min_size: int = 2,
        all_orientations: bool | None = None,
        progress: Callable[[int, int], object] | None = None,
        **parameters: Unpack[SearchParameters],
    ) -> list[Group]:
        """Every group of copies among the stored images, largest first, each with the
        copy to keep first (``duplicates.grouped``). ``parameters``: ``method``,
        ``max_distance`` or ``min_score`` and ``where`` as for ``search``; pairs marked
        distinct are never grouped."""
        options = self._duplicate_options(keep, min_size, parameters)
        rotate = self.settings.all_orientations if all_orientations is None else all_orientations
        found = selfjoin.join(
            self.backend,
            options,
            orientations=rotate,
            nprobe=self.settings.duplicates_nprobe,
            progress=progress,
        )
        return grouped(
            found.pairs,
            found.images,
            measure=found.measure,
            keep=keep,
            strict=strict,
            distinct=self.backend.distinct(),
            min_size=min_size,
        )

    def start_duplicates(self, **options: Any) -> str:
        """``duplicates`` as a background job (``jobs``); its id. The options are checked
        now: a bad one is an error of this call, not of the job."""
        parameters = SearchParameters(
            **{k: options[k] for k in SearchParameters.__annotations__ if k in options}  # type: ignore[typeddict-item]
        )
        self._duplicate_options(
            options.get("keep", "largest"), options.get("min_size", 2), parameters
        )
        before = (self.backend.changes(), self.backend.count())

        def work(progress: Callable[[int, int], None]) -> tuple[list[Any], dict[str, Any]]:
            groups = self.duplicates(progress=progress, **options)
            changed = (self.backend.changes(), self.backend.count()) != before
            return [g.to_json() for g in groups], {"store_changed": changed}

        return self.jobs.start("duplicates", work, options)

    @functools.cached_property
    def jobs(self) -> Jobs:
        """This service's background jobs, in a folder all its workers share."""
        if self.settings.jobs_dir:
            return Jobs(Path(self.settings.jobs_dir))
        if (files := self.backend.files) is not None:
            return Jobs(files.with_name(files.name + ".jobs"))
        return Jobs(Path(tempfile.gettempdir()) / f"lookalike-jobs-{os.getuid()}")

    def _duplicate_options(
        self, keep: str, min_size: int, parameters: SearchParameters
    ) -> SearchOptions:
        options = SearchOptions.of(self.settings, **parameters)
        if keep not in KEEP_RULES:
            raise InvalidRequest(f"keep must be one of {', '.join(KEEP_RULES)}")
        if min_size < 2:
            raise InvalidRequest("min_size must be 2 or more: a group is of copies")
        if options.signature_cutoff > 1.0 and options.method != "embedding":
            raise InvalidRequest("max_distance must be at most 1 for duplicates")
        return options

    def mark_distinct(self, first: str, second: str) -> None:
        """Remember that two stored images are not copies: never grouped again."""
        self.backend.mark_distinct(first, second)

    def unmark_distinct(self, first: str, second: str) -> None:
        """Forget a mark; NotFound if there was none."""
        if not self.backend.unmark_distinct(first, second):
            raise NotFound(f"{first!r} and {second!r} are not marked distinct")

    def distinct(self) -> list[tuple[str, str]]:
        """Every pair marked distinct."""
        return self.backend.distinct()

    def get(self, filepath: str) -> Record:
        record = self.backend.get(filepath)
        if record is None:
            raise NotFound(f"no image is stored under {filepath!r}")
        return record

    def thumbnail(self, filepath: str) -> Preview:
        """The preview of a stored image, with its thumbnail; NotFound if it has none."""
        found = self.backend.previews([filepath]).get(filepath)
        if found is None or found.thumbnail is None:
            raise NotFound(f"no thumbnail is stored for {filepath!r}")
        return found

    def count(self) -> int:
        return self.backend.count()

    def stats(self) -> dict[str, Any]:
        """What the store holds, what its search state costs here, the search methods,
        whether thumbnails are kept."""
        methods, thumbnails = self.settings.search_methods, self.settings.thumbnails
        return {**self.backend.stats(), "methods": methods, "thumbnails": thumbnails}

    def migrate(
        self, target: str, *, swap: bool = False, progress: Callable[[int], object] | None = None
    ) -> dict[str, Any]:
        """Copy the store's collection, written by an older system (Match or image-match
        on Elasticsearch), into lookalike's layout under ``target``."""
        return self.backend.migrate(target, swap=swap, progress=progress)

    def backup(self, destination: Path) -> dict[str, Any]:
        """A consistent copy of the store (a SQLite file) at ``destination``, taken while
        the service keeps serving and writing; what was copied."""
        return self.backend.backup(destination)

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


def _same_file(stored: Preview | None, path: str) -> bool:
    """``ingest.unchanged``, False where the file cannot be read (signing it says why)."""
    try:
        return ingest.unchanged(stored, path)
    except OSError:
        return False


def _valid_filepath(name: str) -> bool:
    try:
        check_filepath(name)
    except InvalidRequest:
        return False
    return True
