"""The command line on a real SQLite file. The first test runs it as a user does, in real
processes (``python -m lookalike``); the others call ``main(argv, environ)`` in this
process, the same code below the process boundary, with its output captured."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lookalike.cli import EXIT_CODES, main


def user_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}


def run_process(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``lookalike --store STORE ARGS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "lookalike", "--store", "sqlite:///" + str(store), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=user_environment(),
    )


def run(store: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``lookalike --store STORE ARGS`` through ``main`` in this process: its exit code,
    standard output and standard error, as a process would give them."""
    argv = ["--store", "sqlite:///" + str(store), *args]
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.chdir(cwd or Path.cwd()),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(argv, environ=user_environment())
        except SystemExit as exit:  # argparse refusing the arguments
            code = exit.code if isinstance(exit.code, int) else 2
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


def test_add_folder_search_list_count_delete(store, photo_files, tmp_path, edit):
    folder = next(iter(photo_files.values())).parent
    (folder / "nested").mkdir()
    (folder / "nested" / "copy.png").write_bytes(
        edit("coins", lambda im: im.resize((200, 150)), quality=95)
    )
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    added = run_process(store, "add", str(folder), "--workers", "2")
    assert added.returncode == 0, added.stderr
    assert f"added {len(photo_files) + 1} images, 0 failed" in added.stdout
    assert run_process(store, "count").stdout.strip() == str(len(photo_files) + 1)

    query = tmp_path / "query.jpg"
    query.write_bytes(edit("chelsea", lambda im: im.transpose(Image.Transpose.ROTATE_180)))
    found = run_process(store, "search", str(query), "--json")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert results[0]["filepath"] == str(photo_files["chelsea"])
    assert set(results[0]) >= {"filepath", "score", "metadata", "distance", "orientation"}
    assert results[0]["orientation"] == "rot180"
    assert (
        run_process(store, "search", str(query), "--no-orientations", "--json").stdout.strip()
        == "[]"
    )
    table = run_process(store, "search", str(query)).stdout
    assert str(photo_files["chelsea"]) in table and "(rot180)" in table

    listed = run_process(store, "list", "--limit", "100").stdout.split()
    assert sorted(listed) == sorted(
        [*map(str, photo_files.values()), str(folder / "nested/copy.png")]
    )
    assert run_process(store, "list", "--offset", "1", "--limit", "2").stdout.split() == listed[1:3]

    assert run_process(store, "delete", listed[0]).returncode == 0
    missing = run_process(store, "delete", listed[0])
    assert missing.returncode == 3
    assert missing.stderr.startswith("lookalike: no image is stored under")
    assert "Traceback" not in missing.stderr


def test_a_re_run_adds_only_what_changed(store, photo_files, tmp_path, edit):
    """An interrupted or repeated ingest: unchanged files are skipped (by length and time,
    or by hash when only the time moved), a changed one is signed again, --force signs
    all; the record of an unchanged file is not rewritten."""
    folder = next(iter(photo_files.values())).parent
    n = len(photo_files)
    first = run(store, "add", str(folder), "--quiet")
    assert first.returncode == 0 and f"added {n} images, 0 failed" in first.stdout
    updated = dict(sqlite3.connect(store).execute("SELECT filepath, updated FROM images"))

    again = run(store, "add", str(folder), "--quiet")
    assert again.returncode == 0, again.stderr
    assert f"added 0 images, 0 failed, {n} unchanged" in again.stdout

    touched, changed = folder / "astronaut.jpg", folder / "coffee.jpg"
    os.utime(touched, (time.time() + 5, time.time() + 5))  # the same bytes, a new time
    changed.write_bytes(edit("coffee", lambda im: im.resize((300, 200))))
    third = run(store, "add", str(folder), "--quiet")
    assert f"added 1 images, 0 failed, {n - 1} unchanged" in third.stdout
    now = dict(sqlite3.connect(store).execute("SELECT filepath, updated FROM images"))
    assert {path for path in now if now[path] != updated[path]} == {str(changed)}

    forced = run(store, "add", str(folder), "--quiet", "--force")
    assert f"added {n} images, 0 failed" in forced.stdout and "unchanged" not in forced.stdout
    assert run(store, "count").stdout.strip() == str(n)


def test_a_failed_file_is_reported_skipped_and_fails_the_run(store, photo_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run(store, "add", str(broken), *map(str, photo_files.values()))
    assert result.returncode == 1
    assert f"added {len(photo_files)} images, 1 failed" in result.stdout
    assert f"failed: {broken}" in result.stderr
    assert "Traceback" not in result.stderr
    assert run(store, "count").stdout.strip() == str(len(photo_files))


def test_compare_prints_a_score(store, photo_files):
    same = run(store, "compare", str(photo_files["coffee"]), str(photo_files["coffee"]))
    assert same.stdout.strip() == "100.00"
    other = run(store, "compare", str(photo_files["coffee"]), str(photo_files["coins"]), "--json")
    assert json.loads(other.stdout)["score"] < 55


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["search", "missing.jpg"], 4, "no such file"),
        (["add", "missing-folder"], 2, "no such file or folder"),
        (["list", "--offset", "-1"], 2, "offset"),
        (["search", "x.jpg", "--filter", "[1]"], 2, "must be a JSON object"),
    ],
)
def test_errors_are_one_line_and_an_exit_code(store, tmp_path, args, code, message):
    result = run(store, *args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_store_is_a_configuration_error(tmp_path, capsys):
    assert main(["--store", "nosuch://x", "count"]) == 2
    assert "unknown store" in capsys.readouterr().err


def test_exit_codes_cover_every_error_class():
    import lookalike.errors as errors

    kinds = {k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, Exception)}
    mapped = {kind for kind, _ in EXIT_CODES}
    assert kinds - {errors.ImageTooLarge} <= mapped


def test_search_by_url_obeys_the_address_policy(store, tmp_path):
    result = run(store, "search", "http://127.0.0.1:9/cat.jpg")
    assert result.returncode == 4
    assert "loopback" in result.stderr


def test_info_reports_the_store(store, photo_files):
    run(store, "add", *map(str, photo_files.values()))
    facts = json.loads(run(store, "info", "--json").stdout)
    assert facts["backend"] == "sqlite" and facts["count"] == len(photo_files)
    assert facts["path"] == str(store) and facts["file_bytes"] > 0
    lines = dict(line.split(None, 1) for line in run(store, "info").stdout.splitlines())
    assert lines["count"].strip() == str(len(photo_files))
    assert lines["backend"].strip() == "sqlite"


def test_reindex_builds_the_index_that_info_then_reports(store, photo_files):
    run(store, "add", *map(str, photo_files.values()))
    assert json.loads(run(store, "info", "--json").stdout)["index"] == "exact scan"
    result = run(store, "reindex", "--json")
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built["index"] == "ivf" and built["index_rows"] == len(photo_files)
    facts = json.loads(run(store, "info", "--json").stdout)  # a new process adopts it
    assert facts["index"] == "ivf" and facts["index_version"] == built["index_version"]
    assert facts["changes_since_index"] == 0
    found = run(store, "search", str(next(iter(photo_files.values()))), "--json")
    assert json.loads(found.stdout)[0]["score"] == 100.0


def test_search_options_as_the_readme_shows_them(store, photo_files, tmp_path, edit):
    """`search --json --limit 5 --min-score 80`, `--filter`, `--method`: as in README.md."""
    folder = next(iter(photo_files.values())).parent
    assert run(store, "add", str(folder)).returncode == 0
    query = tmp_path / "query.jpg"
    query.write_bytes(edit("coffee", lambda im: im.resize((im.width // 2, im.height // 2))))
    found = json.loads(run(store, "search", str(query), "--json", "--limit", "5").stdout)
    assert found[0]["filepath"] == str(photo_files["coffee"]) and 80 < found[0]["score"] < 100
    strict = run(store, "search", str(query), "--json", "--limit", "5", "--min-score", "80")
    assert [r["filepath"] for r in json.loads(strict.stdout)] == [str(photo_files["coffee"])]
    exact_only = run(store, "search", str(query), "--json", "--min-score", "100")
    assert json.loads(exact_only.stdout) == []
    filtered = run(
        store, "search", str(query), "--no-orientations", "--filter", '{"shop": "north"}'
    )
    assert filtered.returncode == 0 and filtered.stdout.strip() == ""
    hybrid = run(store, "search", str(query), "--method", "hybrid", "--collapse", "product")
    assert hybrid.returncode == 2 and "LOOKALIKE_EMBEDDINGS=true" in hybrid.stderr


def test_names_that_are_not_printable_are_printed_escaped(store, photo_files):
    """A filepath stored by an older version with CR, LF and an escape sequence cannot
    forge lines or colours on the terminal: list and search print it escaped."""
    assert run(store, "add", str(photo_files["coins"])).returncode == 0
    with sqlite3.connect(store) as db:
        db.execute("UPDATE images SET filepath = ?", ["evil\r\nfake line \x1b[31mred"])
    listed = run(store, "list").stdout
    assert listed == "evil\\r\\nfake line \\x1b[31mred\n"
    table = run(store, "search", str(photo_files["coins"])).stdout
    assert "\x1b" not in table and "\r" not in table and "evil\\r\\nfake" in table
    assert (
        json.loads(run(store, "search", str(photo_files["coins"]), "--json").stdout)[0]["filepath"]
        == "evil\r\nfake line \x1b[31mred"
    )


# -- a run that dies, or loses a worker ---------------------------------------------------------


def many_images(photo_files: dict[str, Path], folder: Path, n: int) -> Path:
    """A folder of ``n`` image files (links to the test photos, under their own names)."""
    folder.mkdir()
    sources = list(photo_files.values())
    for i in range(n):
        (folder / f"{i:05d}.jpg").symlink_to(sources[i % len(sources)])
    return folder


def workers_of(pid: int) -> list[int]:
    """The decoding worker processes a `lookalike add` has started (not its resource
    tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"multiprocessing" in command and b"resource_tracker" not in command:
                found.append(int(child))
    return found


def both_workers(pid: int) -> list[int]:
    found = workers_of(pid)
    return found if len(found) == 2 else []


def running(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting: {what}")
        time.sleep(0.05)
    return value


def start_add(store: Path, folder: Path) -> subprocess.Popen[bytes]:
    arguments = ["add", str(folder), "--workers", "2", "--quiet"]
    return subprocess.Popen(
        [sys.executable, "-m", "lookalike", "--store", "sqlite:///" + str(store), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=user_environment(),
    )


def test_workers_exit_when_add_is_killed_and_release_its_pipes(store, photo_files, tmp_path):
    """`kill -9` of `lookalike add` mid-run: its decoding workers exit by themselves
    (they are not left under PID 1), and its standard output reaches end-of-file, so a
    pipeline reading it does not hang."""
    with start_add(store, many_images(photo_files, tmp_path / "many", 3000)) as process:
        workers = wait_for(lambda: both_workers(process.pid), "the 2 workers to start")
        process.kill()
        process.wait(timeout=10)
        wait_for(lambda: not any(running(w) for w in workers), "the workers to exit", 30)
        assert process.stdout is not None
        drained = threading.Thread(target=process.stdout.read, daemon=True)
        drained.start()
        drained.join(timeout=30)
        assert not drained.is_alive(), "standard output is still held open"


def test_a_killed_worker_ends_the_run_with_a_line_and_the_summary(store, photo_files, tmp_path):
    """The OOM killer takes one decoding worker: the run stores every image signed
    before, says so in one line, prints the summary and exits 1; the store holds exactly
    the images the summary counts as added."""
    with start_add(store, many_images(photo_files, tmp_path / "many", 3000)) as process:
        workers = wait_for(lambda: both_workers(process.pid), "the 2 workers to start")
        time.sleep(0.5)  # let some chunks be signed first
        os.kill(workers[0], signal.SIGKILL)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    lines = [line for line in err.decode().splitlines() if line]
    assert len(lines) == 1 and "worker process died" in lines[0], err
    assert "Traceback" not in err.decode()
    summary = re.search(rb"added (\d+) images, 0 failed, (\d+) not processed", out)
    assert summary is not None, out
    added, left = map(int, summary.groups())
    assert added + left == 3000 and left > 0
    assert run(store, "count").stdout.strip() == str(added)
