"""Peak memory of a `lookalike serve` worker under concurrent searches with huge images.

A real `lookalike serve` (one worker process, a fresh SQLite store) on 127.0.0.1 is sent
``--clients`` concurrent ``/search`` requests, each with the same 7000×7000 grey PNG
(49 megapixels, under the default 50 MP limit, a few hundred KB as a file), once with
``LOOKALIKE_MAX_DECODES`` as large as the number of clients (every request decodes at
once: how the service behaved before decode slots) and once with the default. The
figure is the worker's peak resident memory (VmHWM) above its resident memory before
the burst, read from /proc; also the statuses answered and the burst's wall time.

    python bench/memory.py [--clients 8] [--side 7000]
"""

from __future__ import annotations

import sys

# A script's folder comes first on the import path, and bench/http.py would shadow the
# standard library's ``http`` (which httpx needs): move the folder last.
sys.path.append(sys.path.pop(0))

import argparse
import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from common import lookalike_serve, table, write_results
from PIL import Image


def huge_png(side: int) -> bytes:
    """A grey picture with detail everywhere (gradients and rings) that PNG packs small."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    grey = 127 + 60 * np.sin(12 * x) * np.cos(9 * y) + 60 * np.sin(40 * np.hypot(x - 0.5, y - 0.4))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def status_of(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def burst(url: str, image: bytes, clients: int) -> list[int]:
    def one(_: int) -> int:
        with httpx.Client(timeout=600) as client:
            return client.post(url + "/search", files={"image": image}).status_code

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(clients)))


def measure(image: bytes, clients: int, max_decodes: int, folder: Path) -> dict[str, object]:
    store = folder / f"store-{max_decodes}.db"
    settings = {"LOOKALIKE_MAX_DECODES": str(max_decodes), "LOOKALIKE_DECODE_WAIT": "600"}
    with lookalike_serve(store, 1, **settings) as (url, pid):
        burst(url, huge_png(256), 1)  # imports and first-call set-up out of the figure
        before = status_of(pid)
        started = time.perf_counter()
        statuses = burst(url, image, clients)
        seconds = time.perf_counter() - started
        after = status_of(pid)
    return {
        "max_decodes": max_decodes,
        "statuses": statuses,
        "rss_before_bytes": before["VmRSS"],
        "peak_bytes": after["VmHWM"],
        "peak_above_before_bytes": after["VmHWM"] - before["VmRSS"],
        "rss_after_bytes": after["VmRSS"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--side", type=int, default=7000)
    args = parser.parse_args()
    image = huge_png(args.side)
    pixels = args.side * args.side
    rows, results = [], []
    with tempfile.TemporaryDirectory() as folder:
        for max_decodes in (args.clients, 2, 1):
            found = measure(image, args.clients, max_decodes, Path(folder))
            results.append(found)
            mb = 1e6
            rows.append(
                [
                    max_decodes,
                    f"{found['peak_above_before_bytes'] / mb:.0f} MB",  # type: ignore[operator]
                    f"{found['peak_above_before_bytes'] / pixels / args.clients:.1f}",  # type: ignore[operator]
                    f"{found['rss_after_bytes'] / mb:.0f} MB",  # type: ignore[operator]
                    f"{found['seconds']:.1f} s",
                    " ".join(map(str, sorted(set(found["statuses"])))),  # type: ignore[call-overload]
                ]
            )
    print(f"{args.clients} concurrent /search, {args.side}×{args.side} PNG ({len(image):,} bytes)")
    headers = ["max decodes", "peak above idle", "B/px/request", "RSS after", "burst", "statuses"]
    print(table(headers, rows))
    config = {"clients": args.clients, "side": args.side, "png_bytes": len(image)}
    print(write_results("memory", config, {"runs": results}))


if __name__ == "__main__":
    main()
