"""URL → bytes, for images fetched on a user's behalf.

Match fetched any URL without limits, so anyone could make it read loopback services or cloud
metadata (SSRF), hold a worker forever, or fill its memory. Here a fetch:

- takes only ``http`` and ``https`` URLs, with a host and without credentials;
- resolves the host once, checks every address with an :class:`AddressPolicy`, then connects to
  a checked address itself (``Host`` header and TLS SNI keep the name), so DNS cannot answer
  differently between the check and the connection;
- follows at most ``max_redirects`` redirects by hand, checking every hop the same way;
- has one deadline across resolving, connecting, every hop and the whole body;
- stops reading as soon as the body is over ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

from .config import VERSION, Settings
from .errors import ConfigError, FetchError, ImageTooLarge

__all__ = ["AddressPolicy", "fetch"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_HINT = "set LOOKALIKE_ALLOW_PRIVATE_URLS=true or LOOKALIKE_URL_ALLOWLIST to allow it"
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Most specific first, so that the message names the rule a user can look up.
_KINDS = (
    ("is_unspecified", "an unspecified"),
    ("is_loopback", "a loopback"),
    ("is_link_local", "a link-local"),
    ("is_multicast", "a multicast"),
    ("is_reserved", "a reserved"),
    ("is_private", "a private"),
)

_HEADERS = {
    "User-Agent": f"lookalike/{VERSION}",
    "Accept": "image/*, */*;q=0.5",
    # Images are compressed already; compression on top would only hide the real size.
    "Accept-Encoding": "identity",
}


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which IP addresses a fetch may connect to: global ones, plus what is allowed here."""

    allow_private: bool = False
    allowlist: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        """The policy of ``allow_private_urls`` and the comma-separated ``url_allowlist``."""
        networks = []
        for item in filter(None, (part.strip() for part in settings.url_allowlist.split(","))):
            try:
                networks.append(ipaddress.ip_network(item))
            except ValueError as error:
                raise ConfigError(f"LOOKALIKE_URL_ALLOWLIST: {error}") from None
        return cls(allow_private=settings.allow_private_urls, allowlist=tuple(networks))

    def check(self, address: str) -> None:
        """Raise FetchError naming the rule if this policy refuses the IP address."""
        try:
            reason = self._refusal(ipaddress.ip_address(address))
        except ValueError:
            raise FetchError(f"URL refused: {address!r} is not an IP address", "refused") from None
        if reason is not None:
            raise FetchError(f"URL refused: {address} is {reason} ({_HINT})", "refused")

    def _refusal(self, ip: IPAddress) -> str | None:
        if self.allow_private or any(ip in network for network in self.allowlist):
            return None
        return _refusal(ip)


def _refusal(ip: IPAddress) -> str | None:
    """Why an address is not public, e.g. "a loopback address"; None if it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Python 3.11 judges these by their IPv6 prefix only; the IPv4 inside is what is reached.
        embedded = [("an IPv4-mapped", ip.ipv4_mapped), ("a 6to4", ip.sixtofour)]
        if ip in _NAT64:
            embedded.append(("a NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        embedded += [("a Teredo", inner) for inner in ip.teredo or ()]
        for label, inner in embedded:
            reason = None if inner is None else _refusal(inner)
            if reason is not None:
                return f"{reason} inside {label} address"
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return None  # the destination is the IPv4 address inside, found public above
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    for attribute, kind in _KINDS:
        if getattr(ip, attribute):
            return f"{kind} address"
    return None if ip.is_global else "a non-global address"


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _within(seconds: float, resolve: Resolver, host: str, port: int) -> list[str]:
    """``resolve(host, port)``, given up on after ``seconds``: the system resolver has no
    timeout of its own that we control, so it runs in a daemon thread left to finish."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(resolve(host, port))
        except BaseException as error:  # handed to the caller's thread below
            outcome.append(error)

    thread = threading.Thread(target=run, name="lookalike-resolve", daemon=True)
    thread.start()
    thread.join(max(seconds, 0.0))
    if not outcome:
        raise TimeoutError(f"resolving {host} took too long")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    result: list[str] = outcome[0]
    return result


def fetch(
    url: str,
    *,
    max_bytes: int,
    policy: AddressPolicy,
    timeout: float = 10.0,
    connect_timeout: float = 3.0,
    max_redirects: int = 3,
    resolver: Resolver | None = None,
) -> bytes:
    """The body at ``url``: at most ``max_bytes``, within ``timeout`` seconds in all.

    Raises FetchError when a rule refuses the URL or a redirect, or the fetch fails, and
    ImageTooLarge when the body is over ``max_bytes``. ``resolver(host, port)`` returns IP
    addresses (tests inject one); the default asks ``socket.getaddrinfo``.
    """
    current, hops = _parse(url, redirect=False), 0
    with (
        _Deadline(timeout) as deadline,
        httpx.Client(verify=_ssl_context(), trust_env=False) as client,  # no proxies, no netrc
    ):
        while True:
            addresses = _addresses(
                current, policy, resolver or _getaddrinfo, deadline, redirect=hops > 0
            )
            try:
                response = _open(client, current, addresses, deadline, connect_timeout)
                try:
                    location = response.headers.get("location")
                    if response.status_code not in _REDIRECTS or location is None:
                        if not 200 <= response.status_code < 300:
                            raise FetchError(
                                f"URL returned HTTP {response.status_code}", "http_status"
                            )
                        return _read(response, max_bytes, deadline)
                finally:
                    response.close()
                target = str(current.join(location))
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as error:
                raise _failure(current, error, deadline) from None
            hops += 1
            if hops > max_redirects:
                raise FetchError(f"URL refused: more than {max_redirects} redirects", "refused")
            current = _parse(target, redirect=True)


def _parse(text: str, *, redirect: bool) -> httpx.URL:
    """The URL, if its scheme, host, port and lack of credentials are acceptable."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as error:
        raise _refused(f"malformed URL ({error})", text, redirect) from None
    if url.scheme not in _DEFAULT_PORTS:
        raise _refused("only http and https URLs can be fetched", text, redirect)
    if not url.host:
        raise _refused("no host in the URL", text, redirect)
    if url.userinfo:
        raise _refused("URLs with credentials (user:password@) are not fetched", text, redirect)
    if url.port is not None and not 0 < url.port < 65536:
        raise _refused(f"port {url.port} is out of range", text, redirect)
    return url


def _refused(reason: str, url: object, redirect: bool) -> FetchError:
    return FetchError(
        f"URL refused: {f'redirect to {url}: ' if redirect else ''}{reason}", "refused"
    )


def _addresses(
    url: httpx.URL, policy: AddressPolicy, resolve: Resolver, deadline: _Deadline, redirect: bool
) -> list[IPAddress]:
    """The host's addresses, resolved once here, every one accepted by the policy."""
    host = url.raw_host.decode("ascii")
    try:
        found, subject = [ipaddress.ip_address(host)], f"{host} is"
    except ValueError:
        try:
            port = url.port or _DEFAULT_PORTS[url.scheme]
            answer = _within(deadline.remaining(), resolve, host, port)
            found = [ipaddress.ip_address(address) for address in answer]
        except TimeoutError:
            raise FetchError(
                f"could not resolve {host} within {deadline.timeout:g} s", "dns"
            ) from None
        except (OSError, ValueError):
            raise FetchError(f"could not resolve {host}", "dns") from None
        # The addresses stay out of the message: they would map internal DNS for anyone.
        subject = f"{host} resolves to"
    if not found:
        raise FetchError(f"could not resolve {host}", "dns")
    for ip in found:  # every one, not only the first: a connection may go to any of them
        reason = policy._refusal(ip)
        if reason is not None:
            raise _refused(f"{subject} {reason} ({_HINT})", url, redirect)
    return found


def _open(
    client: httpx.Client,
    url: httpx.URL,
    addresses: list[IPAddress],
    deadline: _Deadline,
    connect_timeout: float,
) -> httpx.Response:
    """GET from the first checked address that accepts a connection, with the name as Host."""
    host = url.raw_host.decode("ascii")
    netloc = f"[{host}]" if ":" in host else host
    if url.port is not None and url.port != _DEFAULT_PORTS[url.scheme]:
        netloc += f":{url.port}"
    extensions: dict[str, Any] = {"trace": deadline.trace}
    if url.scheme == "https":
        extensions["sni_hostname"] = host  # verify the certificate against the name, not the IP

    def send(ip: IPAddress) -> httpx.Response:
        remaining = deadline.remaining()
        client.cookies.clear()  # what one hop set must not travel to the next
        request = client.build_request(
            "GET",
            url.copy_with(host=str(ip)),
            headers={**_HEADERS, "Host": netloc},
            extensions=extensions,
            timeout=httpx.Timeout(remaining, connect=min(connect_timeout, remaining)),
        )
        return client.send(request, stream=True, follow_redirects=False)

    for ip in addresses[:-1]:
        with contextlib.suppress(httpx.ConnectError, httpx.ConnectTimeout):
            return send(ip)  # on failure, the host's next address may answer
    return send(addresses[-1])


def _read(response: httpx.Response, max_bytes: int, deadline: _Deadline) -> bytes:
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ImageTooLarge(f"image at URL is larger than {max_bytes} bytes")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ImageTooLarge(f"image at URL is larger than {max_bytes} bytes")
        if deadline.remaining() <= 0:
            raise httpx.ReadTimeout("deadline passed")
    # Cut at the deadline, the connection ends as if the body were complete: a partial
    # image must be reported as the timeout it is, not as an undecodable picture.
    if deadline.remaining() <= 0:
        raise httpx.ReadTimeout("deadline passed")
    return bytes(body)


def _failure(url: httpx.URL, error: Exception, deadline: _Deadline) -> FetchError:
    if isinstance(error, httpx.TimeoutException) or deadline.remaining() <= 0:
        cause, reason = f"no complete answer within {deadline.timeout:g} s", "timeout"
    else:
        cause, reason = str(error) or type(error).__name__, "connection"
    return FetchError(f"could not fetch {url}: {cause}", reason)


@cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes milliseconds; one verifying context serves every fetch.
    return httpx.create_ssl_context()


class _Deadline:
    """The fetch's total time limit, enforced even while a read is blocked.

    httpx bounds each read, not their sum: a server trickling a byte a second could hold a
    worker as long as it liked. At the deadline a timer shuts down every connection the fetch
    opened, which wakes a blocked read with an error. It shuts down duplicates of the sockets,
    closed only here, so it never touches a descriptor number that was reused meanwhile.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._end = time.monotonic() + timeout
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def trace(self, event: str, info: dict[str, Any]) -> None:
        # httpcore's documented "trace" extension reports each new connection's stream.
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._sockets.append(info["return_value"].get_extra_info("socket").dup())

    def _expire(self) -> None:
        with self._lock:
            for sock in [] if self._done else self._sockets:
                with contextlib.suppress(OSError):  # the peer may have closed it already
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            for sock in self._sockets:
                sock.close()
