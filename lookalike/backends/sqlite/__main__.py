"""``python -m lookalike.backends.sqlite KIND DATABASE``: build and publish a generation of
the store's ``signatures`` or ``embeddings`` index — how a store starts a build in the
background (``IndexFolder.build_in_background``). Exit code 0, 1 (not built) or 2 (usage).
"""

from __future__ import annotations

import sys

from . import generations, hnsw
from .generations import run_build

_BUILDS = {"signatures": (generations.build, "rows"), "embeddings": (hnsw.build, "embeddings")}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in _BUILDS:
        print(f"usage: python -m {__package__} {'|'.join(_BUILDS)} DATABASE", file=sys.stderr)
        return 2
    build, what = _BUILDS[args[0]]
    return run_build(build, what, args[1])


if __name__ == "__main__":
    sys.exit(main())
