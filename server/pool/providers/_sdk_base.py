"""What the two official-SDK providers share: lazy client creation, the call/translate frame, closing."""

from __future__ import annotations

import importlib
import json
import threading
from typing import Any

from server.config import ProviderConfig
from server.errors import MalformedReply, ProviderConnectionError, ProviderError, ProviderTimeout
from server.pool.providers import Completion, CompletionRequest
from server.pool.providers._errors import endpoint_host, error_for_status, unless_refused


class SDKProvider:
    """Base of the SDK providers. Subclasses say how to build the client, call it, and read its reply.

    Args:
        config: the provider's configuration, with its key already resolved.
    """

    sdk_module = ""
    """The vendor SDK's module name; both SDKs share the exception names used in :meth:`_translate`."""
    default_base_url = ""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
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
            response = await self._call(client, request)
        except Exception as exc:
            raise self._translate(exc) from exc
        return unless_refused(self.name, self._completion(response))

    def timeout_s(self, request: CompletionRequest) -> float:
        """The request's time limit, or the provider's configured one when the request sets none."""
        return self.config.timeout_s if request.timeout_s is None else request.timeout_s

    async def aclose(self) -> None:
        """Close the SDK client's connection pool. Idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _make_client(self, *, api_key: str, base_url: str) -> Any:
        raise NotImplementedError

    async def _call(self, client: Any, request: CompletionRequest) -> Any:
        raise NotImplementedError

    def _completion(self, response: Any) -> Completion:
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
