"""Re-running ``lookalike add`` over a folder it has stored: what skipping unchanged files
saves.

**Collection**: ``--files`` colour 1/f JPEGs of ``--width`` × ``--height`` (distinct
random fields, ~5 kB each at the default 160×120), written once to ``--dir`` and re-used
by later runs.

**Figures**: the wall time of ``lookalike add DIR --quiet``, each run a process of its own
on one SQLite store: the first run (a fresh store), a re-run with nothing changed (the
median of ``--repeats``), and a re-run after every file's modification time moved
(equal lengths, so each file is read once more and hashed; median of ``--repeats``), each
also as a share of the first run.

    python bench/reingest.py [--files 100000] [--dir /tmp/lookalike-reingest]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/http.py would shadow the standard library's

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common import encode, median, pink_fields, table, write_results


def make_folder(folder: Path, files: int, width: int, height: int, seed: int = 3) -> None:
    """``files`` distinct JPEGs in ``folder`` (kept: made only where missing), 1,000 to a
    subfolder."""
    rng = np.random.default_rng(seed)
    for start in range(0, files, 1000):
        sub = folder / f"{start // 1000:04d}"
        count = min(1000, files - start)
        if sub.is_dir() and len(os.listdir(sub)) == count:
            continue
        sub.mkdir(parents=True, exist_ok=True)
        luma = pink_fields(rng, count, (height, width), contrast=(0.12, 0.25))
        tints = rng.uniform(-0.15, 0.15, size=(count, 1, 1, 3))
        rgb = np.clip(np.rint((luma[..., None] + tints) * 255), 0, 255).astype(np.uint8)
        for i in range(count):
            (sub / f"{i:04d}.jpg").write_bytes(encode(rgb[i], quality=85))


def add(store: Path, folder: Path) -> tuple[float, str]:
    """One ``lookalike add`` run: its wall time and summary line."""
    command = [sys.executable, "-m", "lookalike", "--store", f"sqlite:///{store}"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "add", str(folder), "--quiet"], capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def touch_all(folder: Path) -> None:
    """Move every file's modification time forward, keeping its bytes."""
    moved = time.time() + 60
    for root, _, names in os.walk(folder):
        for name in names:
            os.utime(os.path.join(root, name), (moved, moved))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "reingest")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = args.dir / f"{args.files}-{args.width}x{args.height}"
    make_folder(folder, args.files, args.width, args.height)
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "store.db"
        first, first_line = add(store, folder)
        assert f"added {args.files} images" in first_line, first_line
        unchanged = [add(store, folder) for _ in range(args.repeats)]
        assert all(f"{args.files} unchanged" in line for _, line in unchanged), unchanged
        touch_all(folder)
        touched = [add(store, folder) for _ in range(args.repeats)]
        assert all(f"{args.files} unchanged" in line for _, line in touched), touched
    rerun = median(t for t, _ in unchanged)
    rehash = median(t for t, _ in touched)
    results = {
        "files": args.files,
        "folder_bytes": sum(p.stat().st_size for p in folder.rglob("*.jpg")),
        "first_seconds": first,
        "first_images_per_second": args.files / first,
        "unchanged_seconds": rerun,
        "unchanged_share_of_first": rerun / first,
        "touched_seconds": rehash,
        "touched_share_of_first": rehash / first,
        "summaries": {"first": first_line, "unchanged": unchanged[0][1]},
    }
    print(
        table(
            ["files", "first run", "re-run, unchanged", "re-run, times moved"],
            [
                [
                    args.files,
                    f"{first:.1f} s",
                    f"{rerun:.1f} s ({rerun / first:.1%})",
                    f"{rehash:.1f} s ({rehash / first:.1%})",
                ]
            ],
        )
    )
    print(re.sub(r"\s+", " ", unchanged[0][1]))
    print(write_results("reingest", vars(args), results))


if __name__ == "__main__":
    main()
