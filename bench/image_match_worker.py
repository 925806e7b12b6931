"""The image-match 1.1.2 half of ``bench/signature.py``; runs in image-match's environment.

Not a benchmark of its own: ``signature.py`` starts it with the interpreter of a venv
that has image-match (``--image-match-python``) and talks to it over stdin/stdout, one
JSON object per line, so that rounds of image-match and lookalike can alternate:

* ``{"cmd": "info"}`` → versions and threadpoolctl's view of the BLAS pools;
* ``{"cmd": "time", "file": PATH, "reps": N}`` → ``{"seconds": [...]}``, N timed calls of
  ``ImageSignature().generate_signature(bytes, bytestream=True)`` on the file's bytes;
* ``{"cmd": "signatures", "files": [PATH, ...]}`` → ``{"signatures": [[648 ints], ...]}``;
* ``{"cmd": "quit"}``.

It imports only NumPy, Pillow, scikit-image and image-match (never ``lookalike``).
"""

from __future__ import annotations

import sys

# A script's folder comes first on the import path: move it last, so that the standard
# library wins over files in bench/ that share its names (bench/http.py shadows `http`).
sys.path.append(sys.path.pop(0))

import json
import time
from functools import cache
from typing import Any


def main() -> int:
    from image_match.goldberg import ImageSignature  # type: ignore[import-not-found]

    gis = ImageSignature()

    @cache
    def data(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    for line in sys.stdin:
        request: dict[str, Any] = json.loads(line)
        command = request["cmd"]
        if command == "quit":
            break
        if command == "info":
            reply: dict[str, Any] = info()
        elif command == "time":
            raw = data(request["file"])
            seconds = []
            for _ in range(int(request["reps"])):
                start = time.perf_counter()
                gis.generate_signature(raw, bytestream=True)
                seconds.append(time.perf_counter() - start)
            reply = {"seconds": seconds}
        elif command == "signatures":
            reply = {
                "signatures": [
                    [int(v) for v in gis.generate_signature(data(p), bytestream=True)]
                    for p in request["files"]
                ]
            }
        else:
            reply = {"error": f"unknown command {command!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


def info() -> dict[str, Any]:
    from importlib.metadata import version

    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        **{name: version(name) for name in ("image_match", "numpy", "pillow", "scikit-image")},
    }
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found,unused-ignore]

        out["threadpools"] = [
            {k: pool.get(k) for k in ("internal_api", "version", "num_threads")}
            for pool in threadpool_info()
        ]
    except ImportError:
        out["threadpools"] = "threadpoolctl not installed"
    return out


if __name__ == "__main__":
    sys.exit(main())
