"""The ``openai`` provider in simple mode: the Chat Completions wire format over ``httpx2``, no SDK.

``POST {base_url}/chat/completions`` (https://platform.openai.com/docs/api-reference/chat/create), with
``Authorization: Bearer <key>`` when a key is set. The request is the one :mod:`server.pool.providers.openai_sdk`
sends, so OpenAI-compatible servers (Ollama, vLLM, LM Studio, OpenRouter) work the same in both modes.
"""

from __future__ import annotations

from server.pool.providers._formats import OpenAIChatFormat
from server.pool.providers._wire_base import WireProvider


class OpenAIWireProvider(OpenAIChatFormat, WireProvider):
    """A model behind the OpenAI Chat Completions API, spoken directly."""

    def _headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}
