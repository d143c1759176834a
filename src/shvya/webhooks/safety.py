"""The guard between a company's webhook URL and the network (docs/webhooks.md, "Where SHVYA
will not connect").

A subscriber chooses the URL, so SHVYA's own network is what it could aim at: the database,
the cloud's metadata service, an admin page on localhost (server-side request forgery). The
URL is checked twice. At subscription, its form and any address written in it literally (in
every spelling an HTTP client accepts: 2130706433, 0x7f.1, 0177.0.0.1, [::ffff:127.0.0.1]).
At every delivery, every address its name resolves to; the connection then goes to the
address that was checked, with the name kept for the Host header and TLS (SNI and the
certificate), so a name that answers a public address to the check and a private one to the
connection (DNS rebinding) never reaches the private one. Redirects are never followed.

This module is also the one that opens connections to receivers (docs/architecture.md rule 7).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from shvya.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses a connection to it could reach (textual, as getaddrinfo gives).
Resolver = Callable[[str, int], list[str]]

# Always refused, even with SHVYA_WEBHOOK_ALLOW_PRIVATE: the instance metadata services of
# AWS (IPv4 and IPv6), GCP, Azure, Oracle (169.254.169.254), and Alibaba Cloud.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What a receiver may say back that we keep: enough for an error message.
RESPONSE_BODY_LIMIT = 4096


class WebhookUrlRefused(InvalidInput):
    code = "webhook_url_refused"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for `host` (every family)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked URL: its parts, the name to resolve and the port to connect to."""

    url: str
    scheme: str
    host: str  # lower-case, no brackets, no trailing dot
    port: int
    literal: IPAddress | None  # the address, when the URL names one instead of a name


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why a connection to `ip` is refused, or None when it may go."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    inner = _embedded_ipv4(ip)
    if inner is not None:
        reason = address_refusal(inner, allow_private=allow_private)
        return None if reason is None else f"{reason} (inside the IPv6 address)"
    if allow_private:
        return None
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def _literal_address(host: str) -> IPAddress | None:
    """The address `host` spells, in any form an HTTP client would connect to."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if all(c in "0123456789abcdefx." for c in host) and any(c.isdigit() for c in host):
        # inet_aton takes the BSD forms: 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url: str, *, allow_private: bool, production: bool) -> Target:
    """The URL's form and any literal address: refused with a 422 that says why."""
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"the URL cannot be read: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "http":
        if not allow_private or production:
            raise WebhookUrlRefused(
                "the URL must use https (http is accepted only outside production with "
                "SHVYA_WEBHOOK_ALLOW_PRIVATE set)"
            )
    elif scheme != "https":
        raise WebhookUrlRefused(f"the URL must start with https://, not {parts.scheme or '?'}:")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused(
            "the URL must not carry a user name or password; put a token in its path or query"
        )
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise WebhookUrlRefused("the URL names no host")
    if parts.fragment:
        raise WebhookUrlRefused("the URL must not have a #fragment (it is never sent)")
    literal = _literal_address(host)
    if literal is not None:
        reason = address_refusal(literal, allow_private=allow_private)
        if reason is not None:
            raise WebhookUrlRefused(f"the URL's address {literal} is {reason}")
    elif host in METADATA_NAMES:
        raise WebhookUrlRefused(f"{host} is a cloud metadata service")
    elif not allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise WebhookUrlRefused(f"{host} is this machine (a loopback name)")
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        literal=literal,
    )


def checked_addresses(target: Target, *, resolver: Resolver, allow_private: bool) -> list[str]:
    """Every address the target's name resolves to, each one checked; refused when any one is
    refused (a name that answers a public and a private address is not half trusted)."""
    if target.literal is not None:
        addresses = [str(target.literal)]
    else:
        try:
            addresses = resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise WebhookUrlRefused(f"{target.host} does not resolve: {exc}") from None
        if not addresses:
            raise WebhookUrlRefused(f"{target.host} resolves to no address")
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        reason = address_refusal(ip, allow_private=allow_private)
        if reason is not None:
            raise WebhookUrlRefused(f"{target.host} resolves to {ip}, {reason}")
    return addresses


@dataclass(frozen=True)
class Attempt:
    """One POST's outcome, as the delivery log keeps it."""

    response_code: int | None
    error: str | None
    duration_ms: int
    refused: bool = False  # the guard refused the address: nothing was sent

    @property
    def delivered(self) -> bool:
        return self.response_code is not None and 200 <= self.response_code < 300


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    resolver: Resolver,
    allow_private: bool,
    production: bool,
    timeout: float,
) -> Attempt:
    """POST `body` to `url` through the guard: checked, resolved, every address checked, then
    connected to a checked address, redirects not followed, at most RESPONSE_BODY_LIMIT bytes
    of the answer read. Never raises for what the receiver or the network did."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = check_url(url, allow_private=allow_private, production=production)
        addresses = checked_addresses(target, resolver=resolver, allow_private=allow_private)
    except WebhookUrlRefused as exc:
        return Attempt(None, f"refused: {exc.message}", took(), refused=True)
    try:
        original = httpx.URL(url)
        host_header = original.netloc.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        return Attempt(None, f"refused: the URL cannot be used: {exc}", took(), refused=True)
    last_error = "no address to connect to"
    for address in addresses:
        pinned = original.copy_with(host=address.split("%", 1)[0])
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
                client.stream(
                    "POST",
                    pinned,
                    content=body,
                    headers={**headers, "Host": host_header},
                    extensions=extensions,
                ) as response,
            ):
                answer = _read_limited(response)
                code = response.status_code
        except httpx.ConnectError as exc:
            last_error = f"could not connect to {address}: {exc}"
            continue  # the next checked address, if the name has one
        except httpx.TimeoutException as exc:
            return Attempt(None, f"timed out after {timeout:g} s ({type(exc).__name__})", took())
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}", took())
        if 200 <= code < 300:
            return Attempt(code, None, took())
        error = f"HTTP {code}"
        if 300 <= code < 400:
            error += f" (redirect to {response.headers.get('location', '?')} not followed)"
        elif answer:
            error += f": {answer}"
        return Attempt(code, error, took())
    return Attempt(None, last_error, took())


def _read_limited(response: httpx.Response) -> str:
    """At most RESPONSE_BODY_LIMIT bytes of the answer, as text; the rest is never read."""
    received = bytearray()
    for chunk in response.iter_raw():
        received += chunk
        if len(received) >= RESPONSE_BODY_LIMIT:
            break
    return bytes(received[:RESPONSE_BODY_LIMIT]).decode("utf-8", errors="replace").strip()
