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
from server.errors import MalformedReply, ProviderConnectionError, ProviderError, ProviderTimeout
from server.pool.providers import Completion, CompletionRequest
from server.pool.providers._errors import endpoint_host, error_for_status, unless_refused


class WireProvider:
    """Base of the wire-protocol providers. Subclasses say where to post, what to send and how to read the reply.

    Args:
        config: the provider's configuration, with its key already resolved.
        transport: an ``httpx2`` transport to use instead of the network (tests pass ``httpx2.MockTransport``).
    """

    default_base_url = ""

    def __init__(self, config: ProviderConfig, *, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self._client: httpx2.AsyncClient | None = None
        self._transport = transport
        self._secrets = [config.api_key.get_secret_value()] if config.api_key else []

    def _http(self) -> httpx2.AsyncClient:
        # Built on first use, on the event loop (no await between the test and the assignment: no race).
        if self._client is None:
            self._client = httpx2.AsyncClient(
                timeout=self.config.timeout_s, transport=self._transport,  # proxies from the environment, as the SDKs
                headers={"accept": "application/json", **self._headers(self._secrets[0] if self._secrets else None)},
            )
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
        try:
            reply = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedReply(self.name, f"unreadable reply ({type(exc).__name__})") from exc
        if not isinstance(reply, dict):
            raise MalformedReply(self.name, "reply is not a JSON object")
        return unless_refused(self.name, self._completion(reply))

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


def number(value: Any) -> int:
    """A token count from a reply field (missing or not a number: 0)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
