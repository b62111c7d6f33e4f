"""The ``openai`` provider: the official OpenAI SDK, for OpenAI and any OpenAI-compatible endpoint.

Chat Completions API (https://platform.openai.com/docs/api-reference/chat/create). Works with Ollama,
vLLM, LM Studio, OpenRouter and Gemini's OpenAI endpoint through ``base_url``. The SDK is imported on the
first call; its own retries are off (``max_retries=0``): the pool owns retrying and fallback.
"""

from __future__ import annotations

from typing import Any

from server.errors import MalformedReply
from server.providers import Completion, CompletionRequest, Usage
from server.providers._sdk_base import JSON_INSTRUCTION, SDKProvider


class OpenAIProvider(SDKProvider):
    """A model behind the OpenAI Chat Completions API."""

    sdk_module = "openai"
    default_base_url = "https://api.openai.com/v1"

    def _make_client(self, *, api_key: str, base_url: str) -> Any:
        import openai  # lazy: ~0.5 s of imports that tools/list must not pay

        return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=self.config.timeout_s)

    async def _call(self, client: Any, request: CompletionRequest) -> Any:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        params: dict[str, Any] = {"model": self.model, "messages": messages, "timeout": request.timeout_s}
        # OpenAI's own API wants max_completion_tokens (reasoning models refuse max_tokens); compatible
        # servers (Ollama, vLLM, LM Studio) know only max_tokens.
        params["max_completion_tokens" if self.config.base_url is None else "max_tokens"] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.response_format == "json":
            # JSON mode needs the word "JSON" in the messages; the instruction also helps compatible servers.
            params["response_format"] = {"type": "json_object"}
            messages.insert(0, {"role": "system", "content": JSON_INSTRUCTION})
        return await client.chat.completions.create(**params)

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
