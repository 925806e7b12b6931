"""The command line: ``lookalike serve | add | search | compare | delete | count | list | info
| reindex | migrate | duplicates``.

Each command translates its arguments for the service and prints the answer. Errors
become one line on stderr and an exit code, mapped in one place (``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, TextIO

from .. import export, tuning
from ..config import METHODS, Settings
from ..errors import (
    BackendUnavailable,
    ConfigError,
    FetchError,
    InvalidImage,
    InvalidRequest,
    LookalikeError,
    NotFound,
    Overloaded,
)
from ..service import Lookalike

__all__ = ["EXIT_CODES", "Progress", "json_object", "main", "shown"]

# Most specific first: the first matching class decides.
EXIT_CODES: tuple[tuple[type[LookalikeError], int], ...] = (
    (InvalidRequest, 2),
    (ConfigError, 2),
    (NotFound, 3),
    (InvalidImage, 4),
    (FetchError, 4),
    (BackendUnavailable, 5),
    (Overloaded, 5),
    (LookalikeError, 1),
)
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".mpo"}
)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command with the settings of ``environ`` (default: the process's
    environment); returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if environ is None else environ)
        if args.store:
            settings = settings.replace(backend=args.store)
        if args.run is None:
            from .serve import serve  # the web framework and server only for this command

            return serve(
                settings.replace(
                    host=args.host or settings.host,
                    port=args.port or settings.port,
                    workers=args.workers or settings.workers,
                )
            )
        with Lookalike(settings) as service:
            result: int = args.run(service, args)
            return result
    except LookalikeError as error:
        print(f"lookalike: {shown(str(error))}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES if isinstance(error, kind))
    except KeyboardInterrupt:
        print("lookalike: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `lookalike list | head`
        return 0


def shown(text: str) -> str:
    """Text as it may reach a terminal: characters that are not printable (CR, LF, escape
    sequences, …) written as their escapes, so a stored name cannot forge output."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike", description="Reverse image search: have we seen this picture before?"
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: $LOOKALIKE_BACKEND or sqlite:///data/lookalike.db)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    add = commands.add_parser("add", help="add image files, folders recursively")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add.add_argument("--workers", type=int, help="processes to decode with (default: one a core)")
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    add.add_argument(
        "--force", action="store_true", help="sign every file again, even those stored unchanged"
    )
    add.set_defaults(run=_add)

    search = commands.add_parser("search", help="find stored images like IMAGE")
    search.add_argument("image", metavar="IMAGE", help="a file or an http(s) URL")
    search.add_argument("--limit", type=int, help="most results to show")
    search.add_argument("--min-score", type=float, help="hide results scoring below this (0-100)")
    search.add_argument(
        "--no-orientations", action="store_true", help="do not try rotated and mirrored copies"
    )
    search.add_argument("--filter", type=json_object, help='metadata equality, e.g. {"a": 1}')
    search.add_argument("--method", choices=METHODS, help="default: $LOOKALIKE_SEARCH_METHOD")
    search.add_argument("--collapse", metavar="KEY", help="one result per value of metadata KEY")
    search.add_argument("--json", action="store_true", help="print the API's result objects")
    search.set_defaults(run=_search)

    compare = commands.add_parser("compare", help="score how alike two images are (0-100)")
    compare.add_argument("first", metavar="A", help="a file or an http(s) URL")
    compare.add_argument("second", metavar="B", help="a file or an http(s) URL")
    compare.add_argument("--method", choices=METHODS, default="signature")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(run=_compare)

    delete = commands.add_parser("delete", help="remove the image stored under FILEPATH")
    delete.add_argument("filepath", metavar="FILEPATH")
    delete.set_defaults(run=_delete)

    serve = commands.add_parser("serve", help="run the Match-compatible HTTP service")
    serve.add_argument("--host", help="address to listen on (default: $LOOKALIKE_HOST)")
    serve.add_argument("--port", type=int, help="port (default: $PORT or 8888)")
    serve.add_argument("--workers", type=int, help="processes (default: $WORKER_COUNT or 4)")
    serve.set_defaults(run=None)

    count = commands.add_parser("count", help="how many images are stored")
    count.set_defaults(run=_count)

    info = commands.add_parser("info", help="what the store holds: size, index, memory")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_info)

    reindex = commands.add_parser(
        "reindex", help="rebuild the store's search index now (it is also kept up on its own)"
    )
    reindex.add_argument("--json", action="store_true")
    reindex.set_defaults(run=_reindex)

    migrate = commands.add_parser(
        "migrate",
        help="copy a Match/image-match Elasticsearch index into lookalike's layout (resumable)",
    )
    migrate.add_argument("--to", required=True, metavar="INDEX", help="the new index")
    migrate.add_argument(
        "--swap", action="store_true", help="then replace the old index by an alias of its name"
    )
    migrate.add_argument("--quiet", action="store_true", help="no progress bar")
    migrate.set_defaults(run=_migrate)

    exporting = commands.add_parser(
        "export", help="write the whole collection to FILE (JSON Lines; gzip if FILE ends .gz)"
    )
    exporting.add_argument("file", type=Path, metavar="FILE")
    exporting.add_argument("--quiet", action="store_true", help="no progress bar")
    exporting.set_defaults(run=_export)

    importing = commands.add_parser(
        "import", help="load an export into the store (run again to resume)"
    )
    importing.add_argument("file", type=Path, metavar="FILE")
    importing.add_argument("--quiet", action="store_true", help="no progress bar")
    importing.set_defaults(run=_import)

    backup = commands.add_parser(
        "backup", help="copy the SQLite store to DEST while it keeps serving and writing"
    )
    backup.add_argument("destination", type=Path, metavar="DEST")
    backup.set_defaults(run=_backup)

    from . import duplicates  # (it imports this module's helpers)

    duplicates.add_parser(commands)

    listing = commands.add_parser("list", help="stored filepaths, oldest first")
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(run=_list)
    return parser


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _add(service: Lookalike, args: argparse.Namespace) -> int:
    tuning.tune_this_process()  # before the next call sets the environment it defers to
    tuning.prepare_worker_environment()
    started = time.perf_counter()
    files = list(_image_files(args.paths))
    added = failed = unchanged = 0
    aborted: LookalikeError | None = None
    named = ((str(p), p) for p in files)
    with Progress(len(files), quiet=args.quiet) as bar:
        try:
            for result in service.add_files(named, workers=args.workers, force=args.force):
                if result.error is not None:
                    failed += 1
                    problem = f"{shown(result.filepath)}: {shown(result.error)}"
                    bar.write(f"lookalike: failed: {problem}", file=sys.stderr)
                elif result.unchanged:
                    unchanged += 1
                else:
                    added += 1
                bar.update(1)
        except LookalikeError as error:  # e.g. a worker killed: say so, then sum up
            aborted = error
    if aborted is not None:
        print(f"lookalike: {shown(str(aborted))}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    rate = added / elapsed if elapsed > 0 else 0.0
    left = len(files) - added - failed - unchanged
    summary = f"added {added} images, {failed} failed"
    if unchanged:
        summary += f", {unchanged} unchanged (skipped: --force adds them again)"
    if left:
        summary += f", {left} not processed"
    speed = f" ({rate:.0f} images/s)" if added else ""  # of the images signed and stored
    print(f"{summary}, in {elapsed:.1f} s{speed}")
    return 1 if failed or aborted is not None else 0


def _image_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Files named on the command line, and image files found under named folders."""
    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        yield Path(root) / name
        elif path.exists():
            yield path
        else:
            raise InvalidRequest(f"no such file or folder: {path}")


def _search(service: Lookalike, args: argparse.Namespace) -> int:
    matches = service.search(
        _source(service, args.image),
        all_orientations=False if args.no_orientations else None,
        limit=args.limit,
        min_score=args.min_score,
        where=args.filter,
        method=args.method,
        collapse=args.collapse,
    )
    if args.json:
        _print_json([m.to_json() for m in matches])
    else:
        for m in matches:
            turned = "" if m.orientation == "identity" else f"  ({m.orientation})"
            how = "" if m.method == "signature" else f"  [{m.method}]"
            print(f"{m.score:6.2f}  {shown(m.filepath)}{turned}{how}")
    return 0


def _source(service: Lookalike, text: str) -> bytes | Path:
    """An image named on the command line: a URL is fetched under the service's policy."""
    if text.startswith(("http://", "https://")):
        return service.fetch(text)
    return Path(text)


def _compare(service: Lookalike, args: argparse.Namespace) -> int:
    comparison = service.compare(
        _source(service, args.first), _source(service, args.second), method=args.method
    )
    if args.json:
        _print_json(comparison.to_json())
    elif comparison.scores:
        print("  ".join(f"{name} {score:.2f}" for name, score in comparison.scores.items()))
    else:
        print(f"{comparison.score:.2f}")
    return 0


def _delete(service: Lookalike, args: argparse.Namespace) -> int:
    service.delete(args.filepath)
    return 0


def _count(service: Lookalike, args: argparse.Namespace) -> int:
    print(service.count())
    return 0


def _info(service: Lookalike, args: argparse.Namespace) -> int:
    _print_stats(service.stats(), args.json)
    return 0


def _migrate(service: Lookalike, args: argparse.Namespace) -> int:
    with Progress(service.count(), args.quiet) as bar:
        facts = service.migrate(args.to, swap=args.swap, progress=bar.update)
    _print_json(facts)
    return 0


def _export(service: Lookalike, args: argparse.Namespace) -> int:
    """Written beside FILE, then renamed: a FILE that exists is a whole export."""
    partial = args.file.with_name(args.file.name + ".partial")
    started = time.perf_counter()
    with (
        Progress(service.count(), args.quiet) as bar,
        export.open_export(partial, "w", name=args.file.name) as out,
    ):
        written = service.export(out, progress=bar.update)
    partial.replace(args.file)
    elapsed = time.perf_counter() - started
    print(f"exported {written} images to {shown(str(args.file))} in {elapsed:.1f} s")
    return 0


def _import(service: Lookalike, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        with export.open_export(args.file, "r") as lines:  # read once: FILE may be a pipe
            header = lines.readline()
            with Progress(export.count_of(header), args.quiet) as bar:
                counts = service.import_(chain([header], lines), progress=bar.update)
    except (OSError, EOFError) as error:  # EOFError: a gzip file cut short
        raise InvalidRequest(f"cannot read {shown(str(args.file))}: {error}") from None
    elapsed = time.perf_counter() - started
    summary = f"imported {counts['imported']} images, {counts['skipped']} already there"
    if counts["marks"] or counts["marks_skipped"]:
        summary += f", {counts['marks']} distinct marks ({counts['marks_skipped']} not kept)"
    print(f"{summary}, in {elapsed:.1f} s")
    return 0


def _backup(service: Lookalike, args: argparse.Namespace) -> int:
    _print_json(service.backup(args.destination))
    return 0


def _reindex(service: Lookalike, args: argparse.Namespace) -> int:
    _print_stats(service.reindex(), args.json)
    return 0


def _print_stats(stats: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(stats)
    else:
        width = max(map(len, stats))
        for key, value in stats.items():
            print(f"{key.replace('_', ' '):<{width}}  {shown(str(value))}")


def _list(service: Lookalike, args: argparse.Namespace) -> int:
    for filepath in service.list(args.offset, args.limit):
        print(shown(filepath))
    return 0


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


class Progress:
    """A tqdm bar on a terminal; on anything else, no bar but the same interface."""

    def __init__(self, total: int, quiet: bool, unit: str = "img") -> None:
        self._bar: Any = None
        self._done = 0
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, smoothing=0.1)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)

    def reach(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` (a total known only once the work has started)."""
        if self._bar is not None:
            self._bar.total = total
        self.update(done - self._done)

    def write(self, line: str, file: TextIO) -> None:
        if self._bar is not None:
            self._bar.write(line, file=file)
        else:
            print(line, file=file)


if __name__ == "__main__":
    sys.exit(main())
