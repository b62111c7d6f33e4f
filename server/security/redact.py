"""Keeping credentials out of text that leaves the process (errors, logs, results, stored rows)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Shapes of well-known API keys and bearer tokens; a provider's own error text sometimes quotes part of one.
# Our own API keys (aiom_<id>_<secret>) and JWTs (three base64url parts, the first two JSON objects) too.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{6,}|sk-ant-[A-Za-z0-9_\-*]{6,}|Bearer\s+[A-Za-z0-9._\-~+/=]{8,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|aiom_[A-Za-z0-9_\-]{8,}|eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*)"
)
_MAX_DETAIL_CHARS = 300


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with the given secret values and key-shaped substrings replaced by ``[redacted]``.

    Args:
        text: any text that may be shown to a client, logged or stored.
        secrets: exact secret values known to the caller (configured API keys); empty values are ignored.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _KEY_SHAPES.sub("[redacted]", text)


def short_detail(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact and shorten upstream error text to one line of at most 300 characters."""
    one_line = " ".join(redact(text, secrets).split())
    if len(one_line) > _MAX_DETAIL_CHARS:
        return one_line[: _MAX_DETAIL_CHARS - 1] + "…"
    return one_line
