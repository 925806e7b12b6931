"""The Milvus store (``lookalike[milvus]``): ``store`` (the backend), ``client`` (pymilvus:
requests, the schema), ``queries`` (URLs, filter expressions, completeness bounds: pure, no
client), ``rows`` (records as rows and back, the exact ranking of fetched rows: pure) and
``lite`` (what the stores of one process share about a Milvus Lite file).

A store in Milvus — a server or cluster, Zilliz Cloud, or Milvus Lite in a local file —
with pymilvus. The same code talks to all of them; the test suite
runs it on Milvus Lite.

**Layout.** Milvus Lite holds one dense vector field per collection, so a store is three
collections (four once an image is marked distinct). ``<name>`` has a row per record:
``filepath`` (VARCHAR primary key, so an add is an upsert), ``signature`` (FLOAT_VECTOR of
648: the int8 values are exact in float32, and Milvus Lite has no INT8_VECTOR), ``blank``
(an all-zero signature, whose cosine is undefined: its vector is a placeholder, and it is
re-ranked as the zeros it is), ``metadata`` (the exact JSON text; each key also as the
dynamic field ``m:<key>``, which filters read), ``seq`` (insertion order: kept when a record
is replaced, new for one added again), ``created``, ``updated``, ``version`` (random, new on
every write) and ``has_embedding``. ``<name>_embeddings`` has a row only for records with an
embedding: ``filepath``, ``embedding`` (FLOAT_VECTOR of 1280), the same dynamic fields, and
the record's ``version``. So "no embedding" is no row, not a placeholder; a row whose
version is not its record's (left by a write that failed halfway) is ignored.
``<name>_previews`` has a row for records kept with a preview: ``width``, ``height``,
``file_bytes``, ``media_type``, ``thumbnail`` (base64 text, "" for none: never indexed, read
only by ``previews``), the record's ``version``, and a constant two-float ``placeholder``
(Milvus wants a vector in every collection), and as dynamic fields the ``sha256`` and
``modified`` of the image's source; a previews collection made before those were kept has no
dynamic fields, and keeps neither (so ``lookalike add`` signs its files again on every run,
as before). A store made before previews gains the collection, empty, when it is opened.
``<name>_distinct``, made by the first mark, keeps "not a copy" marks: ``first`` and
``second`` (the sorted pair), keyed by a hash of the pair, with the same constant
placeholder vector; deleting an image deletes the marks that name it. No field is nullable,
so that Milvus versions without nullable fields take the same schema.

**Search.** All query rows (orientations) go in one request, ranked by cosine similarity
on an HNSW index (or FLAT, or AUTOINDEX on Zilliz); then the candidates' stored vectors
are fetched and re-ranked with the one distance of each kind — ``signature.distances``,
``vectors.cosine_distances`` — so a distance is the one every store reports. A query row
asks for ``candidates`` neighbours first; ``queries`` explains the bound that
tells whether every record left out is provably worse than the results. If one might not
be, the search asks for four times as many, or reads the whole collection once that is
cheaper. With an exact index (FLAT, or the brute force Milvus runs on data not indexed
yet) results equal brute force; with HNSW only the graph search can miss.

**Order.** ``list`` sorts by ``seq`` (nanoseconds at the first insert; ties by filepath).
A server reads every (filepath, seq) for it; Milvus Lite is opened by one process only
(it locks its folder), which therefore sees every write: it keeps the order in memory,
read once. Milvus Lite searches unflushed rows by converting each to Python on every
search, so it is flushed after every ``lite.FLUSH_ROWS`` rows written.

``MilvusBackend`` is imported on first use, so that ``queries`` can be imported without
loading the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import MilvusBackend

__all__ = ["MilvusBackend"]


def __getattr__(name: str) -> Any:
    if name == "MilvusBackend":
        from .store import MilvusBackend

        return MilvusBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
