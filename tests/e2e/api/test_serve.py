"""`lookalike serve` as users run it: a real process with 2 workers on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import free_port


@dataclass
class Served:
    url: str
    pid: int


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path, "sqlite:///" + str(tmp_path / "store.db"))


def serve(tmp_path: Path, backend: str, **environment: str) -> Iterator[Served]:
    """`lookalike serve` with 2 workers on ``backend`` (and more settings from
    ``environment``), stopped at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env |= {
        "LOOKALIKE_BACKEND": backend,
        "LOOKALIKE_LOG_LEVEL": "warning",
        "WORKER_COUNT": "2",
        "PORT": str(port),
        **environment,
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "lookalike", "serve"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"lookalike serve did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield Served(url, process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_two_workers_share_one_store(served, photo_bytes, edit):
    """Each add returns before a search on a new connection: with 2 workers behind one socket,
    many of these pairs cross from one worker to the other, and every search must see the add."""
    names = list(photo_bytes)
    for round_ in range(3):
        for name in names:
            filepath = f"{round_}/{name}"
            with httpx.Client(timeout=30) as writer:
                added = writer.post(
                    served.url + "/add",
                    files={"image": photo_bytes[name]},
                    data={"filepath": filepath},
                )
            assert added.json()["status"] == "ok"
            with httpx.Client(timeout=30) as reader:
                found = reader.post(served.url + "/search", files={"image": photo_bytes[name]})
            assert filepath in [r["filepath"] for r in found.json()["result"]]
    counts = set()
    for _ in range(10):
        with httpx.Client(timeout=30) as client:
            counts.add(client.get(served.url + "/count").json()["result"][0])
    assert counts == {3 * len(names)}


def test_a_batch_is_followed_from_every_worker(served, photo_bytes):
    """A batch started by one worker is answered by whichever takes ``GET /jobs``: each
    poll on a new connection, so both workers answer some."""
    names = sorted(photo_bytes)
    files = [("image", (f"{n}.jpg", photo_bytes[n], "image/jpeg")) for n in names]
    answer = httpx.post(
        served.url + "/add_batch", files=files, data={"filepath": names}, timeout=60
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()["result"][0]["job"]
    deadline = time.monotonic() + 60
    state = httpx.get(f"{served.url}/jobs/{job}", timeout=30).json()["result"][0]
    while state["state"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
        state = httpx.get(f"{served.url}/jobs/{job}", timeout=30).json()["result"][0]
    assert state["state"] == "done"
    assert [r["status"] for r in state["results"]] == ["added"] * len(names)
    assert httpx.get(served.url + "/count", timeout=30).json()["result"] == [len(names)]


def _children_command_lines(pid: int) -> list[str]:
    """Full command lines of a process's children, read from /proc: `ps` cuts them to
    the terminal's width, which differs between a shell and CI."""
    lines = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                lines.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return lines


def test_workers_are_separate_processes(served):
    children = _children_command_lines(served.pid)
    workers = [line for line in children if "spawn_main" in line]
    assert len(workers) == 2, children


def test_listening_socket_is_made_as_tcp_so_workers_disable_nagle():
    """asyncio sets TCP_NODELAY only on sockets whose protocol says TCP; uvicorn's own
    multi-worker socket says 0, which cost every answer a ~40 ms delayed ACK."""
    from lookalike.cli.serve import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.get_inheritable()
    finally:
        sock.close()


def test_serving_beyond_loopback_without_a_key_warns(tmp_path, capsys, monkeypatch):
    """Bound to every interface without LOOKALIKE_API_KEY, serve warns before it starts.
    The port is taken, so it stops right there: no server runs, no traffic is sent."""
    from lookalike.cli import main

    monkeypatch.setattr(os, "environ", dict(os.environ))  # serve sets its workers' variables
    monkeypatch.delenv("LOOKALIKE_API_KEY", raising=False)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        store = "sqlite:///" + str(tmp_path / "store.db")
        code = main(
            [
                "--store",
                store,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
            ]
        )
        quiet = capsys.readouterr().err
        assert code == 2 and "cannot listen" in quiet and "warning" not in quiet
        code = main(
            ["--store", store, "serve", "--host", "0.0.0.0", "--port", str(port), "--workers", "2"]
        )
        loud = capsys.readouterr().err
        assert "warning: listening on 0.0.0.0 without LOOKALIKE_API_KEY" in loud
    finally:
        taken.close()


def test_milvus_lite_is_served_by_one_worker(tmp_path, photo_bytes):
    """Milvus Lite locks its file to one process: 2 workers asked, 1 served, and it works."""
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    for served in serve(tmp_path, "milvus:///" + str(tmp_path / "images.db")):
        files = {"image": ("cat.jpg", photo_bytes["chelsea"])}
        added = httpx.post(served.url + "/add", files=files, data={"filepath": "cat"}, timeout=60)
        assert added.json()["status"] == "ok", added.text
        found = httpx.post(served.url + "/search", files=files, timeout=60).json()["result"]
        assert [r["filepath"] for r in found] == ["cat"]
        workers = [c for c in _children_command_lines(served.pid) if "spawn_main" in c]
        assert workers == []  # the server process serves itself
    log = (tmp_path / "serve.log").read_text()
    assert "Milvus Lite serves one process: 1 worker, not 2" in log
