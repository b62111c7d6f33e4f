"""What the two wire-protocol providers share: one lazy ``httpx2`` client, the call/translate frame, closing.

Simple mode's providers speak the vendors' HTTP wire formats themselves, so they run where only ``mcp`` (and
what it brings: ``httpx2``, ``anyio``, ``pydantic``) is installed. They honour the same contract as the SDK
providers (``tests/integration/test_providers.py``): the same completions, the same typed errors, no retries of their own.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2

from server.config import ProviderConfig
from server.errors import ProviderConnectionError, ProviderError, ProviderTimeout
from server.pool.providers import Completion, CompletionRequest
from server.pool.providers._errors import endpoint_host, error_for_status, unless_refused
from server.pool.providers._formats import reply_object
from server.security.addresses import AddressPolicy
from server.security.outbound import outbound_client


class WireProvider:
    """Base of the wire-protocol providers. Subclasses say where to post, what to send and how to read the reply.

    Args:
        config: the provider's configuration, with its key already resolved.
        transport: an ``httpx2`` transport to use instead of the network (tests pass ``httpx2.MockTransport``);
            the address policy does not apply to it.
        policy: the outbound address policy every request passes (default: the built-in one); see
            :mod:`server.security.outbound`.
    """

    default_base_url = ""

    def __init__(self, config: ProviderConfig, *, transport: httpx2.AsyncBaseTransport | None = None,
                 policy: AddressPolicy | None = None) -> None:
        self.config = config
        self._policy = policy or AddressPolicy()
        self.name = config.name
        self.model = config.model
        self._client: httpx2.AsyncClient | None = None
        self._transport = transport
        self._secrets = [config.api_key.get_secret_value()] if config.api_key else []

    def _http(self) -> httpx2.AsyncClient:
        # Built on first use, on the event loop (no await between the test and the assignment: no race).
        if self._client is None:
            headers = {"accept": "application/json", **self._headers(self._secrets[0] if self._secrets else None)}
            if self._transport is not None:  # a test's stand-in for the network: no addresses to check
                self._client = httpx2.AsyncClient(timeout=self.config.timeout_s, transport=self._transport,
                                                  headers=headers, follow_redirects=False)
            else:  # no redirects, the address policy on every request; proxies from the environment
                self._client = outbound_client(self._policy, timeout=self.config.timeout_s, headers=headers)
        return self._client

    async def complete(self, request: CompletionRequest) -> Completion:
        """One completion: a single POST, no retries (the pool owns retrying and fallback).

        Raises:
            server.errors.ProviderError: a subclass naming the failure class, as the SDK providers raise.
        """
        client = self._http()
        url = (self.config.base_url or self.default_base_url).rstrip("/") + self._path()
        timeout_s = self.config.timeout_s if request.timeout_s is None else request.timeout_s
        try:
            with anyio.fail_after(timeout_s):
                response = await client.post(url, json=self._body(request), timeout=timeout_s)
                content = await response.aread()
        except Exception as exc:
            raise self._translate(exc) from exc
        if not 200 <= response.status_code < 300:
            raise error_for_status(self.name, response.status_code, _error_message(content),
                                   dict(response.headers), self._secrets)
        return unless_refused(self.name, self._completion(reply_object(self.name, content)))

    def _host(self) -> str:
        return endpoint_host(self.config.base_url or self.default_base_url)

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _headers(self, api_key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def _path(self) -> str:
        raise NotImplementedError

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _completion(self, reply: dict[str, Any]) -> Completion:
        raise NotImplementedError

    def _translate(self, exc: Exception) -> ProviderError:
        """The one place where transport exceptions become ours."""
        if isinstance(exc, (TimeoutError, httpx2.TimeoutException)):
            return ProviderTimeout(self.name, f"request to {self._host()} timed out")
        if isinstance(exc, httpx2.TransportError):
            return ProviderConnectionError(self.name, f"could not connect to {self._host()}, or the connection "
                                           "dropped")
        return ProviderError(self.name, f"unexpected {type(exc).__name__}")


def _error_message(content: bytes) -> str:
    """The upstream's own error message: ``error.message`` in both wire formats, else the body's text."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return content[:500].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return json.dumps(body)[:500]
