"""Keeping credentials out of text that leaves the process (errors, logs, spans, results, stored rows).

:func:`redact` replaces, with ``[redacted]``:

- configured secret values, whole;
- **partial forms** of token-like secrets (16+ characters, no spaces or slashes, letters and digits): any run
  of :data:`FRAGMENT_CHARS` or more consecutive characters of the secret, so a key shown as its first 18 of 24
  characters and a star mask (``7f3a9c1e5b2d4f60a8******``), or cut off by a length limit, is masked too;
- **base64 forms** of secrets of 12+ characters, standard and URL-safe alphabet, at each of the three byte
  alignments the secret can have inside encoded data;
- strings shaped like well-known API keys and bearer tokens (OpenAI, Anthropic, Google, ours, JWTs).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable

# Shapes of well-known API keys and bearer tokens; a provider's own error text sometimes quotes part of one.
# Our own API keys (aiom_<id>_<secret>) and JWTs (three base64url parts, the first two JSON objects) too.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{6,}|sk-ant-[A-Za-z0-9_\-*]{6,}|Bearer\s+[A-Za-z0-9._\-~+/=]{8,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|aiom_[A-Za-z0-9_\-]{8,}|eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*)"
)
_MAX_DETAIL_CHARS = 300
FRAGMENT_CHARS = 12
"""The shortest run of a secret's characters that counts as the secret (an 18-of-24 mask shows 18)."""
_MARK = "[redacted]"
_TOKEN_LIKE = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[^\s/\\]{16,}$")


@functools.lru_cache(maxsize=64)
def _forms(secret: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(fragments, encodings)`` of one secret: its :data:`FRAGMENT_CHARS`-long windows (token-like secrets
    only) and the parts of its base64 encodings that depend on the secret alone."""
    fragments = tuple(dict.fromkeys(secret[i:i + FRAGMENT_CHARS]
                                    for i in range(len(secret) - FRAGMENT_CHARS + 1))) \
        if _TOKEN_LIKE.match(secret) else ()
    encodings: list[str] = []
    if len(secret) >= 12:
        raw = secret.encode()
        for offset in range(3):  # the secret's first byte at each position of a 3-byte base64 group
            encoded = base64.b64encode(b"\0" * offset + raw).decode()
            start = 0 if offset == 0 else 4  # the first group mixes in bytes before the secret
            end = ((offset + len(raw)) // 3) * 4  # the last full group; a partial one mixes in what follows
            core = encoded[start:end]
            if len(core) >= 8:
                encodings += [core, core.replace("+", "-").replace("/", "_")]
    return fragments, tuple(dict.fromkeys(encodings))


def _mask_runs(text: str, secret: str, fragments: tuple[str, ...]) -> str:
    """Replace every maximal run of ``secret``'s characters that contains one of its ``fragments``."""
    spans: list[tuple[int, int]] = []
    for index, fragment in enumerate(fragments):
        at = text.find(fragment)
        while at != -1:
            start, end, left, right = at, at + len(fragment), index, index + len(fragment)
            while left > 0 and start > 0 and text[start - 1] == secret[left - 1]:
                start, left = start - 1, left - 1
            while right < len(secret) and end < len(text) and text[end] == secret[right]:
                end, right = end + 1, right + 1
            spans.append((start, end))
            at = text.find(fragment, at + 1)
    if not spans:
        return text
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces, last = [], 0
    for start, end in merged:
        pieces += [text[last:start], _MARK]
        last = end
    return "".join(pieces) + text[last:]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with secrets (whole, partial and base64 forms) and key-shaped substrings redacted.

    Args:
        text: any text that may be shown to a client, logged, exported or stored.
        secrets: exact secret values known to the caller (configured API keys, headers, env values); values
            shorter than 4 characters are ignored.
    """
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        text = text.replace(secret, _MARK)
        fragments, encodings = _forms(secret)
        for encoded in encodings:
            text = text.replace(encoded, _MARK)
        if fragments:
            text = _mask_runs(text, secret, fragments)
    return _KEY_SHAPES.sub(_MARK, text)


def short_detail(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact and shorten upstream error text to one line of at most 300 characters."""
    one_line = " ".join(redact(text, secrets).split())
    if len(one_line) > _MAX_DETAIL_CHARS:
        return one_line[: _MAX_DETAIL_CHARS - 1] + "…"
    return one_line
