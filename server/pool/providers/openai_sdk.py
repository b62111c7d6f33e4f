"""The ``openai`` provider: the official OpenAI SDK, for OpenAI and any OpenAI-compatible endpoint.

Chat Completions API (https://platform.openai.com/docs/api-reference/chat/create). Works with Ollama,
vLLM, LM Studio, OpenRouter and Gemini's OpenAI endpoint through ``base_url``. The SDK is imported on the
first call; its own retries are off (``max_retries=0``): the pool owns retrying and fallback.
"""

from __future__ import annotations

from typing import Any

from server.errors import MalformedReply
from server.pool.providers import Completion, CompletionRequest, Usage
from server.pool.providers._bodies import openai_chat_body
from server.pool.providers._sdk_base import SDKProvider


class OpenAIProvider(SDKProvider):
    """A model behind the OpenAI Chat Completions API."""

    sdk_module = "openai"
    default_base_url = "https://api.openai.com/v1"

    def _make_client(self, *, api_key: str, base_url: str, http_client: Any) -> Any:
        import openai  # lazy: ~0.5 s of imports that tools/list must not pay

        return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=self.config.timeout_s,
                                  http_client=http_client)

    async def _call(self, client: Any, request: CompletionRequest) -> Any:
        body = openai_chat_body(self.model, request, vendor_endpoint=self.config.base_url is None)
        return await client.chat.completions.create(**body, timeout=self.timeout_s(request))

    def _completion(self, response: Any) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise MalformedReply(self.name, "reply has no choices")
        text = choices[0].message.content
        if not isinstance(text, str):
            raise MalformedReply(self.name, "reply has no text content")
        usage = getattr(response, "usage", None)
        return Completion(
            text=text,
            model=getattr(response, "model", None) or self.model,
            usage=Usage(
                input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            finish_reason=choices[0].finish_reason,
        )
