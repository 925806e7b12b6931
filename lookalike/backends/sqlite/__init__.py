"""The default store: a SQLite file is the truth, the search state is derived from it.

* ``store`` — :class:`SQLiteBackend`: the rows, transactions, the catch-up;
* ``signatures``, ``embeddings`` — what a process keeps to search each column;
* ``generations`` — the index folders beside the database: publish, background build;
* ``ivf``, ``hnsw`` — the two derived indices (signatures, embeddings).

``python -m lookalike.backends.sqlite KIND DATABASE`` builds and publishes a generation of
an index (``__main__``).
"""

from .store import SQLiteBackend

__all__ = ["SQLiteBackend"]
