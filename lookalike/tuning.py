"""Process tuning for throughput, applied by the command line before it starts workers.

Two settings matter on Linux, both measured (see bench/search.py's ingest figures):

* glibc returns large freed blocks to the kernel at once and faults them back in on the
  next image; in a virtual machine a page fault is dear, and a 640 px image costs about
  twice its decoding time in faults. Raising malloc's mmap and trim thresholds keeps
  those blocks in the process for the next image.
  A server keeps blocks up to a smaller size (``SERVE_MMAP_THRESHOLD``): those of
  ordinary images stay, while the arrays of a huge one are returned as soon as it is
  done, so that a burst of 49-megapixel images does not leave gigabytes behind in
  every thread's heap (measured by bench/memory.py).
* With one worker process per core, a BLAS thread pool in each worker only oversubscribes
  the cores; one BLAS thread per worker is faster and steadier.

Values the user has set in the environment are kept.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["SERVE_MMAP_THRESHOLD", "prepare_worker_environment", "tune_this_process"]

SERVE_MMAP_THRESHOLD = 8 << 20
_MMAP_THRESHOLD = 256 << 20
# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def prepare_worker_environment(
    *, blas_threads: int | None = 1, mmap_threshold: int = _MMAP_THRESHOLD
) -> None:
    """Set defaults that worker processes started from now on inherit."""
    defaults = {
        "MALLOC_MMAP_THRESHOLD_": str(mmap_threshold),
        "MALLOC_TRIM_THRESHOLD_": str(2 * mmap_threshold),
    }
    if blas_threads is not None:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            defaults[name] = str(blas_threads)
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


def tune_this_process(mmap_threshold: int = _MMAP_THRESHOLD) -> bool:
    """Raise this process's malloc thresholds now (glibc only); True if it was done."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        # The C library is already loaded: look mallopt up there, no ldconfig run needed.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        and mallopt(_M_TRIM_THRESHOLD, 2 * mmap_threshold)
    )
