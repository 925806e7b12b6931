"""``python -m lookalike.backends.sqlite KIND DATABASE``: build and publish a generation of
the store's ``signatures`` or ``embeddings`` index — how a store starts a build in the
background (``IndexFolder.build_in_background``), writing one line of outcome to the
folder's build.log. Exit code 0, 1 (not built) or 2 (usage).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from .embeddings import EMBEDDINGS
from .signatures import SIGNATURES

KINDS = {kind.name: kind for kind in (SIGNATURES, EMBEDDINGS)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in KINDS:
        print(f"usage: python -m {__package__} {'|'.join(KINDS)} DATABASE", file=sys.stderr)
        return 2
    kind = KINDS[args[0]]
    try:
        header = kind.build(Path(args[1]))
    except (ValueError, OSError, sqlite3.Error) as error:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} index not built: {error}", flush=True)
        return 1
    print(
        f"{time.strftime('%Y-%m-%dT%H:%M:%S')} built {header['name']}: {header['count']}"
        f" {kind.name} in {header['build_seconds']:.1f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
