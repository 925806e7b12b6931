"""Images to records: decode within the limits, sign, embed; many files at once in
worker processes, stored in batches by the service.

Everything here is module-level so that spawned worker processes can run it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from itertools import islice
from multiprocessing import get_context
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import images, signature
from .config import Settings
from .embeddings import Encoder
from .errors import InvalidImage, InvalidRequest, LookalikeError
from .records import (
    MAX_THUMBNAIL_BYTES,
    FileResult,
    Footprint,
    Metadata,
    Preview,
    Record,
    check_filepath,
)
from .vectors import as_stored

__all__ = [
    "BLANK",
    "ImageSource",
    "Signed",
    "Signer",
    "decoded",
    "embedded",
    "file_sha256",
    "preview",
    "record_of",
    "records_of",
    "sign_images",
    "signed",
    "unchanged",
]

T = TypeVar("T")
R = TypeVar("R")

ImageSource = bytes | str | os.PathLike[str]
"""Image bytes, or the path of a local image file."""

BLANK = (
    "the image has no detail for the signature (one colour, or a few pixels): it could never"
    " be found by it; with LOOKALIKE_EMBEDDINGS=true such images are stored and found by"
    " their embedding"
)


@dataclass(frozen=True, slots=True)
class Signed:
    """One file signed in a worker: its signature as bytes (cheap to send between
    processes), its embedding and its preview, or why it could not be read."""

    filepath: str
    signature: bytes | None = None
    embedding: npt.NDArray[np.float32] | None = None
    error: str | None = None
    preview: Preview | None = None


def decoded(
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


def preview(
    settings: Settings,
    source: ImageSource,
    pixels: npt.NDArray[np.uint8],
    footprint: Footprint | None,
) -> Preview:
    """What is kept of an image's source: its size upright (the full size, even when it
    was decoded reduced), its file's bytes, a thumbnail unless they are turned off, the
    SHA-256 of the bytes and, for a file, its modification time."""
    height, width = footprint.shape if footprint is not None else pixels.shape[:2]
    modified = None
    if isinstance(source, bytes):
        file_bytes, digest = len(source), sha256(source)
    else:
        try:
            status = os.stat(source)
            digest = file_sha256(source)
        except OSError as error:  # gone since it was read
            raise InvalidImage(f"cannot read {os.fspath(source)}: {error.strerror}") from None
        file_bytes, modified = status.st_size, float(status.st_mtime)
    small = None
    if settings.thumbnails:
        with contextlib.suppress(ValueError):  # none fits: the picture is kept without
            small = images.thumbnail(pixels, MAX_THUMBNAIL_BYTES)
    return Preview(
        int(width), int(height), max(file_bytes, 1), small, sha256=digest, modified=modified
    )


def sha256(content: bytes) -> str:
    """The SHA-256 of bytes, in hex, as previews keep it."""
    return hashlib.sha256(content).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex (read in blocks: any size)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def unchanged(stored: Preview | None, path: str | os.PathLike[str], force: bool = False) -> bool:
    """Whether the file at ``path`` holds what the record ``stored`` was made from: the
    same length and modification time, or else the same SHA-256 (read only then).
    OSError if the file cannot be read."""
    if stored is None or stored.sha256 is None or force:
        return False
    status = os.stat(path)
    if status.st_size != stored.file_bytes:
        return False
    if stored.modified is not None and float(status.st_mtime) == stored.modified:
        return True
    return file_sha256(path) == stored.sha256


def embedded(settings: Settings, pixels: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    """Embeddings as stores keep them, by this process's model (loaded on first use)."""
    encoder = Encoder.shared(settings.model_cache or None, threads=settings.embedding_threads)
    return as_stored(encoder.embed(pixels))


def signed(
    settings: Settings, files: Iterable[tuple[str, str]], workers: int
) -> Iterator[list[Signed]]:
    """``(filepath, path)`` files signed in chunks by ``workers`` processes, in order."""
    if workers > 1 and settings.embedding_threads == 0:  # a process per core already
        settings = settings.replace(embedding_threads=1)
    sign = partial(sign_images, settings)  # pickled once per chunk, not per file
    yield from _parallel_map(sign, _chunks(files), workers)


class Signer:
    """Worker processes that sign the images of HTTP batches for the whole life of a
    service, started by the first batch (a process pool per batch would cost a second of
    start-up each time). ``sign`` spreads a batch over them, so that one client's batches
    use every core rather than one process's share of the GIL."""

    def __init__(self, settings: Settings, workers: int) -> None:
        if settings.embedding_threads == 0:  # a process per core already
            settings = settings.replace(embedding_threads=1)
        self.workers = workers
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def sign(self, items: list[tuple[str, ImageSource]]) -> list[Signed]:
        """``(filepath, source)`` items signed as ``lookalike add`` signs files, in order;
        LookalikeError if a worker died (the next call starts new ones)."""
        if not items:
            return []
        size = -(-len(items) // (2 * self.workers))  # two parts a worker: even loads
        parts = [items[start : start + size] for start in range(0, len(items), size)]
        pool = self._started()
        try:
            return [
                item
                for part in pool.map(partial(sign_images, self._settings), parts)
                for item in part
            ]
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise LookalikeError(
                "a decoding worker process died (killed, or out of memory?); try again"
            ) from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = _process_pool(self.workers)
            return self._pool


def records_of(batch: list[Signed]) -> tuple[list[Record], list[FileResult]]:
    """The records to store of a batch of signed files, and every file's outcome."""
    stored: list[Record] = []
    outcomes: list[FileResult] = []
    for item in batch:
        made = record_of(item)
        if isinstance(made, Record):
            stored.append(made)
        outcomes.append(FileResult(item.filepath, None if isinstance(made, Record) else made))
    return stored, outcomes


def record_of(item: Signed, metadata: Metadata | None = None) -> Record | str:
    """The record of a signed image, with ``metadata``, or why it cannot be stored."""
    if item.error is not None:
        return item.error
    try:
        check_filepath(item.filepath, new=True)
    except InvalidRequest as refused:  # e.g. a file name that is not valid Unicode
        return str(refused)
    sig = np.frombuffer(item.signature or b"", dtype=np.int8)
    if item.embedding is None and not sig.any():
        return BLANK
    return Record(item.filepath, sig, metadata, embedding=item.embedding, preview=item.preview)


def sign_images(settings: Settings, chunk: list[tuple[str, ImageSource]]) -> list[Signed]:
    """A chunk of ``(filepath, path)`` files (or image bytes) signed, and embedded when the
    collection has embeddings (in one batch)."""
    out: list[Signed] = []
    pixels: dict[int, npt.NDArray[np.uint8]] = {}
    for name, path in chunk:
        try:
            rgb, footprint = decoded(path, settings)
            pixels[len(out)] = rgb
            sig = signature.signature(rgb, footprint).tobytes()
            out.append(Signed(name, sig, preview=preview(settings, path, rgb, footprint)))
        except LookalikeError as error:
            out.append(Signed(name, error=str(error)))
    if settings.embeddings and pixels:
        vectors = embedded(settings, list(pixels.values()))
        for i, vector in zip(pixels, vectors, strict=True):
            out[i] = dataclasses.replace(out[i], embedding=vector)
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
    with _process_pool(workers) as pool:
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


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # Spawned, not forked: workers start clean (no inherited threads or connections) and
    # read the environment the caller prepared for them.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def _exit_with_parent(parent: int) -> None:
    """In each worker: exit as soon as the process that started it is gone (killed, even
    by SIGKILL), rather than live on holding its terminal and pipes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
