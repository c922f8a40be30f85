"""Where results may be sent: never into the network the server runs in.

A result webhook URL comes from the orchestrator (`resultWebhookUrl`) or the deployment
(`RESULT_WEBHOOK_URL`). Unless RESULT_WEBHOOK_ALLOW_PRIVATE is set, loopback, private
(RFC 1918, unique-local IPv6), link-local (including the cloud metadata address
169.254.169.254), unspecified, multicast and reserved addresses are refused: when the URL
is accepted (IP literals and localhost names), and again at delivery time on every address
the host name resolves to, so a name that later resolves inward (DNS rebinding) is caught.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_HINT = "set RESULT_WEBHOOK_ALLOW_PRIVATE=true to allow it"


class ForbiddenAddress(OSError):
    """A result webhook host resolved only to addresses results may not be sent to."""


def address_problem(ip: IPAddress) -> str | None:
    """Why results may not go to `ip` (a few words), or None when they may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:  # RFC 1918, unique-local, shared and documentation ranges
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def url_problem(url: str) -> str | None:
    """Why results may not be sent to `url` as written, or None. Host names other than
    localhost pass here; their addresses are checked when the delivery connects."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        return "must be an absolute http(s) URL"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback address; {ALLOW_HINT}"
    ip = _ip_literal(host)
    if ip is None:
        try:
            socket.inet_aton(host)  # 127.1, 2130706433, 0x7f.1: IPv4 in disguise
        except OSError:
            return None
        return f"{host} is not a canonical IPv4 address"
    if (problem := address_problem(ip)) is not None:
        return f"{host} is a {problem} address; {ALLOW_HINT}"
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses results may be sent to."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if (ip := _ip_literal(r["host"])) and not address_problem(ip)]
        if not allowed:
            shown = ", ".join(sorted({r["host"] for r in found}))
            raise ForbiddenAddress(
                f"{host} resolves to {shown}, not a public address; {ALLOW_HINT}"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()
