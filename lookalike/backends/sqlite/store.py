"""The default store: a SQLite file is the truth, the search state is derived from it.

Rows hold the filepath (unique), the 648-byte signature, metadata as JSON, times and
an optional embedding (float16). Every write transaction takes the next number of a
version counter and stamps the rows it writes (and a tombstone for each row it deletes)
with it. Each process keeps its own search state of each column (``signatures``,
``embeddings``) and before each read catches up by applying the rows and tombstones
newer than the version it has seen (``follower``). So an add that returned in one process
is found by the next search in any other.

Small stores are scanned exactly. From ``index_min_rows`` rows on (for embeddings,
``embedding_index_min_rows``), a process builds an index of the column in the background
(IVF for signatures, HNSW for embeddings), saved beside the database (``generations``);
every process memory-maps the published index and searches it plus an exact delta of
the rows changed since. An index whose delta has grown past a fraction of it is rebuilt
in the background the same way, and a restart costs no rebuild: only the changes since
the index's version are read.

Previews (an image's sizes and thumbnail) live in a table of their own, keyed by the
image's row id and written in the same transaction as the row: searches never read it.
So do marks that two images are distinct (``distinct_marks``: the two row ids), deleted
with either image. The self-join reads a whole column through a connection of its own,
in one read transaction (WAL: writers and searches go on meanwhile).

Durability: WAL journal with ``synchronous=FULL``, so a write that returned survives a
crash of the process or the machine.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ...config import Settings
from ...errors import BackendUnavailable, ConfigError, InvalidRequest, NotFound
from ...orientations import ORIENTATIONS
from ...records import Filter, Match, Preview, Record, loads_metadata
from ...signature import LENGTH
from ...vectors import EMBEDDING_DIMENSION
from ..base import Backend, Search, Vectors
from ..scan import top
from .embeddings import EmbeddingState, decode, encode
from .signatures import SignatureState

__all__ = ["SQLiteBackend"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    filepath  TEXT NOT NULL UNIQUE,
    signature BLOB NOT NULL,
    metadata  TEXT,
    created   REAL NOT NULL,
    updated   REAL NOT NULL,
    version   INTEGER NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS images_version ON images(version);
CREATE TABLE IF NOT EXISTS tombstones (
    id      INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstones_version ON tombstones(version);
CREATE TABLE IF NOT EXISTS previews (
    id         INTEGER PRIMARY KEY,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    file_bytes INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    thumbnail  BLOB,
    sha256     TEXT,
    modified   REAL
);
CREATE TABLE IF NOT EXISTS distinct_marks (
    low  INTEGER NOT NULL,
    high INTEGER NOT NULL,
    PRIMARY KEY (low, high)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS distinct_marks_high ON distinct_marks(high);
CREATE TABLE IF NOT EXISTS lookalike (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO lookalike (key, value)
VALUES ('schema', 1), ('version', 0), ('pruned', 0), ('identity', abs(random()));
"""

# ?8: the record's own creation time (an import), else NULL: a replace keeps the first
_UPSERT = """
INSERT INTO images (filepath, signature, metadata, embedding, created, updated, version)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (filepath) DO UPDATE SET
    signature = excluded.signature,
    metadata = excluded.metadata,
    embedding = excluded.embedding,
    created = coalesce(?8, images.created),
    updated = excluded.updated,
    version = excluded.version
"""

_SET_PREVIEW = """
INSERT OR REPLACE INTO previews
    (id, width, height, file_bytes, media_type, thumbnail, sha256, modified)
SELECT id, ?, ?, ?, ?, ?, ?, ? FROM images WHERE filepath = ?
"""
_DROP_PREVIEW = "DELETE FROM previews WHERE id = (SELECT id FROM images WHERE filepath = ?)"

_BATCH = 5000
TOMBSTONES_KEPT = 100_000


class SQLiteBackend(Backend):
    """A lookalike store in one SQLite file, safe to share between processes."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> SQLiteBackend:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        path = url[len("sqlite://") :]
        if not path.startswith("/") or len(path) < 2:
            raise ConfigError(f"{url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
        return cls(
            path[1:],
            index_min_rows=settings.index_min_rows,
            nprobe=settings.index_nprobe,
            embedding_index_min_rows=settings.embedding_index_min_rows,
        )

    def __init__(
        self,
        path: str | Path,
        *,
        index_min_rows: int = 50_000,
        nprobe: int = 32,
        build_in_background: bool = True,
        embedding_index_min_rows: int = 20_000,
    ) -> None:
        """Open (or create) the store at ``path``.

        ``index_min_rows``: from this many rows on, search an index instead of scanning
        (0 turns indexing off); ``nprobe``: index lists probed per query orientation;
        ``build_in_background``: start index builds on its own when needed (else only
        ``reindex`` builds one); ``embedding_index_min_rows``: from this many embeddings
        on, search an HNSW index of them (0: never)."""
        self.path = Path(path)
        self.files = self.path
        self.index_min_rows = index_min_rows
        self.nprobe = nprobe
        self.build_in_background = build_in_background
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._transaction(self._create_schema, write=True)
        except (sqlite3.Error, OSError) as error:
            raise BackendUnavailable(f"cannot open the SQLite store {self.path}: {error}") from None
        self._signatures = SignatureState(
            self.path,
            min_rows=index_min_rows,
            nprobe=nprobe,
            build_in_background=build_in_background,
        )
        self._embeddings = EmbeddingState(
            self.path,
            min_rows=embedding_index_min_rows,
            build_in_background=build_in_background,
        )
        self._catch_up()

    # -- writes ---------------------------------------------------------------------------

    def _add_trusted(self, records: Iterable[Record]) -> int:
        total = 0
        iterator = iter(records)
        while batch := list(islice(iterator, _BATCH)):
            rows = [_row(record) for record in batch]  # serialised before the lock is taken
            self._write(partial(self._upsert, rows, batch))
            total += len(batch)
        return total

    def _delete_trusted(self, filepath: str) -> bool:
        return self._write(lambda version: self._delete_row(filepath, version))

    # -- reads ----------------------------------------------------------------------------

    def _get_trusted(self, filepath: str) -> Record | None:
        return self._get_many_trusted([filepath]).get(filepath)

    def _get_many_trusted(self, filepaths: builtins.list[str]) -> dict[str, Record]:
        found = {}
        for start in range(0, len(filepaths), 500):
            chunk = filepaths[start : start + 500]
            rows = self._read(
                "SELECT filepath, signature, metadata, created, updated, embedding FROM images"
                f" WHERE filepath IN ({','.join('?' * len(chunk))})",
                tuple(chunk),
            )
            for path, blob, metadata, created, updated, embedding in rows:
                signature = np.frombuffer(blob, dtype=np.int8).copy()
                found[path] = Record(
                    path, signature, loads_metadata(metadata), created, updated, decode(embedding)
                )
        return found

    def _previews_trusted(
        self, filepaths: builtins.list[str], thumbnails: bool
    ) -> dict[str, Preview]:
        thumbnail = "p.thumbnail" if thumbnails else "NULL"
        select = (
            f"SELECT i.filepath, p.width, p.height, p.file_bytes, {thumbnail}, p.media_type,"
            " p.sha256, p.modified"
            " FROM previews AS p JOIN images AS i ON i.id = p.id WHERE i.filepath IN"
        )
        found: dict[str, Preview] = {}
        for start in range(0, len(filepaths), 500):
            chunk = tuple(filepaths[start : start + 500])
            for path, *fields in self._read(f"{select} ({','.join('?' * len(chunk))})", chunk):
                found[path] = Preview(*fields)
        return found

    def _vectors_trusted(self, column: str, where: Filter | None) -> Vectors:
        allowed = self._allowed(where) if where else None
        width, dtype = (LENGTH, np.int8) if column == "signature" else (EMBEDDING_DIMENSION, None)
        present = "" if column == "signature" else " WHERE embedding IS NOT NULL"
        try:
            reader = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise BackendUnavailable(f"the SQLite store is not available: {error}") from None
        try:
            reader.execute("BEGIN")
            (n,) = reader.execute(f"SELECT count(*) FROM images{present}").fetchone()
            ids = np.empty(n, dtype=np.int64)
            created = np.empty(n, dtype=np.float64)
            rows = np.empty((n, width), dtype=np.int8 if dtype else np.float32)
            paths: builtins.list[str] = []
            cursor = reader.execute(
                f"SELECT id, filepath, created, {column} FROM images{present} ORDER BY id"
            )
            done = 0
            while chunk := cursor.fetchmany(8192):
                stop = min(done + len(chunk), n)  # (one snapshot: never more than counted)
                ids[done:stop] = [row[0] for row in chunk]
                created[done:stop] = [row[2] for row in chunk]
                paths += [row[1] for row in chunk]
                blob = b"".join(row[3] for row in chunk)
                if dtype:
                    rows[done:stop] = np.frombuffer(blob, dtype=np.int8).reshape(-1, LENGTH)
                else:
                    rows[done:stop] = np.frombuffer(blob, dtype="<f2").reshape(-1, width)
                done = stop
            reader.execute("COMMIT")
        except sqlite3.Error as error:
            raise BackendUnavailable(f"the SQLite store is not available: {error}") from None
        finally:
            reader.close()
        if allowed is None:
            return Vectors(paths, created, rows)
        keep = np.isin(ids, allowed)
        return Vectors(
            [p for p, k in zip(paths, keep, strict=True) if k], created[keep], rows[keep]
        )

    def changes(self) -> int | None:
        (version,) = self._read("SELECT value FROM lookalike WHERE key = 'version'", ())[0]
        return int(version)

    def _mark_distinct_trusted(self, first: str, second: str) -> None:
        def mark(version: int) -> None:
            found = dict(
                self._db.execute(
                    "SELECT filepath, id FROM images WHERE filepath IN (?, ?)", (first, second)
                ).fetchall()
            )
            for path in (first, second):
                if path not in found:
                    raise NotFound(f"no image is stored under {path!r}")
            low, high = sorted((found[first], found[second]))
            self._db.execute(
                "INSERT OR IGNORE INTO distinct_marks (low, high) VALUES (?, ?)", (low, high)
            )

        self._write(mark)

    def _unmark_distinct_trusted(self, first: str, second: str) -> bool:
        def unmark(version: int) -> bool:
            gone = self._db.execute(
                "DELETE FROM distinct_marks WHERE (low, high) IN (SELECT min(a.id, b.id),"
                " max(a.id, b.id) FROM images AS a, images AS b"
                " WHERE a.filepath = ? AND b.filepath = ?) RETURNING low",
                (first, second),
            ).fetchall()
            return bool(gone)

        return self._write(unmark)

    def _distinct_trusted(self) -> builtins.list[tuple[str, str]]:
        rows = self._read(
            "SELECT a.filepath, b.filepath FROM distinct_marks AS m"
            " JOIN images AS a ON a.id = m.low JOIN images AS b ON b.id = m.high",
            (),
        )
        return [(a, b) if a < b else (b, a) for a, b in rows]

    def count(self) -> int:
        with self._lock:
            self._catch_up()
            return self._signatures.live

    def list(self, offset: int = 0, limit: int = 20) -> builtins.list[str]:
        with self._lock:
            self._catch_up()
            # Offsets are resolved in memory, so a deep page costs no OFFSET scan in SQLite.
            ids = self._signatures.ids()[offset : offset + limit]
        if not len(ids):
            return []
        found = dict(self._read_ids("SELECT id, filepath FROM images", ids))
        return [found[i] for i in ids.tolist() if i in found]

    def _search_trusted(self, search: Search) -> builtins.list[Match]:
        return self._search(self._signatures, "signature", search)

    def _search_embedding_trusted(self, search: Search) -> builtins.list[Match]:
        return self._search(self._embeddings, "embedding", search)

    def _search(
        self, state: SignatureState | EmbeddingState, method: str, search: Search
    ) -> builtins.list[Match]:
        """The best ``limit`` matches that ``state`` finds, with their rows' data."""
        queries, limit, max_distance, where = search
        with self._lock:
            self._catch_up()
            allowed = self._allowed(where) if where else None
            hits = state.search(queries, max_distance, allowed, limit)
        chosen = top(hits, limit)
        ids = hits.rows[chosen]
        rows = {
            row[0]: row[1:]
            for row in self._read_ids("SELECT id, filepath, metadata FROM images", ids)
        }
        matches = [
            Match(
                path,
                float(hits.distances[i]),
                ORIENTATIONS[hits.orientations[i]],
                loads_metadata(metadata),
                method,
            )
            for i, row_id in zip(chosen.tolist(), ids.tolist(), strict=True)
            if (found := rows.get(row_id)) is not None
            for path, metadata in [found]
        ]
        matches.sort(key=lambda m: (m.distance, m.filepath))
        return matches[:limit]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._catch_up()
            return {
                "backend": "sqlite",
                "path": str(self.path.resolve()),
                "count": self._signatures.live,
                **self._signatures.describe(),
                "embeddings": self._embeddings.live,
                **self._embeddings.describe(),
                "index_min_rows": self.index_min_rows,
                "index_building": self._signatures.building(),
                "memory_bytes": self.memory_bytes,
                "version": self._signatures.version,
                "file_bytes": sum(
                    p.stat().st_size
                    for p in (self.path, self.path.with_name(self.path.name + "-wal"))
                    if p.exists()
                ),
            }

    def reindex(self) -> dict[str, Any]:
        """Build and publish an index of the rows as they are now, then use it."""
        try:
            self._signatures.reindex()
            self._embeddings.reindex()  # and the embeddings' index, if they have one
        except sqlite3.Error as error:
            raise BackendUnavailable(f"the SQLite store is not available: {error}") from None
        return self.stats()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def memory_bytes(self) -> int:
        """Bytes of search state private to this process (a shared index not counted)."""
        return self._signatures.nbytes + self._embeddings.nbytes

    def backup(self, destination: Path) -> dict[str, Any]:
        """SQLite's online backup, in one step: a read transaction's snapshot (in WAL
        mode writers go on meanwhile), so the copy holds every write committed before it
        began. Written beside ``destination``, checked, then renamed; the index files
        are not copied (a store opened without them rebuilds or scans, as it decides)."""
        destination = Path(destination)
        if destination.resolve() == self.path.resolve():
            raise InvalidRequest("the backup would overwrite the store itself")
        unfinished = destination.with_name(destination.name + ".partial")
        unfinished.unlink(missing_ok=True)
        started = time.monotonic()
        try:
            source = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True)
            try:
                with contextlib.closing(sqlite3.connect(unfinished)) as copy:
                    source.backup(copy)
                    copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                    (verdict,) = copy.execute("PRAGMA quick_check").fetchone()
                    (count,) = copy.execute("SELECT count(*) FROM images").fetchone()
            finally:
                source.close()
            if verdict != "ok":
                raise BackendUnavailable(f"the backup failed its check: {verdict}")
            os.replace(unfinished, destination)
        except (sqlite3.Error, OSError) as error:
            unfinished.unlink(missing_ok=True)
            raise BackendUnavailable(
                f"cannot back up {self.path} to {destination}: {error}"
            ) from None
        return {
            "backup": str(destination),
            "images": int(count),
            "bytes": destination.stat().st_size,
            "seconds": round(time.monotonic() - started, 3),
        }

    # -- internals ------------------------------------------------------------------------

    def _create_schema(self) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(images)")}
        if "embedding" not in columns:  # a store made before embeddings existed
            self._db.execute("ALTER TABLE images ADD COLUMN embedding BLOB")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(previews)")}
        for column, kind in (("sha256", "TEXT"), ("modified", "REAL")):
            if column not in columns:  # a store made before content hashes were kept
                self._db.execute(f"ALTER TABLE previews ADD COLUMN {column} {kind}")

    def _upsert(
        self, rows: builtins.list[_Row], records: builtins.list[Record], version: int
    ) -> None:
        now = time.time()
        times = [(r.created, r.updated) for r in records]
        self._db.executemany(
            _UPSERT,
            [
                (
                    *row,
                    now if made is None else made,
                    now if changed is None else changed,
                    version,
                    made,
                )
                for row, (made, changed) in zip(rows, times, strict=True)
            ],
        )
        self._db.executemany(_DROP_PREVIEW, [(r.filepath,) for r in records if r.preview is None])
        self._db.executemany(
            _SET_PREVIEW,
            [(*_preview_columns(p), r.filepath) for r in records if (p := r.preview) is not None],
        )

    def _delete_row(self, filepath: str, version: int) -> bool:
        gone = self._db.execute(
            "DELETE FROM images WHERE filepath = ? RETURNING id", (filepath,)
        ).fetchall()
        for (row_id,) in gone:
            self._db.execute(
                "INSERT OR REPLACE INTO tombstones (id, version) VALUES (?, ?)", (row_id, version)
            )
            self._db.execute("DELETE FROM previews WHERE id = ?", (row_id,))
            self._db.execute(
                "DELETE FROM distinct_marks WHERE low = ? OR high = ?", (row_id, row_id)
            )
        if gone and version % 1000 == 0:
            self._prune_tombstones()
        return bool(gone)

    def _prune_tombstones(self) -> None:
        """Keep the newest tombstones; a process older than the rest reloads everything."""
        (count,) = self._db.execute("SELECT count(*) FROM tombstones").fetchone()
        if count <= TOMBSTONES_KEPT:
            return
        (cut,) = self._db.execute(
            "SELECT version FROM tombstones ORDER BY version DESC LIMIT 1 OFFSET ?",
            (TOMBSTONES_KEPT // 2,),
        ).fetchone()
        self._db.execute("DELETE FROM tombstones WHERE version <= ?", (cut,))
        self._db.execute("UPDATE lookalike SET value = ? WHERE key = 'pruned'", (cut,))

    def _write(self, body: Callable[[int], T]) -> T:
        def transaction() -> T:
            (version,) = self._db.execute(
                "UPDATE lookalike SET value = value + 1 WHERE key = 'version' RETURNING value"
            ).fetchone()
            return body(version)

        with self._lock:
            return self._transaction(transaction, write=True)

    def _transaction(self, body: Callable[[], T], *, write: bool) -> T:
        try:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = body()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
        except sqlite3.Error as error:  # locked, closed, corrupt, disk gone
            raise BackendUnavailable(f"the SQLite store is not available: {error}") from None

    def _read(self, sql: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as error:  # locked, closed, corrupt, disk gone
                raise BackendUnavailable(f"the SQLite store is not available: {error}") from None

    def _read_ids(self, select: str, ids: npt.NDArray[np.int64]) -> Iterator[tuple[Any, ...]]:
        values = ids.tolist()
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self._read(f"{select} WHERE id IN ({marks})", tuple(chunk))

    def _catch_up(self) -> None:
        """Bring the search state up to the newest committed version.

        A catch-up that fails half-way leaves a state marked stale, rebuilt in full next
        time."""
        with self._lock:
            try:
                self._transaction(self._catch_up_in_transaction, write=False)
            except BaseException:
                self._signatures.stale()
                self._embeddings.stale()
                raise

    def _catch_up_in_transaction(self) -> None:
        (version,) = self._db.execute(
            "SELECT value FROM lookalike WHERE key = 'version'"
        ).fetchone()
        (pruned,) = self._db.execute("SELECT value FROM lookalike WHERE key = 'pruned'").fetchone()
        self._signatures.catch_up(self._db, version, pruned)
        self._embeddings.catch_up(self._db, version, pruned)

    def _allowed(self, where: Filter) -> npt.NDArray[np.int64]:
        """Ids of the rows whose metadata satisfies ``where``."""
        clauses: builtins.list[str] = []
        params: builtins.list[str | int | float] = []
        for key, value in where.items():
            if isinstance(value, bool):
                clauses.append("j.key = ? AND j.type = ?")
                params += [key, "true" if value else "false"]
            elif isinstance(value, int | float):
                clauses.append("j.key = ? AND j.type IN ('integer', 'real') AND j.value = ?")
                params += [key, value]
            else:
                clauses.append("j.key = ? AND j.type = 'text' AND j.value = ?")
                params += [key, value]
        sql = "SELECT id FROM images WHERE " + " AND ".join(
            f"EXISTS (SELECT 1 FROM json_each(images.metadata) AS j WHERE {clause})"
            for clause in clauses
        )
        return np.array([row_id for (row_id,) in self._read(sql, tuple(params))], dtype=np.int64)


_Row = tuple[str, bytes, str | None, bytes | None]


def _row(record: Record) -> _Row:
    metadata = record.metadata
    text = None if metadata is None else json.dumps(metadata, allow_nan=False)
    return record.filepath, record.signature.tobytes(), text, encode(record.embedding)


def _preview_columns(preview: Preview) -> tuple[Any, ...]:
    """A preview as the previews table's columns after ``id``."""
    p = preview
    return (p.width, p.height, p.file_bytes, p.media_type, p.thumbnail, p.sha256, p.modified)
