"""The ``openai`` provider: the official OpenAI SDK, for OpenAI and any OpenAI-compatible endpoint.

Chat Completions API (https://platform.openai.com/docs/api-reference/chat/create). Works with Ollama,
vLLM, LM Studio, OpenRouter and Gemini's OpenAI endpoint through ``base_url``. The SDK is imported on the
first call; its own retries are off (``max_retries=0``): the pool owns retrying and fallback.
"""

from __future__ import annotations

from typing import Any

from server.pool.providers._formats import OpenAIChatFormat
from server.pool.providers._sdk_base import SDKProvider


class OpenAIProvider(OpenAIChatFormat, SDKProvider):
    """A model behind the OpenAI Chat Completions API."""

    sdk_module = "openai"

    def _make_client(self, *, api_key: str, base_url: str, http_client: Any) -> Any:
        import openai  # lazy: ~0.5 s of imports that tools/list must not pay

        return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=self.config.timeout_s,
                                  http_client=http_client)
