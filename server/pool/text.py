"""Small text helpers shared by the pool and the aggregation methods."""

from __future__ import annotations


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
