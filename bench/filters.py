"""Search latency of `lookalike serve` while other clients send huge metadata filters.

A real `lookalike serve` (2 workers, a fresh SQLite store of ``--images`` photos) on
127.0.0.1; ``--hostile`` clients send `/search` requests whose `filter` has ``--keys``
keys (990: 12 KB of JSON) as fast as they are answered, while one client sends ordinary
searches and records their latency, for ``--seconds``. Printed: the ordinary searches'
median and p90, and the statuses the hostile requests got; JSON in bench/results.

    python bench/filters.py [--seconds 20] [--hostile 4] [--keys 990]
"""

from __future__ import annotations

import sys

# A script's folder comes first on the import path, and bench/http.py would shadow the
# standard library's ``http`` (which httpx needs): move the folder last.
sys.path.append(sys.path.pop(0))

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from common import (
    encode,
    lookalike_serve,
    percentile,
    photos,
    resize_long_side,
    table,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--hostile", type=int, default=4)
    parser.add_argument("--keys", type=int, default=990)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    pictures = [encode(resize_long_side(p, 640)) for p in photos().values()]
    hostile_filter = json.dumps({f"key{i}": f"value{i}" for i in range(args.keys)})
    with (
        tempfile.TemporaryDirectory() as folder,
        lookalike_serve(Path(folder) / "store.db", 2) as (url, _),
    ):
        with httpx.Client(timeout=120) as client:
            for i in range(args.images):
                fields = {"filepath": f"p/{i}", "metadata": json.dumps({"i": i})}
                client.post(url + "/add", files={"image": pictures[i % len(pictures)]}, data=fields)
        stop = threading.Event()
        statuses: Counter[int] = Counter()

        def hostile() -> None:
            with httpx.Client(timeout=120) as c:
                while not stop.is_set():
                    r = c.post(url + "/search", files={"image": pictures[0]},
                               data={"filter": hostile_filter})  # fmt: skip
                    statuses[r.status_code] += 1

        threads = [threading.Thread(target=hostile) for _ in range(args.hostile)]
        for t in threads:
            t.start()
        latencies = []
        deadline = time.monotonic() + args.seconds
        with httpx.Client(timeout=120) as c:
            n = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                r = c.post(url + "/search", files={"image": pictures[n % len(pictures)]})
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
                n += 1
        stop.set()
        for t in threads:
            t.join()
    results = {
        "ordinary_searches": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "hostile_statuses": dict(statuses),
    }
    print(f"{args.hostile} clients sending {args.keys}-key filters for {args.seconds:g} s")
    print(table(["searches", "p50", "p90", "hostile statuses"], [[
        results["ordinary_searches"], f"{results['p50_ms']:.0f} ms",
        f"{results['p90_ms']:.0f} ms", json.dumps(results["hostile_statuses"])]]))  # fmt: skip
    print(write_results("filters", vars(args), results))


if __name__ == "__main__":
    main()
