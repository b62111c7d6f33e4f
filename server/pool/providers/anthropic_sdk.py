"""The ``anthropic`` provider: the official Anthropic SDK (Messages API).

https://docs.anthropic.com/en/api/messages. The SDK is imported on the first call; its own retries are
off (``max_retries=0``): the pool owns retrying and fallback.

The Messages API of SDK 2.x takes no ``temperature`` (sampling is the model's own), so a requested
temperature is not sent to Anthropic models.
"""

from __future__ import annotations

from typing import Any

from server.pool.providers._formats import AnthropicMessagesFormat
from server.pool.providers._sdk_base import SDKProvider


class AnthropicProvider(AnthropicMessagesFormat, SDKProvider):
    """A Claude model behind the Anthropic Messages API."""

    sdk_module = "anthropic"

    def _make_client(self, *, api_key: str, base_url: str, http_client: Any) -> Any:
        import anthropic  # lazy: ~0.9 s of imports that tools/list must not pay

        return anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=self.config.timeout_s, http_client=http_client
        )
