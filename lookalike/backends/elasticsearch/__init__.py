"""The Elasticsearch store (``lookalike[elasticsearch]``): ``store`` (the backend), ``index``
(one index through the official client), ``queries`` (request bodies, layouts, the exact
re-rank: pure, no client) and ``migrate`` (from Match's and image-match's layout).

Documents keep image-match's fields — ``path``, ``signature``, ``simple_word_0 … 62``,
``metadata`` — so an index written by Match or image-match is searched as it is (the
*legacy* layout: random ids, dynamic mapping). Indices lookalike creates (the *lookalike*
layout) add an explicit mapping (``queries.mapping``): the id is a hash of the
filepath, so an add replaces and a delete removes exactly that path; ``metadata`` is
``flattened``; the signature is also a ``dense_vector`` of bytes for HNSW k-nearest-neighbour
search; ``embedding``, when a record has one, is a ``dense_vector`` of 1280 floats indexed as
quantized HNSW (``int8_hnsw``); ``added`` (nanoseconds, kept on replace) orders ``list``.
``preview`` (sizes and thumbnail, base64) is an object with ``enabled: false``: kept in
``_source``, never indexed, read only by ``previews`` (one ``_mget``), never by a search.
A lookalike index created before embeddings or previews existed gets the missing field
when it is opened (adding a field to a mapping is allowed). Legacy indices hold no
embeddings and no previews: an embedding added there is dropped with a warning, a preview
silently (the page shows "no preview"), and an embedding search finds nothing.

Distinct marks ("these two are not copies") live in a second index beside the store's,
``<index>-distinct`` (``queries.distinct_index``; lowercase, as every index name must be),
in either layout. It is created by the first mark, with an explicit strict mapping
(``queries.distinct_mapping``: ``first`` and ``second``, the sorted pair, as keywords),
so a store that never marks anything has no such index and pays one ``HEAD`` request per
read of the marks or delete of an image to learn it, none once the index has been seen.
A mark's id is a hash of the pair (``queries.distinct_id``): marking twice is one mark.
Deleting an image deletes its marks (one ``_delete_by_query``); replacing it keeps them.
The index is named after the store's index name, so marks survive ``lookalike migrate
--swap`` (the name becomes an alias of the new index); the migration does not copy marks
(Match and image-match kept none).

A search sends one body per query orientation in a single ``_msearch`` — image-match's
should-of-terms over the words, or a kNN query — takes the union of the candidates, and
re-ranks them exactly with the normalised distance, so scores equal brute force and only
the candidate stage can miss. Defaults come from bench/candidates.py (an
emulation of both stages at 1k–100k images): kNN k=500 loses nothing measurable; words
at 1,000 keep every original but lose a few matches of crops and padding. An embedding
search does the same with one kNN query per orientation over ``embedding`` and re-ranks
with ``vectors.cosine_distances``, the distance every backend reports. The request bodies
are built by the pure functions of ``queries``, so they can be checked
against Elasticsearch's documentation without a server.

``ElasticsearchBackend`` is imported on first use, so that ``queries`` can be imported
without loading the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import ElasticsearchBackend

__all__ = ["ElasticsearchBackend"]


def __getattr__(name: str) -> Any:
    if name == "ElasticsearchBackend":
        from .store import ElasticsearchBackend

        return ElasticsearchBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
