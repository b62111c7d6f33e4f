"""Small text helpers shared by the pool and the aggregation methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.pool.providers import CompletionRequest


def strip_code_fence(text: str) -> str:
    """The text inside a single Markdown code fence (models often wrap JSON in one), else the text stripped."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        inner = stripped[3:-3]
        return (inner.split("\n", 1)[1] if "\n" in inner else inner).strip()
    return stripped


def estimate_tokens(text: str) -> int:
    """Rough token count for limits and routing: one token per four characters (OpenAI's rule of thumb)."""
    return (len(text) + 3) // 4


def prompt_tokens(request: CompletionRequest) -> int:
    """Estimated input tokens of a request: its system prompt and every message."""
    return estimate_tokens(request.system or "") + sum(estimate_tokens(m.content) for m in request.messages)


def request_tokens(request: CompletionRequest) -> int:
    """Estimated tokens a request may use (input plus ``max_tokens``), for the tokens-per-minute limits."""
    return prompt_tokens(request) + request.max_tokens
