"""fetch: the address policy, redirects, limits and failures, against servers on 127.0.0.1.

Every socket here is on 127.0.0.1. Refused addresses are refused before any connection, so
URLs naming other addresses never produce traffic; where a refusal could be mistaken for a
network failure, the test asserts the policy's message, and where a local server could have
answered, that it saw no request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from lookalike.config import Settings
from lookalike.errors import ConfigError, FetchError, ImageTooLarge
from lookalike.fetch import AddressPolicy, fetch

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400  # ~100 kB, content irrelevant here
LIMIT = 200_000
LOCAL = AddressPolicy(allowlist=(ipaddress.ip_network("127.0.0.1/32"),))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers)))
        path, _, query = self.path.partition("?")
        try:
            if path == "/image":
                self.reply(200, IMAGE)
            elif path.startswith("/redirect/"):  # a chain of n redirects ending at /image
                left = int(path.rsplit("/", 1)[1])
                self.redirect(f"/redirect/{left - 1}" if left > 1 else "../image")  # relative
            elif path == "/to":
                self.redirect(parse_qs(query)["url"][0])
            elif path == "/headers":
                self.reply(200, repr(sorted(self.headers.items())).encode())
            elif path == "/cookie":
                self.send_response(302)
                self.send_header("Set-Cookie", "session=secret; Path=/")
                self.send_header("Location", "/headers")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/huge":  # announces more than the limit, then sends nothing
                self.send_response(200)
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
            elif path == "/chunked":  # streams more than the limit without a length
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(4 * LIMIT // 8192):
                    self.wfile.write(b"2000\r\n" + b"x" * 8192 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(404, b"not here")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.port = self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


second_server = server


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """A TCP server on 127.0.0.1 whose every connection gets ``behave(connection)``."""
    stop = threading.Event()
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(behave: Callable[[socket.socket], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        listeners.append(listener)

        def serve() -> None:
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    with contextlib.suppress(OSError):  # the client gave up, as it should
                        behave(connection)
                    stop.wait()

        threads.append(threading.Thread(target=serve, daemon=True))
        threads[-1].start()
        return int(listener.getsockname()[1])

    yield start
    stop.set()
    for thread in threads:
        thread.join()
    for listener in listeners:
        listener.close()


def resolver(mapping: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        return mapping[host]

    return resolve


# --- the address policy --------------------------------------------------------------------

REFUSED = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "10.0.0.1": "private",
    "169.254.169.254": "link-local",
    "100.64.0.1": "shared",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "::ffff:127.0.0.1": "loopback address inside an IPv4-mapped",
    "64:ff9b::7f00:1": "loopback address inside a NAT64",
    "2002:7f00:1::1": "loopback address inside a 6to4",
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "loopback address inside a Teredo",
    "fc00::1": "private",
    "fe80::1": "link-local",
    "240.0.0.1": "reserved",
    "192.0.2.1": "private",  # documentation range
}


@pytest.mark.parametrize(("address", "rule"), REFUSED.items())
def test_default_policy_refuses_non_public_addresses(address: str, rule: str) -> None:
    with pytest.raises(FetchError, match=rf"URL refused: .* {rule}.*LOOKALIKE_ALLOW_PRIVATE_URLS"):
        AddressPolicy().check(address)


@pytest.mark.parametrize("address", REFUSED)
def test_refused_literal_and_resolved_addresses_are_never_contacted(address: str) -> None:
    # A connection attempt would end in a network error ("could not fetch ..."), not in the
    # policy's refusal, and for most of these addresses would first wait for a timeout.
    host = f"[{address}]" if ":" in address else address
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^URL refused: .* is a"):
        fetch(f"http://{host}:9/x", max_bytes=LIMIT, policy=AddressPolicy(), timeout=5)
    with pytest.raises(FetchError, match=r"^URL refused: evil\.test resolves to a"):
        fetch(
            "http://evil.test:9/x",
            max_bytes=LIMIT,
            policy=AddressPolicy(),
            resolver=resolver({"evil.test": [address]}),
        )
    assert time.monotonic() - started < 1


def test_localhost_is_refused_through_real_name_resolution(server: Server) -> None:
    with pytest.raises(FetchError, match=re.escape("localhost resolves to a loopback address")):
        fetch(server.url("/image", "localhost"), max_bytes=LIMIT, policy=AddressPolicy())
    with pytest.raises(FetchError, match=re.escape("127.0.0.1 is a loopback address")):
        fetch(server.url("/image"), max_bytes=LIMIT, policy=AddressPolicy())
    assert server.seen == []  # refused before connecting, though a server was there


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"]
)
def test_public_addresses_pass_the_policy(address: str) -> None:
    AddressPolicy().check(address)  # a check only: nothing connects to these


def test_every_resolved_address_is_checked(server: Server) -> None:
    # The allowed address comes first: fetching it without checking the second would reach
    # the local server, which would then have seen the request.
    mixed = resolver({"mixed.test": ["127.0.0.1", "10.0.0.1"]})
    with pytest.raises(FetchError, match=re.escape("mixed.test resolves to a private address")):
        fetch(server.url("/image", "mixed.test"), max_bytes=LIMIT, policy=LOCAL, resolver=mixed)
    assert server.seen == []
    # Private first: even a wrong implementation checking only the first would not connect.
    half = resolver({"half.test": ["10.0.0.1", "93.184.216.34"]})
    with pytest.raises(FetchError, match=re.escape("half.test resolves to a private address")):
        fetch("http://half.test/", max_bytes=LIMIT, policy=AddressPolicy(), resolver=half)


def test_allowlist_and_allow_private_open_the_local_server(server: Server) -> None:
    assert fetch(server.url("/image"), max_bytes=LIMIT, policy=LOCAL) == IMAGE
    everything = AddressPolicy(allow_private=True)
    assert fetch(server.url("/image"), max_bytes=LIMIT, policy=everything) == IMAGE
    with pytest.raises(FetchError, match=re.escape("127.0.0.2 is a loopback")):
        LOCAL.check("127.0.0.2")  # the allowlist opens its network, not its neighbours


def test_policy_from_settings() -> None:
    policy = AddressPolicy.from_settings(Settings(url_allowlist=" 10.0.0.0/8, 127.0.0.1/32,"))
    assert policy == AddressPolicy(
        allowlist=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
    )
    assert AddressPolicy.from_settings(Settings(allow_private_urls=True)).allow_private
    for bad in ("nonsense", "10.0.0.1/8", "300.0.0.0/8"):
        with pytest.raises(ConfigError, match="LOOKALIKE_URL_ALLOWLIST"):
            AddressPolicy.from_settings(Settings(url_allowlist=bad))


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("", "only http and https"),
        ("not a url", "only http and https"),
        ("http://", "no host"),
        ("http://[::1", "malformed"),
        ("http://127.0.0.1:99999/", "port 99999"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://127.0.0.1/image", "only http and https"),
        ("data:image/png;base64,iVBORw0KGgo=", "only http and https"),
        ("gopher://127.0.0.1/", "only http and https"),
    ],
)
def test_unsupported_and_malformed_urls_are_refused(url: str, rule: str) -> None:
    with pytest.raises(FetchError, match=f"URL refused: {rule}"):
        fetch(url, max_bytes=LIMIT, policy=AddressPolicy(allow_private=True))


def test_credentials_in_the_url_are_refused(server: Server) -> None:
    url = server.url("/image", "user:secret@127.0.0.1")
    with pytest.raises(FetchError, match="credentials"):
        fetch(url, max_bytes=LIMIT, policy=LOCAL)
    assert server.seen == []


def test_connects_to_the_checked_address_but_keeps_the_name(server: Server) -> None:
    # The resolver is asked once; the request goes to its answer with the original Host.
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    url = server.url("/headers", "images.example.test")
    headers = fetch(url, max_bytes=LIMIT, policy=LOCAL, resolver=resolve).decode()
    assert asked == [("images.example.test", server.port)]
    assert f"('Host', 'images.example.test:{server.port}')" in headers
    assert "('User-Agent', 'lookalike/" in headers
    assert "Authorization" not in headers and "Cookie" not in headers


# --- redirects -----------------------------------------------------------------------------


def test_redirects_are_followed_up_to_three(server: Server) -> None:
    assert fetch(server.url("/redirect/1"), max_bytes=LIMIT, policy=LOCAL) == IMAGE
    assert fetch(server.url("/redirect/3"), max_bytes=LIMIT, policy=LOCAL) == IMAGE
    with pytest.raises(FetchError, match="more than 3 redirects") as refused:
        fetch(server.url("/redirect/4"), max_bytes=LIMIT, policy=LOCAL)
    assert refused.value.reason == "refused"
    assert [path for path, _ in server.seen][-1] == "/redirect/1"  # the 4th hop was not taken


def test_redirect_to_another_server_is_checked_and_pinned_again(
    server: Server, second_server: Server
) -> None:
    # Both servers are on 127.0.0.1, which the allowlist opens whatever the port: this proves
    # that each hop is resolved, pinned and given its own Host, not that a hop can be refused;
    # refusals at a hop are the next test's, with addresses that are never contacted.
    target = second_server.url("/headers", "second.test")
    local = resolver({"second.test": ["127.0.0.1"]})
    url = server.url(f"/to?url={target}")
    body = fetch(url, max_bytes=LIMIT, policy=LOCAL, resolver=local).decode()
    assert f"('Host', 'second.test:{second_server.port}')" in body
    assert [path for path, _ in second_server.seen] == ["/headers"]


@pytest.mark.parametrize(
    ("location", "named", "rule"),
    [
        ("http://10.0.0.1/x", "http://10.0.0.1/x", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/", "http://169.254.169.254/latest/", "is a link-local"),
        ("http://[::ffff:127.0.0.1]:9/", "http://[::ffff:127.0.0.1]:9/", "inside an IPv4-mapped"),
        ("file:///etc/passwd", "file:/etc/passwd", "only http and https"),
        ("http://user:pw@127.0.0.1:9/", "http://user:pw@127.0.0.1:9/", "credentials"),
    ],
)
def test_every_redirect_hop_is_checked_before_connecting(
    server: Server, location: str, named: str, rule: str
) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as refused:
        fetch(server.url(f"/to?url={location}"), max_bytes=LIMIT, policy=LOCAL, timeout=5)
    # The policy's message, naming the hop, quickly: not a failed or timed-out connection.
    assert str(refused.value).startswith(f"URL refused: redirect to {named}: ")
    assert rule in str(refused.value)
    assert time.monotonic() - started < 1
    assert len(server.seen) == 1


def test_cookies_do_not_travel_between_hops(server: Server) -> None:
    headers = fetch(server.url("/cookie"), max_bytes=LIMIT, policy=LOCAL).decode()
    assert "secret" not in headers


# --- limits and failures -------------------------------------------------------------------


def test_oversize_bodies_are_refused_early(server: Server) -> None:
    for path in ("/huge", "/chunked"):
        started = time.monotonic()
        with pytest.raises(ImageTooLarge, match=f"larger than {LIMIT} bytes"):
            fetch(server.url(path), max_bytes=LIMIT, policy=LOCAL, timeout=5)
        assert time.monotonic() - started < 1  # /huge never sends its body: no waiting for it
    assert fetch(server.url("/image"), max_bytes=len(IMAGE), policy=LOCAL) == IMAGE


def silent(connection: socket.socket) -> None:
    pass  # accepts, then never answers


def trickling_headers(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(100):  # a header byte every 0.05 s: each read is quick, the whole is not
        connection.sendall(b"X")
        time.sleep(0.05)


def trickling_body(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(100):
        connection.sendall(b"x")
        time.sleep(0.05)


def trickling_body_to_the_close(connection: socket.socket) -> None:
    """A body without a length, ended by closing: cut at the deadline, what came looks
    complete, and must still be reported as the timeout it is."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n\xff\xd8\xff\xe0")
    for _ in range(100):
        connection.sendall(b"x")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "behave", [silent, trickling_headers, trickling_body, trickling_body_to_the_close]
)
def test_the_timeout_bounds_the_whole_fetch(
    raw_server: Callable[[Callable[[socket.socket], None]], int],
    behave: Callable[[socket.socket], None],
) -> None:
    port = raw_server(behave)
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"no complete answer within 1 s") as failed:
        fetch(f"http://127.0.0.1:{port}/", max_bytes=LIMIT, policy=LOCAL, timeout=1.0)
    assert time.monotonic() - started < 3
    assert failed.value.reason == "timeout"


def test_http_errors_and_network_failures_become_fetch_errors(server: Server) -> None:
    with pytest.raises(FetchError, match="URL returned HTTP 404") as failed:
        fetch(server.url("/missing"), max_bytes=LIMIT, policy=LOCAL)
    assert failed.value.reason == "http_status"
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with pytest.raises(FetchError, match=r"could not fetch .*refused") as failed:
        fetch(f"http://127.0.0.1:{port}/", max_bytes=LIMIT, policy=LOCAL)
    assert failed.value.reason == "connection"
    with pytest.raises(FetchError, match="could not fetch https://"):  # TLS to a plain server
        fetch(server.url("/image").replace("http", "https"), max_bytes=LIMIT, policy=LOCAL)

    def unknown(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(FetchError, match=re.escape("could not resolve nowhere.test")) as failed:
        fetch("http://nowhere.test/", max_bytes=LIMIT, policy=LOCAL, resolver=unknown)
    assert failed.value.reason == "dns"


def test_a_resolver_that_hangs_is_given_up_on_at_the_deadline() -> None:
    """Name resolution counts against the same deadline as the rest of the fetch."""
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["93.184.216.34"]

    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match=r"could not resolve slow\.test within 0\.5 s"):
            fetch(
                "http://slow.test/x.jpg",
                max_bytes=1000,
                policy=AddressPolicy(),
                timeout=0.5,
                resolver=hanging,
            )
        assert time.monotonic() - started < 5  # bounded by the deadline, not the resolver
    finally:
        release.set()


def test_resolver_errors_reach_the_caller() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror("no such name")

    with pytest.raises(FetchError, match=r"could not resolve nowhere\.test$"):
        fetch("http://nowhere.test/", max_bytes=10, policy=AddressPolicy(), resolver=failing)
