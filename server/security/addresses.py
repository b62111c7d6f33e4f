"""The outbound address policy: provider ``base_url`` s, workflow tool-step URLs, and every connection to them.

A URL that a caller or a config file supplies can point the server at its own cloud's metadata service
(SSRF): ``169.254.169.254`` (AWS, GCP, Azure, OpenStack …), ``fd00:ec2::254`` (AWS IPv6),
``100.100.100.200`` (Alibaba), ``metadata.google.internal``. Those, and every link-local address
(169.254.0.0/16, fe80::/10), are refused unless ``[network].allow_addresses`` names them; ``[network].
deny_addresses`` refuses more (a VPC's private ranges, say), and wins over ``allow_addresses``. Loopback and
private ranges stay allowed by default: local model servers (Ollama, vLLM) live there.

An IPv6 address that carries an IPv4 address is judged as that IPv4 address: IPv4-mapped (``::ffff:0:0/96``),
IPv4-translated (``::ffff:0:0:0/96``), IPv4-compatible (``::/96``), NAT64 (``64:ff9b::/96``, RFC 6052, and the
local-use ``64:ff9b:1::/48``, RFC 8215), 6to4 (``2002::/16``, RFC 3056), Teredo (``2001::/32``, RFC 4380) and
ISATAP interface identifiers (RFC 5214). So ``64:ff9b::a9fe:a9fe`` is refused like ``169.254.169.254``.

Checked on the URL as written (config load; no DNS), on the addresses its host name resolves to (start-up,
each downstream (re)connection), and on the address each outbound HTTP request actually connects to
(:mod:`server.security.outbound`). Source: the OWASP SSRF Prevention Cheat Sheet; AWS IMDS documentation.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from server.errors import OrchestrationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Any]
"""``socket.getaddrinfo``-shaped: ``(host, port) -> [(family, type, proto, canonname, (address, port, …)), …]``."""

METADATA_ADDRESSES = tuple(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.123", "fd00:ec2::254", "100.100.100.200"))
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.com"})

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


class AddressRefused(OrchestrationError):
    """A URL points at an address the policy refuses. The message names the host, never credentials."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (see the module docstring for the forms), or ``[]``."""
    value = int(address)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _IPV4_TRANSLATED or address in _NAT64 or (address in _IPV4_COMPATIBLE and value > 1):
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:  # RFC 6052 /48: bits 48-63 hold the first half, bits 72-87 the second
        found.append(ipaddress.IPv4Address((((value >> 64) & 0xFFFF) << 16) | ((value >> 40) & 0xFFFF)))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return found


def _builtin_reason(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_multicast:
        return "not a unicast address"
    return None


def refused_reason(address: IPAddress) -> str | None:
    """Why the built-in policy refuses ``address`` (or an IPv4 address it carries), or ``None``."""
    reason = _builtin_reason(address)
    if reason is None and isinstance(address, ipaddress.IPv6Address):
        for inner in embedded_ipv4(address):
            if (inner_reason := _builtin_reason(inner)) is not None:
                return f"{inner_reason} ({inner}, carried in an IPv6 address)"
    return reason


def _matches(entries: Sequence[str], host: str, addresses: Iterable[IPAddress]) -> bool:
    """Whether ``host`` or any of ``addresses`` (each with the IPv4 addresses it carries) is in ``entries``."""
    candidates: list[IPAddress] = []
    for address in addresses:
        candidates.append(address)
        if isinstance(address, ipaddress.IPv6Address):
            candidates.extend(embedded_ipv4(address))
    for entry in entries:
        entry = entry.strip().lower()
        if entry == host.lower().rstrip("."):
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if any(candidate.version == network.version and candidate in network for candidate in candidates):
            return True
    return False


def _host(url: str) -> str:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise AddressRefused("the URL has no host name")
    return host


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None


_HINT = "; add it to [network].allow_addresses if this is intended"


@dataclass(frozen=True)
class AddressPolicy:
    """The policy with its exceptions (``[network]``) and the resolver it looks names up with.

    Attributes:
        allow: CIDRs or host names the built-in refusals do not apply to.
        deny: CIDRs or host names refused in any case (wins over ``allow``).
        resolve: ``socket.getaddrinfo``-shaped resolver (tests inject one).
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    resolve: Resolver = socket.getaddrinfo

    @classmethod
    def from_settings(cls, network: Any, *, resolve: Resolver = socket.getaddrinfo) -> AddressPolicy:
        """From a :class:`server.security.settings.NetworkSettings` (``None``: the defaults)."""
        if network is None:
            return cls(resolve=resolve)
        return cls(tuple(network.allow_addresses), tuple(getattr(network, "deny_addresses", ())), resolve)

    def check_addresses(self, host: str, addresses: Sequence[IPAddress], *, literal: bool = False) -> None:
        """Refuse when ``host`` or one of its ``addresses`` (``literal``: the host is that address) is refused.

        Raises:
            AddressRefused: naming the host, the address and the reason.
        """
        if _matches(self.deny, host, addresses):
            raise AddressRefused(f"host {host} is in [network].deny_addresses" if literal or not addresses
                                 else f"host {host} resolves to {addresses[0]}, in [network].deny_addresses")
        if _matches(self.allow, host, addresses):
            return
        if not addresses and host.lower().rstrip(".") in METADATA_HOSTS:
            raise AddressRefused(f"host {host} is a cloud metadata service name{_HINT}")
        for address in addresses:
            reason = refused_reason(address)
            if reason is not None:
                raise AddressRefused(f"address {host} is {reason}{_HINT}" if literal
                                     else f"host {host} resolves to {address}, {reason}{_HINT}")

    def check_url(self, url: str) -> None:
        """Refuse ``url`` when its host, as written, is refused (no DNS lookup)."""
        host = _host(url)
        address = _literal(host)
        self.check_addresses(host, [address] if address is not None else [], literal=address is not None)

    def resolved(self, host: str, port: int | None = None) -> list[IPAddress]:
        """Every address ``host`` resolves to now, each checked (an IP literal is not looked up).

        Raises:
            AddressRefused: one of them is refused.
            OSError: the name does not resolve.
        """
        literal = _literal(host)
        if literal is not None:
            self.check_addresses(host, [literal], literal=True)
            return [literal]
        self.check_addresses(host, [])  # metadata and denied names, before any lookup
        addresses: list[IPAddress] = []
        for info in self.resolve(host, port):
            address = _literal(str(info[4][0]))
            if address is not None and address not in addresses:
                addresses.append(address)
        self.check_addresses(host, addresses)
        return addresses

    def check_url_resolved(self, url: str) -> None:
        """:meth:`check_url`, then the same check on every address the host name resolves to.

        A name that does not resolve passes (the request will fail on its own).
        """
        self.check_url(url)
        try:
            self.resolved(_host(url))
        except (OSError, UnicodeError):
            return


def check_url(url: str, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> None:
    """:meth:`AddressPolicy.check_url` with the given exceptions.

    Raises:
        AddressRefused: refused; the message says why and what to set to allow it.
    """
    AddressPolicy(tuple(allow), tuple(deny)).check_url(url)


def check_url_resolved(url: str, allow: Sequence[str] = (), *, deny: Sequence[str] = (),
                       resolve: Resolver = socket.getaddrinfo) -> None:
    """:meth:`AddressPolicy.check_url_resolved` with the given exceptions and resolver.

    Raises:
        AddressRefused: refused.
    """
    AddressPolicy(tuple(allow), tuple(deny), resolve).check_url_resolved(url)
