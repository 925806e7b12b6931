"""HTTP throughput and latency of `lookalike serve`, against the service called in-process.

A real `lookalike serve` with 2 workers on 127.0.0.1 and a fresh SQLite store, preloaded
with a few hundred photos; 16 client threads then send a mix of /add (25 %) and /search
(75 %) for a fixed time. Reported: requests/s, p50/p99 per endpoint, errors (must be 0),
and the per-request overhead of HTTP: the median latency of one client doing the same
requests one at a time, minus the median of the same calls made on the service directly.

Ingest: ``--ingest`` images added three ways to the same server, each ``--repeats``
times under new filepaths (medians of images/s): one client sending one image per
``/add``; ``--clients`` clients doing so at once; one client sending ``POST /add_batch``
of ``--batch`` images and following the jobs to their end. The ratios of the batch rate
to the other two are the figures of interest.

    python bench/http.py            # 60 s of load
    python bench/http.py --quick    # 10 s
    python bench/http.py --ingest-only
"""

from __future__ import annotations

import sys

# A script's folder comes first on the import path, and this file's name would shadow the
# standard library's ``http`` (which httpx needs): move the folder last, as the other
# benchmarks do.
sys.path.append(sys.path.pop(0))

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common
import httpx
import numpy as np

from lookalike import Settings
from lookalike.service import Lookalike


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s of load instead of 60 s")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preload", type=int, default=500)
    parser.add_argument("--ingest", type=int, default=400, help="images per ingest run")
    parser.add_argument("--batch", type=int, default=100, help="images per /add_batch")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each ingest way")
    parser.add_argument("--ingest-only", action="store_true", help="skip the mixed load")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)

    images = _images(80)
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "bench.db"
        _preload(store, images, args.preload)
        with common.lookalike_serve(store, args.workers) as (url, _):
            ingest = _ingest(url, images, args.ingest, args.batch, args.clients, args.repeats)
            if not args.ingest_only:
                sequential_http = _sequential(url, images, 200)
                load = _load(url, images, seconds, args.clients)
        if not args.ingest_only:
            in_process = _in_process(store, images, 200)

    rates = {way: common.median(values) for way, values in ingest.items()}
    print(
        f"ingest of {args.ingest} images, {args.workers} workers (median images/s of"
        f" {args.repeats}): one /add at a time {rates['one']:.1f}; {args.clients} clients"
        f" {rates['concurrent']:.1f}; /add_batch of {args.batch} {rates['batch']:.1f} ="
        f" {rates['batch'] / rates['one']:.1f}x one at a time,"
        f" {rates['batch'] / rates['concurrent']:.1f}x {args.clients} clients"
    )
    config = {
        "seconds": seconds,
        "clients": args.clients,
        "workers": args.workers,
        "preload": args.preload,
        "ingest": args.ingest,
        "batch": args.batch,
        "repeats": args.repeats,
    }
    ratios = {
        "batch_over_one": rates["batch"] / rates["one"],
        "batch_over_concurrent": rates["batch"] / rates["concurrent"],
    }
    if args.ingest_only:
        figures = {"ingest_images_per_s": ingest, "ingest_median": rates, "ratios": ratios}
        print(f"wrote {common.write_results('http', config, figures)}")
        return

    overhead = {op: sequential_http[op]["p50"] - in_process[op]["p50"] for op in ("add", "search")}
    rows = [
        (
            op,
            load["by_op"][op]["n"],
            load["by_op"][op]["n"] / load["seconds"],
            load["by_op"][op]["p50"],
            load["by_op"][op]["p99"],
            sequential_http[op]["p50"],
            in_process[op]["p50"],
            overhead[op],
        )
        for op in ("add", "search")
    ]
    print(
        f"{args.clients} clients, {args.workers} workers, {load['seconds']:.0f} s on 127.0.0.1; "
        f"{load['total'] / load['seconds']:.1f} requests/s; errors: {load['errors']}"
    )
    print(
        common.table(
            [
                "op",
                "requests",
                "per s",
                "p50 ms",
                "p99 ms",
                "1 client ms",
                "in-process ms",
                "HTTP overhead ms",
            ],
            rows,
        )
    )
    path = common.write_results(
        "http",
        config,
        {
            "ingest_images_per_s": ingest,
            "ingest_median": rates,
            "ratios": ratios,
            "load": load,
            "sequential_http": sequential_http,
            "in_process": in_process,
            "overhead_ms": overhead,
        },
    )
    print(f"wrote {path}")
    if load["errors"]:
        sys.exit(1)


def _images(count: int) -> list[bytes]:
    """640 px JPEGs: scikit-image photos and their random edits, plus 1/f photos."""
    rng = np.random.default_rng(7)
    photos = list(common.photos().values())
    out = []
    for i in range(count):
        if i % 4 == 3:
            image = common.pink_photo(rng, 480, 640)
        else:
            image = common.random_edit(photos[i % len(photos)], rng)
        out.append(common.encode(common.resize_long_side(image, 640), quality=90))
    return out


def _preload(store: Path, images: list[bytes], count: int) -> None:
    with Lookalike(Settings(backend="sqlite:///" + str(store))) as service:
        for i in range(count):
            service.add(f"preload/{i}", images[i % len(images)], {"i": i})


def _request(client: httpx.Client, url: str, op: str, image: bytes, name: str) -> bool:
    if op == "add":
        response = client.post(url + "/add", files={"image": image}, data={"filepath": name})
    else:
        response = client.post(url + "/search", files={"image": image})
    return response.status_code == 200 and response.json()["status"] == "ok"


def _sequential(url: str, images: list[bytes], count: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {"add": [], "search": []}
    with httpx.Client(timeout=60) as client:
        for i in range(count):
            op = "add" if i % 2 else "search"
            started = time.perf_counter()
            if not _request(client, url, op, images[i % len(images)], f"seq/{i}"):
                raise RuntimeError(f"sequential {op} failed")
            times[op].append((time.perf_counter() - started) * 1000)
    return {op: common.summary(values) for op, values in times.items()}


def _in_process(store: Path, images: list[bytes], count: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {"add": [], "search": []}
    with Lookalike(Settings(backend="sqlite:///" + str(store))) as service:
        for i in range(count):
            op = "add" if i % 2 else "search"
            image = images[i % len(images)]
            started = time.perf_counter()
            if op == "add":
                service.add(f"direct/{i}", image)
            else:
                service.search(image)
            times[op].append((time.perf_counter() - started) * 1000)
    return {op: common.summary(values) for op, values in times.items()}


def _ingest(
    url: str, images: list[bytes], count: int, batch: int, clients: int, repeats: int
) -> dict[str, list[float]]:
    """Images/s of each way of adding ``count`` images, ``repeats`` times each."""
    rates: dict[str, list[float]] = {"one": [], "concurrent": [], "batch": []}
    for run in range(repeats):
        names = [f"ingest/{run}/{i}" for i in range(count)]
        for way, add in (("one", _one_by_one), ("concurrent", _concurrent), ("batch", _batches)):
            started = time.perf_counter()
            add(url, images, [f"{way}/{n}" for n in names], batch=batch, clients=clients)
            rates[way].append(count / (time.perf_counter() - started))
    return rates


def _one_by_one(url: str, images: list[bytes], names: list[str], **_: int) -> None:
    with httpx.Client(timeout=60) as client:
        for i, name in enumerate(names):
            if not _request(client, url, "add", images[i % len(images)], name):
                raise RuntimeError(f"add of {name} failed")


def _concurrent(url: str, images: list[bytes], names: list[str], clients: int, **_: int) -> None:
    failed: list[str] = []

    def client_loop(index: int) -> None:
        with httpx.Client(timeout=60) as client:
            for i in range(index, len(names), clients):
                if not _request(client, url, "add", images[i % len(images)], names[i]):
                    failed.append(names[i])

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise RuntimeError(f"{len(failed)} adds failed, e.g. {failed[0]}")


def _batches(url: str, images: list[bytes], names: list[str], batch: int, **_: int) -> None:
    """Every batch sent, then every job followed to its end."""
    with httpx.Client(timeout=120) as client:
        jobs = []
        for start in range(0, len(names), batch):
            part = range(start, min(start + batch, len(names)))
            files = [("image", (f"{i}.jpg", images[i % len(images)], "image/jpeg")) for i in part]
            data = {"filepath": [names[i] for i in part]}
            answer = client.post(url + "/add_batch", files=files, data=data)
            if answer.status_code != 202:
                raise RuntimeError(f"/add_batch answered {answer.status_code}: {answer.text}")
            jobs.append(answer.json()["result"][0]["job"])
        for job in jobs:
            while True:
                [state] = client.get(f"{url}/jobs/{job}", params={"limit": batch}).json()["result"]
                if state["state"] != "running":
                    break
                time.sleep(0.02)
            statuses = {r["status"] for r in state.get("results", [])}
            if state["state"] != "done" or statuses != {"added"}:
                raise RuntimeError(f"batch job {job} ended {state['state']}: {statuses}")


def _load(url: str, images: list[bytes], seconds: float, clients: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"add": [], "search": []}
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(timeout=60) as client:
            i = 0
            while time.monotonic() < stop_at:
                op = "add" if rng.random() < 0.25 else "search"
                started = time.perf_counter()
                try:
                    good = _request(client, url, op, rng.choice(images), f"load/{index}/{i}")
                except httpx.HTTPError as error:
                    good, detail = False, repr(error)
                else:
                    detail = "bad status"
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if good:
                        times[op].append(elapsed)
                    else:
                        errors.append(f"{op}: {detail}")
                i += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "seconds": elapsed,
        "total": sum(len(v) for v in times.values()),
        "errors": len(errors),
        "error_samples": errors[:5],
        "by_op": {op: common.summary(values) for op, values in times.items()},
    }


if __name__ == "__main__":
    main()
