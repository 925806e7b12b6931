"""Milvus Lite runs inside this process and locks its folder, so the process is the only
one to write its file: what the stores of this process share about one file (``share``,
``release``), among them the insertion order kept in memory; and the process's clock for
``seq`` (``next_seq``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FLUSH_ROWS", "Order", "Shared", "next_seq", "release", "share"]

# Milvus Lite searches unflushed rows by converting each to Python on every search, so it
# is flushed after every FLUSH_ROWS rows written.
FLUSH_ROWS = 1000


class Order:
    """Filepaths in insertion order, for a store that only this process writes."""

    def __init__(self, pairs: list[tuple[int, str]]) -> None:
        pairs.sort()
        self._paths: list[str | None] = [path for _, path in pairs]
        self._slots: dict[str, int] = {path: i for i, (_, path) in enumerate(pairs)}
        self._dead = 0

    def add(self, path: str) -> None:
        if path not in self._slots:
            self._slots[path] = len(self._paths)
            self._paths.append(path)

    def remove(self, path: str) -> None:
        if (slot := self._slots.pop(path, None)) is not None:
            self._paths[slot] = None
            self._dead += 1

    def page(self, offset: int, limit: int) -> list[str]:
        if self._dead:
            live = [path for path in self._paths if path is not None]
            self._paths, self._dead = list(live), 0
            self._slots = {path: i for i, path in enumerate(live)}
        return [path for path in self._paths[offset : offset + limit] if path is not None]

    @property
    def nbytes(self) -> int:
        return sum(100 + len(path) for path in self._slots)


@dataclass
class Shared:
    """One store as the backends of this process share it: one lock for its writes, the
    insertion order of each collection once read, and the rows written since a flush.
    (A server's store has one of its own, shared with nobody.)"""

    users: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    orders: dict[str, Order] = field(default_factory=dict)
    unflushed: dict[str, int] = field(default_factory=dict)

    def order(
        self, collection: str, read: Callable[[], list[tuple[int, str]]] | None = None
    ) -> Order | None:
        """The insertion order of ``collection``, if read: ``read`` (every (seq, filepath))
        reads it the first time (exclusive stores read it at their first ``list``; writes
        keep it current whoever makes them)."""
        order = self.orders.get(collection)
        if order is None and read is not None:
            with self.lock:
                if (order := self.orders.get(collection)) is None:
                    pairs = read()
                    next_seq(at_least=max((seq for seq, _ in pairs), default=0) + 1)
                    order = self.orders[collection] = Order(pairs)
        return order

    def wrote(self, collection: str, rows: int) -> bool:
        """Count rows written to ``collection``: True once it is time to flush it."""
        unflushed = self.unflushed.get(collection, 0) + rows
        self.unflushed[collection] = unflushed
        return unflushed >= FLUSH_ROWS


_LITE: dict[str, Shared] = {}
_LITE_LOCK = threading.Lock()
_SEQ_LOCK = threading.Lock()
_last_seq = 0


def share(file: str) -> tuple[str, Shared]:
    """The absolute path of a Milvus Lite file (its folder created), and what the stores of
    this process share about it, with one more user."""
    path = Path(file).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    uri = str(path)
    with _LITE_LOCK:
        shared = _LITE.setdefault(uri, Shared())
        shared.users += 1
    return uri, shared


def release(uri: str, shared: Shared) -> None:
    """One user fewer: the last lets go of this process's Milvus Lite server for the file."""
    with _LITE_LOCK:
        shared.users -= 1
        if shared.users > 0:
            return
        del _LITE[uri]
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def next_seq(at_least: int = 0) -> int:
    """A sequence number above every one this process handed out (nanoseconds)."""
    global _last_seq
    with _SEQ_LOCK:
        _last_seq = max(_last_seq + 1, time.time_ns(), at_least)
        return _last_seq
