"""SSRF defence for webhook URLs: refuse private, loopback, link-local, CGNAT and metadata addresses.

Checked at registration (the URL, resolved) and again at connect time by :class:`SafeResolver`, so that a
DNS answer that changes after registration (DNS rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CGNAT = ipaddress.ip_network("100.64.0.0/10")
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class UnsafeUrlError(ValueError):
    """The URL points (or resolves) somewhere a webhook must never go."""


def forbidden_reason(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` may not be a webhook target, or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            return forbidden_reason(mapped, allow_loopback=allow_loopback)
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return "a carrier-grade NAT address"
    for attribute, reason in (
        ("is_link_local", "a link-local address"),
        ("is_private", "a private address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, attribute):
            return reason
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The address a host names literally, in any encoding the C resolver accepts (0x7f.1, 2130706433, 0177.0.0.1)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


async def check_url(url: str, *, allow_loopback: bool = False) -> None:
    """Refuse a webhook URL that is malformed or that resolves to a forbidden address."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrlError("the URL must be http or https")
    if parts.username or parts.password:
        raise UnsafeUrlError("the URL must not carry credentials")
    host = parts.hostname
    if not host:
        raise UnsafeUrlError("the URL has no host")
    ip = literal_ip(host)
    addresses = [ip] if ip is not None else await _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    for address in addresses:
        reason = forbidden_reason(address, allow_loopback=allow_loopback)
        if reason:
            raise UnsafeUrlError(f"the URL's host resolves to {reason} ({address})")


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeUrlError(f"the URL's host does not resolve: {exc}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class SafeResolver(AbstractResolver):
    """aiohttp resolver that drops forbidden addresses after DNS resolution, at connect time."""

    def __init__(self, *, allow_loopback: bool = False) -> None:
        self._inner = DefaultResolver()
        self._allow_loopback = allow_loopback

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        safe = [
            r
            for r in results
            if forbidden_reason(ipaddress.ip_address(r["host"].split("%")[0]), allow_loopback=self._allow_loopback)
            is None
        ]
        if not safe:
            raise OSError(f"refusing to connect to {host}: it resolves only to forbidden addresses")
        return safe

    async def close(self) -> None:
        await self._inner.close()
