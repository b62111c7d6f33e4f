"""The ``openai`` provider in simple mode: the Chat Completions wire format over ``httpx2``, no SDK.

``POST {base_url}/chat/completions`` (https://platform.openai.com/docs/api-reference/chat/create), with
``Authorization: Bearer <key>`` when a key is set. The request is the one :mod:`server.pool.providers.openai_sdk`
sends, so OpenAI-compatible servers (Ollama, vLLM, LM Studio, OpenRouter) work the same in both modes.
"""

from __future__ import annotations

from typing import Any

from server.errors import MalformedReply
from server.pool.providers import Completion, CompletionRequest, Usage
from server.pool.providers._bodies import openai_chat_body
from server.pool.providers._wire_base import WireProvider, number


class OpenAIWireProvider(WireProvider):
    """A model behind the OpenAI Chat Completions API, spoken directly."""

    default_base_url = "https://api.openai.com/v1"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def _path(self) -> str:
        return "/chat/completions"

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        return openai_chat_body(self.model, request, vendor_endpoint=self.config.base_url is None)

    def _completion(self, reply: dict[str, Any]) -> Completion:
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
                or not isinstance(choices[0].get("message"), dict):
            raise MalformedReply(self.name, "reply has no choices")
        text = choices[0]["message"].get("content")
        if not isinstance(text, str):
            raise MalformedReply(self.name, "reply has no text content")
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        model = reply.get("model")
        return Completion(
            text=text,
            model=model if isinstance(model, str) and model else self.model,
            usage=Usage(input_tokens=number(usage.get("prompt_tokens")),
                        output_tokens=number(usage.get("completion_tokens"))),
            finish_reason=choices[0].get("finish_reason"),
        )
