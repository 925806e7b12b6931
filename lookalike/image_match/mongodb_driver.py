"""image-match's MongoDB driver, ``SignatureMongo``, for ``pymongo`` 4.

Documents keep image-match's layout (``path``, ``signature``, ``metadata``,
``simple_word_0`` …), with one index per word as its driver made them. A search looks up
the documents that share each word with the query, skips a word shared by more than
``maximum_matches`` documents (it says little), and measures the rest exactly. image-match
ran the words in worker processes; one query after another is as fast against a server
and keeps the collection object in one process, so ``n_parallel_words`` and
``process_timeout`` are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .signature_database_base import Record, SignatureDatabaseBase, normalized_distance

__all__ = ["SignatureMongo"]


class SignatureMongo(SignatureDatabaseBase):
    """image-match's signatures in a MongoDB collection (a ``pymongo`` ``Collection``).
    Other arguments go to ``SignatureDatabaseBase``."""

    def __init__(self, collection: Any, *args: Any, **kwargs: Any) -> None:
        self.collection = collection
        super().__init__(*args, **kwargs)
        self.index_names = [f"simple_word_{i}" for i in range(self.N)]

    def search_single_record(
        self,
        rec: Record,
        n_parallel_words: int | None = 1,
        word_limit: int | None = None,
        process_timeout: float | None = None,
        maximum_matches: int = 1000,
    ) -> list[Record]:
        """The documents within ``distance_cutoff`` of a record that share one of its
        first ``word_limit`` words (all by default): ``dist``, ``path``, ``id``,
        ``metadata``."""
        query = np.array(rec["signature"])
        matches: dict[Any, Record] = {}
        for name in self.index_names[: self.N if word_limit is None else word_limit]:
            # $eq: the value is matched as it is, whatever it holds
            word = {name: {"$eq": rec[name]}}
            if self.collection.count_documents(word, limit=maximum_matches + 1) > maximum_matches:
                continue
            for doc in self.collection.find(word, ["_id", "signature", "path", "metadata"]):
                if doc["_id"] in matches:
                    continue
                dist = normalized_distance(query[None, :], np.array(doc["signature"]))[0]
                if dist < self.distance_cutoff:
                    matches[doc["_id"]] = {
                        "dist": dist,
                        "path": doc.get("path"),
                        "id": doc["_id"],
                        "metadata": doc.get("metadata"),
                    }
        return list(matches.values())

    def insert_single_record(self, rec: Record, refresh_after: bool = False) -> None:
        """Insert one record; the first insert into a collection builds the word indexes."""
        self.collection.insert_one(rec)
        if len(self.collection.index_information()) <= 1:
            self.index_collection()

    def index_collection(self) -> None:
        """One ascending index per word, as image-match's driver made them."""
        for name in self.index_names:
            self.collection.create_index(name)
