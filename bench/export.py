"""Export and import speed: a collection written to the export format and loaded back.

**Collection**: ``--images`` records in a SQLite store: realistic synthetic signatures
(``synthetic.py``), metadata, and previews with a content hash and file time; with
``--thumbnails``, each preview also holds an 8 kB thumbnail (a thumbnail is most of an
export's bytes). No embeddings unless ``--embeddings``.

**Figures** (medians of ``--repeats``, each step a ``lookalike`` process of its own, as a
user runs it): ``lookalike export FILE.jsonl.gz``, then ``lookalike import`` of it into
a fresh SQLite store and, with ``--milvus``, into a fresh Milvus Lite file; records/s
and the export's size in bytes per record.

    python bench/export.py [--images 100000] [--thumbnails] [--milvus]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/http.py would shadow the standard library's

import argparse
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import synthetic
from common import median, table, write_results

from lookalike import Settings
from lookalike.records import Preview, Record
from lookalike.service import Lookalike
from lookalike.vectors import EMBEDDING_DIMENSION


def make_store(url: str, images: int, thumbnails: bool, embeddings: bool) -> None:
    rng = np.random.default_rng(11)
    thumbnail = b"\xff\xd8" + rng.bytes(8_000) if thumbnails else None
    with Lookalike(Settings(backend=url)) as service:
        for index in range(-(-images // 10_000)):
            _, sigs = synthetic.chunk(11, index)
            start = index * 10_000
            count = min(len(sigs), images - start)
            vectors = None
            if embeddings:
                raw = rng.standard_normal((count, EMBEDDING_DIMENSION)).astype(np.float32)
                vectors = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float16)
            service.add_many(
                Record(
                    f"photos/{start + i:07d}.jpg",
                    sigs[i],
                    {"shop": f"s{(start + i) % 97}", "n": start + i},
                    embedding=None if vectors is None else vectors[i].astype(np.float32),
                    preview=Preview(
                        640,
                        480,
                        50_000 + i,
                        thumbnail,
                        sha256=hashlib.sha256(sigs[i].tobytes()).hexdigest(),
                        modified=1.7e9 + i,
                    ),
                )
                for i in range(count)
            )


def timed(*command: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lookalike", *command, "--quiet"],
        check=True,
        env=env,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--thumbnails", action="store_true")
    parser.add_argument("--embeddings", action="store_true")
    parser.add_argument("--milvus", action="store_true", help="also import into Milvus Lite")
    args = parser.parse_args()

    times: dict[str, list[float]] = {"export": [], "import sqlite": [], "import milvus": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        source = f"sqlite:///{folder}/source.db"
        make_store(source, args.images, args.thumbnails, args.embeddings)
        exported = folder / "all.jsonl.gz"
        for run in range(args.repeats):
            times["export"].append(timed("--store", source, "export", str(exported)))
            target = f"sqlite:///{folder}/target{run}.db"
            times["import sqlite"].append(timed("--store", target, "import", str(exported)))
            if args.milvus:
                lite = f"milvus:///{folder}/milvus{run}.db"
                times["import milvus"].append(timed("--store", lite, "import", str(exported)))
        size = exported.stat().st_size
    rows = [
        (step, args.images, median(values), args.images / median(values))
        for step, values in times.items()
        if values
    ]
    print(table(["step", "records", "seconds", "records/s"], rows))
    print(f"export: {size / args.images:.0f} bytes per record (gzip)")
    path = write_results(
        "export",
        vars(args),
        {
            "seconds": {k: v for k, v in times.items() if v},
            "records_per_s": {step: rate for step, _, _, rate in rows},
            "bytes_per_record": size / args.images,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
