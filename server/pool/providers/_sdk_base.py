"""What the two official-SDK providers share: lazy client creation, the call/translate frame, closing.

A call posts the wire format's body (:mod:`server.pool.providers._formats`) through the SDK client's raw request
(``client.post(path, cast_to=httpx2.Response, body=…)``: the openai README's "Undocumented endpoints"; the anthropic
client has the same public ``post`` from the same generator): the SDK's own client, headers, authentication,
timeouts and typed errors, without the typed request transform and reply models of ``chat.completions.create`` /
``messages.create``. Those cost about 1.1 ms of CPU per call on this project's machines (about half the SDK's
share of a call); the reply's JSON is read by the same reader as simple mode's.
"""

from __future__ import annotations

import importlib
import json
import threading
from typing import Any

import httpx2

from server.config import ProviderConfig
from server.errors import MalformedReply, ProviderConnectionError, ProviderError, ProviderTimeout
from server.pool.providers import Completion, CompletionRequest
from server.pool.providers._errors import endpoint_host, error_for_status, unless_refused
from server.pool.providers._formats import reply_object
from server.security.addresses import AddressPolicy
from server.security.outbound import outbound_client


class SDKProvider:
    """Base of the SDK providers. Subclasses say how to build the client, call it, and read its reply.

    Args:
        config: the provider's configuration, with its key already resolved.
        policy: the outbound address policy every request (and connection) passes (default: the built-in one,
            without ``[network]`` exceptions); see :mod:`server.security.outbound`.
    """

    sdk_module = ""
    """The vendor SDK's module name; both SDKs share the exception names used in :meth:`_translate`."""
    default_base_url = ""

    def __init__(self, config: ProviderConfig, *, policy: AddressPolicy | None = None) -> None:
        self.config = config
        self._policy = policy or AddressPolicy()
        self.name = config.name
        self.model = config.model
        self._client: Any = None
        self._secrets = [config.api_key.get_secret_value()] if config.api_key else []
        # Concurrent first calls prepare on several worker threads; exactly one may build the client.
        self._client_lock = threading.Lock()

    def _sdk(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client(
                    # A local endpoint (Ollama, the simulator) needs no key; the SDKs insist on a non-empty one.
                    api_key=self._secrets[0] if self._secrets else "unused",
                    base_url=self.config.base_url or self.default_base_url,
                    # Ours, not the SDK's default: no redirects, and the address policy on every request.
                    http_client=outbound_client(self._policy, timeout=self.config.timeout_s),
                )
            return self._client

    async def prepare(self) -> None:
        """Import the SDK and build the client on a worker thread, so the first call neither blocks the event
        loop on ~0.5–0.9 s of imports nor counts them as provider latency."""
        if self._client is None:
            import anyio

            # Abandoned when cancelled (a shutdown during the warm start): the import finishes on its own.
            await anyio.to_thread.run_sync(self._sdk, abandon_on_cancel=True)

    async def complete(self, request: CompletionRequest) -> Completion:
        """One completion. Raises the :mod:`server.errors` provider errors."""
        client = self._sdk()
        try:
            # Below 200 or from 300 up the SDK raises its typed status error (no redirect is followed).
            response = await client.post(self._path(), cast_to=httpx2.Response, body=self._body(request),
                                         options={"timeout": self.timeout_s(request)})
        except Exception as exc:
            raise self._translate(exc) from exc
        return unless_refused(self.name, self._completion(reply_object(self.name, response.content)))

    def timeout_s(self, request: CompletionRequest) -> float:
        """The request's time limit, or the provider's configured one when the request sets none."""
        return self.config.timeout_s if request.timeout_s is None else request.timeout_s

    async def aclose(self) -> None:
        """Close the SDK client's connection pool. Idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _make_client(self, *, api_key: str, base_url: str, http_client: Any) -> Any:
        raise NotImplementedError

    def _path(self) -> str:
        """The API path, relative to the client's base URL."""
        raise NotImplementedError

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _completion(self, reply: dict[str, Any]) -> Completion:
        raise NotImplementedError

    def _translate(self, exc: Exception) -> ProviderError:
        """The one place where the vendor SDK's exceptions become ours."""
        sdk = importlib.import_module(self.sdk_module)
        host = endpoint_host(self.config.base_url or self.default_base_url)
        if isinstance(exc, sdk.APITimeoutError):
            return ProviderTimeout(self.name, f"request to {host} timed out")
        if isinstance(exc, sdk.APIConnectionError):
            return ProviderConnectionError(self.name, f"could not connect to {host}, or the connection dropped")
        if isinstance(exc, sdk.APIStatusError):
            headers = dict(exc.response.headers) if exc.response is not None else None
            return error_for_status(self.name, exc.status_code, exc.message, headers, self._secrets)
        if isinstance(exc, (sdk.APIResponseValidationError, json.JSONDecodeError, ValueError, TypeError)):
            return MalformedReply(self.name, f"unreadable reply ({type(exc).__name__})")
        return ProviderError(self.name, f"unexpected {type(exc).__name__}")
