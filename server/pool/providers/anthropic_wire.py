"""The ``anthropic`` provider in simple mode: the Messages wire format over ``httpx2``, no SDK.

``POST {base_url}/v1/messages`` (https://docs.anthropic.com/en/api/messages) with ``x-api-key`` (when a key
is set) and ``anthropic-version: 2023-06-01``. The request is the one :mod:`server.pool.providers.anthropic_sdk`
sends: no ``temperature`` (as the SDK 2.x Messages API), JSON mode as a system instruction.
"""

from __future__ import annotations

from typing import Any

from server.errors import MalformedReply
from server.pool.providers import Completion, CompletionRequest, Usage
from server.pool.providers._bodies import anthropic_messages_body
from server.pool.providers._wire_base import WireProvider, number

API_VERSION = "2023-06-01"
"""The ``anthropic-version`` header (https://docs.anthropic.com/en/api/versioning)."""


class AnthropicWireProvider(WireProvider):
    """A Claude model behind the Anthropic Messages API, spoken directly."""

    default_base_url = "https://api.anthropic.com"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        return {"anthropic-version": API_VERSION, **({"x-api-key": api_key} if api_key else {})}

    def _path(self) -> str:
        return "/v1/messages"

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        return anthropic_messages_body(self.model, request)

    def _completion(self, reply: dict[str, Any]) -> Completion:
        blocks = reply.get("content")
        if not isinstance(blocks, list):
            raise MalformedReply(self.name, "reply has no content blocks")
        texts = [block["text"] for block in blocks
                 if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)]
        if not texts:
            raise MalformedReply(self.name, "reply has no text block")
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        model = reply.get("model")
        return Completion(
            text="".join(texts),
            model=model if isinstance(model, str) and model else self.model,
            usage=Usage(input_tokens=number(usage.get("input_tokens")),
                        output_tokens=number(usage.get("output_tokens"))),
            finish_reason=reply.get("stop_reason"),
        )
