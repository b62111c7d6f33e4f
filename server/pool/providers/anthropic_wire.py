"""The ``anthropic`` provider in simple mode: the Messages wire format over ``httpx2``, no SDK.

``POST {base_url}/v1/messages`` (https://docs.anthropic.com/en/api/messages) with ``x-api-key`` (when a key
is set) and ``anthropic-version: 2023-06-01``. The request is the one :mod:`server.pool.providers.anthropic_sdk`
sends: no ``temperature`` (as the SDK 2.x Messages API), JSON mode as a system instruction.
"""

from __future__ import annotations

from server.pool.providers._formats import AnthropicMessagesFormat
from server.pool.providers._wire_base import WireProvider

API_VERSION = "2023-06-01"
"""The ``anthropic-version`` header (https://docs.anthropic.com/en/api/versioning)."""


class AnthropicWireProvider(AnthropicMessagesFormat, WireProvider):
    """A Claude model behind the Anthropic Messages API, spoken directly."""

    def _headers(self, api_key: str | None) -> dict[str, str]:
        return {"anthropic-version": API_VERSION, **({"x-api-key": api_key} if api_key else {})}
