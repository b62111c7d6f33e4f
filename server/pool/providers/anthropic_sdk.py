"""The ``anthropic`` provider: the official Anthropic SDK (Messages API).

https://docs.anthropic.com/en/api/messages. The SDK is imported on the first call; its own retries are
off (``max_retries=0``): the pool owns retrying and fallback.

The Messages API of SDK 2.x takes no ``temperature`` (sampling is the model's own), so a requested
temperature is not sent to Anthropic models.
"""

from __future__ import annotations

from typing import Any

from server.errors import MalformedReply
from server.pool.providers import Completion, CompletionRequest, Usage
from server.pool.providers._bodies import anthropic_messages_body
from server.pool.providers._sdk_base import SDKProvider


class AnthropicProvider(SDKProvider):
    """A Claude model behind the Anthropic Messages API."""

    sdk_module = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def _make_client(self, *, api_key: str, base_url: str, http_client: Any) -> Any:
        import anthropic  # lazy: ~0.9 s of imports that tools/list must not pay

        return anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=self.config.timeout_s, http_client=http_client
        )

    async def _call(self, client: Any, request: CompletionRequest) -> Any:
        return await client.messages.create(**anthropic_messages_body(self.model, request), timeout=self.timeout_s(request))

    def _completion(self, response: Any) -> Completion:
        blocks = getattr(response, "content", None)
        if not isinstance(blocks, list):
            raise MalformedReply(self.name, "reply has no content blocks")
        texts = [block.text for block in blocks if getattr(block, "type", None) == "text"]
        if not texts:
            raise MalformedReply(self.name, "reply has no text block")
        usage = getattr(response, "usage", None)
        return Completion(
            text="".join(texts),
            model=getattr(response, "model", None) or self.model,
            usage=Usage(
                input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            ),
            finish_reason=getattr(response, "stop_reason", None),
        )
