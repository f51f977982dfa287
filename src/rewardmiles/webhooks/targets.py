"""Where webhook events may be sent.

A webhook URL names a partner's endpoint on the public internet. Internal targets are refused
unless `webhook_allow_private_targets` is set: loopback, private (RFC 1918, IPv6 ULA), link-local
(169.254.0.0/16 — cloud metadata services —, fe80::/10), unspecified, multicast, reserved and other
non-public ranges (100.64.0.0/10, …), in any spelling (IPv4-mapped IPv6, NAT64, 6to4, numeric host
names such as `2130706433`). URLs with credentials are always refused.

The check runs when a webhook is added and again at each delivery, on the addresses the name
resolves to then; the delivery connects to the address it checked (the URL's host replaced by it,
the name kept in the Host header and as the TLS server name, so certificates are verified against
the name). A name that resolves to a public address when added and to an internal one later (DNS
rebinding) is refused at delivery without connecting.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from rewardmiles.errors import OperatorError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetError(OperatorError):
    def __init__(self, message: str, *, field: str | None = "url") -> None:
        super().__init__(message, field=field)


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TargetError(f"{host} cannot be resolved ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TargetError(f"{host} cannot be resolved")
    return addresses


def forbidden(address: IPAddress) -> str | None:
    """Why `address` is not a public one, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden(embedded)
    for kind, test in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if test:
            return f"a {kind} address"
    if not address.is_global:
        return "not a public address"
    return None


def _parse(url: str) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetError("the webhook URL is not an http(s) URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise TargetError("the webhook URL is not an http(s) URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TargetError(
            "webhook URLs must not carry credentials (user:password@); the receiver "
            "authenticates events by their Rewardmiles-Signature"
        )
    return parts, host, port


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _addresses(host: str, port: int) -> list[IPAddress]:
    """What `host` stands for: itself when it is an address, else what it resolves to."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    if _is_localhost(host):
        return [ipaddress.ip_address("127.0.0.1")]
    return [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]


def _checked(host: str, port: int) -> list[IPAddress]:
    addresses = _addresses(host, port)
    for address in addresses:
        why = forbidden(address)
        if why is not None:
            shown = f"{host} is" if _literal(host) is not None else f"{host} resolves to {address},"
            raise TargetError(
                f"{shown} {why}; webhook targets must be public "
                "(REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS=true allows internal ones)"
            )
    return addresses


def _http_allowed(host: str) -> None:
    if _is_localhost(host):
        return
    literal = _literal(host)
    if literal is None or not literal.is_loopback:
        raise TargetError(
            "webhook URLs must use https (http is allowed for loopback addresses only)"
        )


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse (TargetError) a URL events may not be sent to; names are resolved."""
    parts, host, port = _parse(url)
    if not allow_private:
        _checked(host, port)
    if parts.scheme == "http":
        _http_allowed(host)


@dataclass(frozen=True, slots=True)
class Pinned:
    """A delivery's request: the URL to connect to, and what keeps the name for the receiver."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


def pin(url: str, *, allow_private: bool) -> Pinned:
    """Check `url` now and return the request that connects to the address checked."""
    parts, host, port = _parse(url)
    if parts.scheme == "http":
        _http_allowed(host)
    if allow_private or _literal(host) is not None:
        if not allow_private:
            _checked(host, port)
        return Pinned(url)
    address = _checked(host, port)[0]
    shown = f"[{address}]" if address.version == 6 else str(address)
    netloc = shown if parts.port is None else f"{shown}:{parts.port}"
    name = _ascii(host)
    host_header = name if parts.port is None else f"{name}:{parts.port}"
    extensions = {"sni_hostname": name} if parts.scheme == "https" else {}
    return Pinned(parts._replace(netloc=netloc).geturl(), {"Host": host_header}, extensions)


def _ascii(host: str) -> str:
    """An internationalised name as it goes on the wire (IDNA)."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetError(f"{host} is not a valid host name") from None


def redact(url: str) -> str:
    """`url` without its credentials, if it has any (for display)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
