"""What a hybrid search costs next to a signature search, on one store, in-process.

**Store**: a SQLite file of ``--size`` images (default 100k): the scikit-image photos, added
through the service (decoded, signed, embedded, with their thumbnails), and distractors
with realistic signatures (``synthetic.py``) and clustered synthetic embeddings
(``embeddings_index.py``), added in bulk; then both indices are built (``reindex``), as
a store of that size searches them.

**Queries**: every photo under a few everyday edits (JPEG, a crop to 75 %, a quarter
turn, a mirror) and DISC21-style ones (a screenshot, a turned crop, a mirrored crop),
as PNG bytes, so that each search decodes its query as a request would.

**Measured**: the latency of ``Lookalike.search`` (decode included) for ``signature`` and
for ``hybrid`` with each ``LOOKALIKE_HYBRID_ORIENTATIONS`` (the query embedded as it is
and mirrored, as it is, or in all 8 orientations), the searches interleaved query by
query over ``--repeats`` passes; median and p90 per configuration, the ratio of each
hybrid median to the signature's, and the share of queries whose original comes first.

    python bench/hybrid.py [--size 100000] [--repeats 3]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: see search.py

import argparse
import tempfile
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import embeddings_index
import numpy as np
import synthetic
from common import crop, encode, jpeg, mirror, percentile, photos, rot90, table, write_results
from disc import disc_edit

from lookalike.config import HYBRID_ORIENTATIONS, Settings
from lookalike.records import Record
from lookalike.service import Lookalike

EDITS = {
    "JPEG quality 20": lambda name, image: jpeg(image, 20),
    "crop 75 %": lambda name, image: crop(image, 0.75),
    "rotate 90°": lambda name, image: rot90(image, 1),
    "mirror": lambda name, image: mirror(image),
    **{
        edit: partial(lambda name, image, edit: disc_edit(edit, name, 7)(image).image, edit=edit)
        for edit in (
            "screenshot (phone or web page)",
            "rotate 90° + crop",
            "mirror + crop + JPEG",
        )
    },
}


def distractors(count: int, seed: int = 11) -> Iterator[Record]:
    """Records of realistic signatures and clustered embeddings, 10,000 at a time."""
    middle = embeddings_index.centres(seed)
    for k, start in enumerate(range(0, count, 10_000)):
        size = min(10_000, count - start)
        _, signatures = synthetic.chunk(seed, k, size)
        vectors = embeddings_index.chunk(seed, k, size, middle)
        for i in range(size):
            yield Record(f"d{start + i:08d}", signatures[i], embedding=vectors[i])


def build(folder: Path, size: int) -> tuple[Settings, dict[str, Any]]:
    settings = Settings(
        backend="sqlite:///" + str(folder / "hybrid.db"), embeddings=True, embedding_threads=0
    )
    started = time.perf_counter()
    with Lookalike(settings) as service:
        pictures = photos()
        for name, image in pictures.items():
            service.add(name, encode(image, "PNG"))
        service.add_many(distractors(size - len(pictures)))
        added = time.perf_counter() - started
        stats = service.reindex()
    return settings, {"add_s": added, "build_s": time.perf_counter() - started - added, **stats}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    pictures = photos()
    queries = [
        (name, edit, encode(make(name, image), "PNG"))
        for name, image in pictures.items()
        for edit, make in EDITS.items()
    ]
    with tempfile.TemporaryDirectory() as folder:
        settings, store = build(Path(folder), args.size)
        print(f"store of {args.size} images: {store['add_s']:.0f} s to add, "
              f"{store['build_s']:.0f} s to index", flush=True)  # fmt: skip
        configurations = {"signature": ("signature", "mirror")} | {
            f"hybrid ({o})": ("hybrid", o) for o in HYBRID_ORIENTATIONS
        }
        services = {
            label: Lookalike(settings.replace(hybrid_orientations=o))
            for label, (_, o) in configurations.items()
        }
        for label, (method, _) in configurations.items():  # warm: model, indices, caches
            services[label].search(queries[0][2], method=method)
        times: dict[str, list[float]] = {label: [] for label in configurations}
        first: dict[str, list[bool]] = {label: [] for label in configurations}
        for _ in range(args.repeats):
            for name, _, query in queries:
                for label, (method, _) in configurations.items():
                    started = time.perf_counter()
                    found = services[label].search(query, method=method)
                    times[label].append((time.perf_counter() - started) * 1000)
                    first[label].append(bool(found) and found[0].filepath == name)
        for service in services.values():
            service.close()
    base = float(np.median(times["signature"]))
    rows, results = [], {}
    for label in configurations:
        p50 = float(np.median(times[label]))
        results[label] = {
            "p50_ms": p50,
            "p90_ms": percentile(times[label], 90),
            "ratio_to_signature": p50 / base,
            "found_first": float(np.mean(first[label])),
        }
        r = results[label]
        rows.append([label, f"{p50:.1f}", f"{r['p90_ms']:.1f}", f"{r['ratio_to_signature']:.2f}",
                     f"{r['found_first']:.3f}"])  # fmt: skip
    print(table(["search", "p50 ms", "p90 ms", "× signature", "found first"], rows))
    config = {**vars(args), "queries": len(queries), "edits": list(EDITS)}
    print(write_results("hybrid", config, {"store": store, "searches": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
