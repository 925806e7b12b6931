"""The MongoDB store (``lookalike[mongodb]``): ``store`` (the backend, pymongo) and
``documents`` (records as documents, URLs, filters: pure, no client).

``LOOKALIKE_BACKEND=mongodb://host[:port]/database.collection`` (or ``mongodb+srv://``).
The collection holds image-match's documents (``documents`` says which fields), so a
collection that image-match's ``SignatureMongo`` wrote serves ``lookalike serve`` as it
is, and ``SignatureMongo`` can search one that lookalike wrote.

**Writes.** An add finds the documents of its batch's paths in one query, then updates
each found one in place (by ``_id``, which it keeps: a replaced record keeps its place in
``list``, which sorts by ``_id``) and inserts the others. image-match allowed several
documents with one path, and two processes adding one new path at once can leave two:
``get`` reads the first, a search reports the path once, ``delete`` removes them all, and
the next add of that path keeps the first and removes the others. An index on ``path`` is
made if missing; image-match's one-per-word indexes are left as they are (the search does
not use them).

**Search.** Exact: the documents passing the filter are read in batches (path,
metadata and the signature as lookalike's 648 bytes, or image-match's list where a
document has no bytes: no more) and measured with ``signature.distances`` or
``vectors.cosine_distances``, as the memory store measures them; this store suits
collections of up to a few hundred thousand images.
A metadata filter becomes ``$eq`` clauses on plain keys only, as a first cut that every
matching document passes; the exact test (``records.matches_filter``) runs on what comes
back. No key or value of a filter or of metadata is ever read as an operator.

``MongoBackend`` is imported on first use, so that ``documents`` can be imported without
loading the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import MongoBackend

__all__ = ["MongoBackend"]


def __getattr__(name: str) -> Any:
    if name == "MongoBackend":
        from .store import MongoBackend

        return MongoBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
