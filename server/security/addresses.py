"""The outbound address policy: provider ``base_url`` s and workflow tool-step URLs.

A URL that a caller or a config file supplies can point the server at its own cloud's metadata service
(SSRF): ``169.254.169.254`` (AWS, GCP, Azure, OpenStack …), ``fd00:ec2::254`` (AWS IPv6),
``100.100.100.200`` (Alibaba), ``metadata.google.internal``. Those, and every link-local address
(169.254.0.0/16, fe80::/10), are refused unless ``[network].allow_addresses`` names them. Loopback and
private ranges stay allowed: local model servers (Ollama, vLLM) live there.

Checked twice: on the URL as written (config load; no DNS), and on the addresses its host name resolves to
(:func:`check_url_resolved`, at start-up and before each tool-step request), so a name that resolves to a
metadata address is refused too. Source: the OWASP SSRF Prevention Cheat Sheet; AWS IMDS documentation.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from server.errors import OrchestrationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = tuple(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.123", "fd00:ec2::254", "100.100.100.200"))
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.com"})


class AddressRefused(OrchestrationError):
    """A URL points at an address the policy refuses. The message names the host, never credentials."""


def _allowed(host: str, addresses: Iterable[IPAddress], allow: Sequence[str]) -> bool:
    for entry in allow:
        entry = entry.strip().lower()
        if entry == host.lower():
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if any(address in network for address in addresses):
            return True
    return False


def refused_reason(address: IPAddress) -> str | None:
    """Why ``address`` is refused, or ``None``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_multicast:
        return "not a unicast address"
    return None


def _host(url: str) -> str:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise AddressRefused("the URL has no host name")
    return host


def check_url(url: str, allow: Sequence[str] = ()) -> None:
    """Refuse ``url`` when its host, as written, is a metadata name or a refused IP literal (no DNS lookup).

    Raises:
        AddressRefused: refused; the message says why and what to set to allow it.
    """
    host = _host(url)
    try:
        address: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None:
        if host.lower().rstrip(".") in METADATA_HOSTS and not _allowed(host, (), allow):
            raise AddressRefused(f"host {host} is a cloud metadata service name; add it to "
                                 "[network].allow_addresses if this is intended")
        return
    reason = refused_reason(address)
    if reason and not _allowed(host, (address,), allow):
        raise AddressRefused(f"address {host} is {reason}; add it to [network].allow_addresses if this is intended")


def check_url_resolved(url: str, allow: Sequence[str] = (), *,
                       resolve: callable = socket.getaddrinfo) -> None:  # type: ignore[valid-type]
    """:func:`check_url`, then the same check on every address the host name resolves to.

    A name that does not resolve passes (the request will fail on its own).

    Raises:
        AddressRefused: refused.
    """
    check_url(url, allow)
    host = _host(url)
    try:
        infos = resolve(host, None)
    except (OSError, UnicodeError):
        return
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(info[4][0].split("%")[0]))
        except ValueError:
            continue
    for address in addresses:
        reason = refused_reason(address)
        if reason and not _allowed(host, addresses, allow):
            raise AddressRefused(f"host {host} resolves to {address}, {reason}; add it to "
                                 "[network].allow_addresses if this is intended")
