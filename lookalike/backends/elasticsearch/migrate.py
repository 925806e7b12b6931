"""``lookalike migrate``: an index written by Match or image-match (random ids, dynamic
mapping) copied into lookalike's layout, run by ``ElasticsearchBackend.migrate``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BackendUnavailable, ConfigError
from ...records import Record
from ..base import checked_record
from .queries import EMBEDDING, LAYOUT_VERSION, PREVIEW, SOURCE, embedding_of, hits_of, preview_of

if TYPE_CHECKING:
    from .index import Index

__all__ = ["copy_index"]


def copy_index(
    source: Index,
    destination: Index,
    *,
    swap: bool,
    batch: int,
    progress: Callable[[int], object] | None,
) -> dict[str, Any]:
    """Copy the ``source`` index into ``destination`` (created if missing, in lookalike's
    layout).

    Documents are read in path order; after each batch the last path reached is kept
    in the target's mapping ``_meta``, so a rerun continues where one stopped. Legacy
    duplicates of a path collapse into one document (the last read). With ``swap``,
    once both hold the same number of paths, one atomic ``_aliases`` request deletes
    the source index and makes its name an alias of the target: clients keep their
    ``ELASTICSEARCH_INDEX``. ``progress`` is called with each batch's size."""
    es, call, target = source.es, source.call, destination.name
    if not source.exists():
        raise ConfigError(f"there is no index {source.name!r} to migrate")
    if destination.layout().legacy:
        raise ConfigError(f"{target!r} exists and is not a lookalike index")
    answer = call(lambda: es.indices.get_mapping(index=target))
    meta = dict(next(iter(answer.values()))["mappings"].get("_meta") or {})
    after = meta.get("migrated_until")
    paths = int(meta.get("migrated_paths", 0))  # distinct paths copied, across runs
    last = after[0] if after else None
    key = source.layout().path
    copied = 0
    while True:
        body: dict[str, Any] = {
            "size": batch,
            "sort": [{key: "asc"}],
            "_source": [*SOURCE, EMBEDDING, PREVIEW],  # named: 9.2+ omits vectors otherwise
        }
        if after is not None:
            body["search_after"] = after
        hits = hits_of(call(partial(es.search, index=source.name, **body)))
        if not hits:
            break
        records = [
            checked_record(
                Record(
                    h["_source"]["path"],
                    np.asarray(h["_source"]["signature"]),
                    h["_source"].get("metadata"),
                    embedding=embedding_of(h["_source"]),
                    preview=None if destination.no_previews else preview_of(h["_source"]),
                )
            )
            for h in hits
        ]
        if destination.no_embeddings and any(r.embedding is not None for r in records):
            raise BackendUnavailable(
                f"{target!r} cannot hold the embeddings of {source.name!r}:"
                f" {destination.no_embeddings}"
            )
        destination.write(records)
        for record in records:  # in path order: a duplicate follows its first
            paths += record.filepath != last
            last = record.filepath
        after = hits[-1]["sort"]
        meta.update(lookalike=LAYOUT_VERSION, migrated_until=after, migrated_paths=paths)
        call(lambda: es.indices.put_mapping(index=target, meta=meta))
        copied += len(hits)
        if progress is not None:
            progress(len(hits))
    call(lambda: es.indices.refresh(index=target))
    facts = {"copied": copied, "source_paths": paths, "target_count": destination.count()}
    if swap:
        if facts["target_count"] != paths:
            raise BackendUnavailable(
                f"not swapping: {target!r} holds {facts['target_count']} documents,"
                f" {source.name!r} {paths} paths; run the migration again"
            )
        actions = [
            {"add": {"index": target, "alias": source.name}},
            {"remove_index": {"index": source.name}},
        ]
        call(lambda: es.indices.update_aliases(actions=actions))
        facts["swapped"] = True
    return facts
