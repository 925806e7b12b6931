"""The pure parts of the Milvus store: its URLs, its filter expressions and the bounds that
decide when a candidate search is complete (``complete``). No client library, no server.

**Expressions.** Milvus takes filters as text, so every value we put in one is written as
a literal that Milvus reads back as exactly that value (``literal``): strings in double
quotes with ``\\``, ``"``, newline, carriage return and tab escaped — the escapes that
both Milvus's parser (ANTLR grammar, then Go's ``strconv.Unquote``) and Milvus Lite's
read the same way; every other character stands for itself. Nothing else is ever spliced
into an expression, so a filepath, a metadata key or a value cannot add an operator.

JSON keys are a different matter: Milvus cuts ``$meta["…"]`` paths at ``][`` and takes
the text between the quotes as it is, without unescaping, and builds a JSON pointer from
it. A key is therefore only sent when every parser reads it the same way (``portable_key``:
printable, and none of ``" ' \\ [ ] / ~``); a clause on another key is left out of the
expression and applied by the backend to the results (``base.matches_filter``), as every
clause is anyway. A filter sent to Milvus only ever lets through a superset of what the
exact one keeps.

**Completeness.** Milvus ranks candidates by cosine similarity; lookalike ranks them by the
normalised distance d = ‖a − q‖ / (‖a‖ + ‖q‖). For any two vectors with cosine c,
d ≥ √((1 − c) / 2) — equality when their norms are equal — since 2(‖a‖² + ‖q‖² − 2‖a‖‖q‖c)
− (1 − c)(‖a‖ + ‖q‖)² = (1 + c)(‖a‖ − ‖q‖)² ≥ 0. So a record that is not among a query
row's k most similar has d ≥ √((1 − c_k) / 2) to it, c_k being the k-th similarity:
``signature_bound``. For embeddings the distance is 1 − c itself (``embedding_bound``).
``COSINE_SLACK`` covers float32 rounding in Milvus's cosine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ...errors import ConfigError
from ...records import Match
from ..base import redacted

__all__ = [
    "COSINE_SLACK",
    "FIELD_PREFIX",
    "INDEXES",
    "MAX_CANDIDATES",
    "MilvusTarget",
    "check_collection_name",
    "complete",
    "embedding_bound",
    "embedding_floor",
    "filter_expression",
    "in_expression",
    "literal",
    "parse_url",
    "portable_key",
    "signature_bound",
    "signature_floor",
]

INDEXES = ("HNSW", "FLAT", "AUTOINDEX")
MAX_CANDIDATES = 16_384  # Milvus's largest top-k
COSINE_SLACK = 1e-4  # float32 cosine of 648 or 1280 values is off by far less
FIELD_PREFIX = "m:"  # metadata key k is kept in the dynamic field "m:k", for filters
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNPORTABLE_KEY = set("\"'\\[]/~")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")


# -- URLs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MilvusTarget:
    """Where a Milvus store lives: ``uri`` for pymilvus, ``lite`` the Milvus Lite file (None
    for a server), ``shown`` the URL without a password, for messages and stats."""

    uri: str
    lite: str | None
    shown: str


def parse_url(url: str) -> MilvusTarget:
    """``milvus:///relative.db`` or ``milvus:////absolute.db`` (Milvus Lite, a file ending
    in .db, as pymilvus wants), ``milvus://host:19530`` (http), ``milvus+http://…`` or
    ``milvus+https://host…`` (a server or Zilliz Cloud; a path names the database)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("milvus", "milvus+http", "milvus+https"):
        raise ConfigError(f"{url!r} is not a milvus:// URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{url!r}: a Milvus URL takes no query string or fragment")
    if not parts.netloc:
        if parts.scheme != "milvus":
            raise ConfigError(f"{url!r}: Milvus Lite files are written milvus:///path.db")
        path = url.strip()[len("milvus://") :]
        if not path.startswith("/") or len(path) < 2:
            raise ConfigError(f"{url!r}: write milvus:///relative.db or milvus:////absolute.db")
        path = path[1:]
        if not path.endswith(".db") or path.endswith("/.db"):
            raise ConfigError(f"{url!r}: a Milvus Lite file's name ends in .db")
        return MilvusTarget(uri=path, lite=path, shown=url.strip())
    scheme = "https" if parts.scheme == "milvus+https" else "http"
    if parts.hostname is None:
        raise ConfigError(f"{url!r}: no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{url!r}: the port is not a number from 0 to 65535") from None
    uri = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
    return MilvusTarget(uri=uri, lite=None, shown=redacted(uri))


def check_collection_name(name: str) -> str:
    """A Milvus collection name: a letter or underscore, then letters, digits, underscores
    (at most 200, leaving room for the ``_embeddings`` suffix)."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"LOOKALIKE_MILVUS_COLLECTION={name!r}: use letters, digits and underscores,"
            " starting with a letter or underscore, at most 200"
        )
    return name


# -- expressions ----------------------------------------------------------------------------


def literal(value: str | bool | int | float) -> str:
    """``value`` as a Milvus expression literal that reads back as exactly ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("Milvus expressions have no NaN or infinite literals")
        return repr(value)
    if "\x00" in value:
        raise ValueError("Milvus expressions cannot hold NUL characters")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def in_expression(field: str, values: Iterable[str]) -> str:
    """``field in ["a", "b", …]``: records whose ``field`` is one of ``values``."""
    return f"{field} in [{', '.join(literal(v) for v in values)}]"


def portable_key(key: str) -> bool:
    """True if every Milvus parser reads ``metadata["key"]`` as this very key."""
    return bool(key) and key.isprintable() and not _UNPORTABLE_KEY.intersection(key)


def filter_expression(where: Mapping[str, Any] | None) -> str:
    """The clauses of an equality filter that Milvus can evaluate, joined by ``&&``; "" if
    none. Metadata key ``k`` is the dynamic field ``m:k``. A number matches both its
    integer and float spellings (Milvus compares JSON numbers by type), so this keeps a
    superset of ``base.matches_filter``'s records."""
    clauses = []
    for key, value in (where or {}).items():
        if not portable_key(key):
            continue
        path = f"$meta[{literal(FIELD_PREFIX + key)}]"
        if isinstance(value, bool | str):
            clauses.append(f"{path} == {literal(value)}")
        elif isinstance(value, int | float):
            spellings = {literal(value), literal(float(value))}
            if float(value).is_integer() and abs(value) < 2**63:
                spellings.add(literal(int(value)))
            alternatives = " || ".join(f"{path} == {s}" for s in sorted(spellings))
            clauses.append(f"({alternatives})" if len(spellings) > 1 else alternatives)
    return " && ".join(clauses)


# -- completeness bounds --------------------------------------------------------------------


def signature_floor(max_distance: float) -> float:
    """Cosine similarity a signature must exceed (with slack) to lie within ``max_distance``."""
    return 1.0 - 2.0 * max_distance * max_distance - COSINE_SLACK


def signature_bound(similarity: float) -> float:
    """Least normalised distance of a signature whose cosine with the query is at most
    ``similarity`` (as Milvus reported it)."""
    if math.isnan(similarity):
        return 0.0
    return math.sqrt(max(0.0, 1.0 - similarity - COSINE_SLACK) / 2.0)


def embedding_floor(max_distance: float) -> float:
    """Cosine similarity an embedding must exceed (with slack) to lie within ``max_distance``."""
    return 1.0 - max_distance - COSINE_SLACK


def embedding_bound(similarity: float) -> float:
    """Least cosine distance of an embedding whose cosine with the query is at most
    ``similarity``."""
    if math.isnan(similarity):
        return 0.0
    return max(0.0, 1.0 - similarity - COSINE_SLACK)


def complete(
    hits: Sequence[Sequence[tuple[str, float]]],
    k: int,
    pruned: bool,
    found: Sequence[Match],
    limit: int,
    max_distance: float,
    bound: Callable[[float], float],
    constant: float,
) -> bool:
    """Whether no record outside ``found`` can belong in the answer, after a search that
    asked Milvus for each query row's ``k`` most similar records and got ``hits``
    ((filepath, similarity), most similar first); ``bound`` is ``signature_bound`` or
    ``embedding_bound``, ``constant`` the distance of every record through an all-zero
    row (inf if there is none).

    A row that returned fewer than ``k`` hits has seen every record that passes the
    filter; a full row bounds the distance of every record it did not return; a record
    returned but not fetched (``pruned``) is beyond the cutoff through those rows."""
    full = [row for row in hits if len(row) >= k]
    if len(full) < len(hits) and not pruned:
        return True  # every record was fetched and ranked
    least = min([bound(row[-1][1]) for row in full] + [constant])
    if least >= max_distance:
        return True
    return len(found) >= limit and least > found[limit - 1].distance
