"""Outbound HTTP clients whose every request passes the address policy (:mod:`server.security.addresses`).

Provider clients (the openai and anthropic SDKs, the wire-protocol providers) and downstream MCP servers reached
over HTTP are built here. Two rules hold on every hop:

- **No redirects are followed** (``follow_redirects=False``): a provider API has no reason to redirect a POST,
  and a followed redirect would carry the request, and headers that may hold secrets, to another host. The
  3xx reply reaches the caller as an error (a provider's "HTTP 307", a downstream server's failed call).
- **Names are re-resolved and checked per request, and the connection is pinned to the checked address**
  (:class:`PolicyTransport`): the host name is looked up again for each request, every address it resolves to
  must pass the policy, and the request is sent to that very address (``Host`` header and TLS server name stay
  the name's, so certificates are still verified against it). A name that resolved to an allowed address at
  start-up and to a metadata address later is refused then, and DNS rebinding between the check and the
  connection is not possible.

With ``HTTP(S)_PROXY`` in the environment httpx2 sends matching requests through the proxy on its own transport,
and the proxy resolves names: those requests are checked at start-up only (the URL as written and resolved).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

import anyio
import httpx2

from server.security.addresses import AddressPolicy, AddressRefused

logger = logging.getLogger(__name__)
# The provider SDKs' own defaults (openai and anthropic ``DEFAULT_CONNECTION_LIMITS``).
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


class OutboundRefused(httpx2.ConnectError):
    """A request to an address the policy refuses; it was never sent. The message names host and reason."""


class PolicyTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that resolves each request's host, checks every address, and connects to one of them.

    Args:
        policy: the address policy (its resolver too).
        inner: the transport that sends the pinned request (default: ``httpx2.AsyncHTTPTransport``; tests pass
            ``httpx2.MockTransport``).
    """

    def __init__(self, policy: AddressPolicy, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else httpx2.AsyncHTTPTransport(limits=LIMITS)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        try:
            if literal is not None:  # no lookup, no thread hop: the common local-server case stays cheap
                self._policy.check_addresses(host, [literal], literal=True)
                return await self._inner.handle_async_request(request)
            addresses = await anyio.to_thread.run_sync(self._policy.resolved, host, request.url.port)
        except AddressRefused as exc:
            logger.warning("refused an outbound request: %s", exc)
            raise OutboundRefused(f"refused by the address policy: {exc}", request=request) from None
        except (OSError, UnicodeError):
            raise httpx2.ConnectError(f"could not resolve {host}", request=request) from None
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions.setdefault("sni_hostname", host)  # certificates are verified against the name
        failure: httpx2.ConnectError | None = None
        for address in addresses:  # in the resolver's order (RFC 6724), the next one if a connection fails
            pinned = httpx2.Request(request.method, request.url.copy_with(host=str(address)),
                                    headers=request.headers, stream=request.stream, extensions=extensions)
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError as exc:  # nothing was sent yet: the body is still unread
                failure = exc
        raise failure or httpx2.ConnectError(f"{host} resolves to no address", request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def outbound_client(policy: AddressPolicy, *, timeout: float | None = None,
                    headers: Mapping[str, str] | None = None,
                    transport: httpx2.AsyncBaseTransport | None = None, **kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` that follows no redirect and sends every request through :class:`PolicyTransport`.

    Args:
        policy: the address policy.
        timeout: the client's default timeout in seconds (requests may pass their own).
        headers: sent with every request.
        transport: the transport under the policy (tests: ``httpx2.MockTransport``).
        kwargs: other ``httpx2.AsyncClient`` arguments (not ``follow_redirects`` or ``transport``).
    """
    return httpx2.AsyncClient(timeout=timeout, headers=dict(headers or {}), follow_redirects=False,
                              transport=PolicyTransport(policy, transport), **kwargs)
