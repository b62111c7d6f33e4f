"""Reply screening that always runs, whatever the guardrails: text a provider sent back is made safe to return,
store and log, per call, so one bad reply fails or is cleaned in its own call only.

- :func:`clean_text`: lone UTF-16 surrogates (``\\ud800``, which JSON allows and UTF-8 cannot encode) and other
  code points that are not characters become U+FFFD, the replacement character (Unicode 15, §3.9, "U+FFFD
  substitution"); NUL becomes U+FFFD too.
- :class:`SecretMasker`: configured secrets (provider keys, downstream server credentials) that an upstream
  echoes are masked whole, in every form seen in the wild: the exact value, a part of it (a key shown with its
  last characters starred out, or cut short), and its base64 forms (standard and URL-safe, at each of the three
  alignments inside a longer base64 text).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

_NOT_CHARACTERS = re.compile("[\x00\ud800-\udfff\ufffe\uffff]")
# A masked or cut key continues with characters like these: the whole token is masked, not just the part seen.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-+/=*•…~]")
MASK = "[redacted]"


def clean_text(text: str) -> str:
    """``text`` with lone surrogates, NUL and noncharacters replaced by U+FFFD (a no-op for ordinary text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _NOT_CHARACTERS.sub("\ufffd", text)
    return _NOT_CHARACTERS.sub("\ufffd", text) if ("\x00" in text or "\ufffe" in text or "\uffff" in text) else text


def _base64_forms(secret: str) -> list[str]:
    """The parts of the base64 encodings of ``secret`` that do not depend on what surrounds it in the encoded
    text: for each of the three byte alignments, standard and URL-safe alphabets."""
    raw = secret.encode("utf-8", "ignore")
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\x00" * offset + raw).decode("ascii").rstrip("=")
        # Characters that mix padding bytes or the unknown next bytes in: drop them at both ends.
        start = (offset * 4 + 2) // 3
        end = len(encoded) - (1 if (offset + len(raw)) % 3 else 0)
        stable = encoded[start:end]
        forms += [stable, stable.replace("+", "-").replace("/", "_")]
    return forms


class SecretMasker:
    """Masks configured secrets in reply text (see the module docstring).

    A part of a secret is recognised as a run of at least ``min_run`` of its characters (12, or half the secret
    when that is shorter, but at least 8): random keys share no such run with ordinary text, and a key shown with
    18 of its 24 characters holds one. Secrets shorter than 8 characters are masked only where they appear
    whole. The search looks for a few fixed pieces of each form with ``str.find`` (any run of ``min_run``
    characters holds one of them) and confirms a hit by extending it, so a reply costs a few substring searches
    per secret.

    Args:
        secrets: the values to mask (empty values and ones under 4 characters are ignored).
    """

    ANCHOR = 8

    def __init__(self, secrets: Iterable[str]) -> None:
        self._forms: list[tuple[str, int, list[int]]] = []  # (form, min_run, anchor offsets)
        for secret in sorted({s for s in secrets if s and len(s) >= 4}):
            for form in (secret, *_base64_forms(secret)):
                if len(form) < self.ANCHOR:
                    if form == secret:
                        self._forms.append((form, len(form), [0]))
                    continue
                min_run = max(self.ANCHOR, min(12, len(form) // 2))
                step = min_run - self.ANCHOR + 1
                offsets = list(range(0, len(form) - self.ANCHOR + 1, step))
                self._forms.append((form, min_run, offsets))

    def mask(self, text: str) -> str:
        """``text`` with every token that carries a secret, whole or in part, replaced by ``[redacted]``."""
        spans = []
        for form, min_run, offsets in self._forms:
            width = min(self.ANCHOR, len(form))
            for offset in offsets:
                anchor = form[offset:offset + width]
                at = text.find(anchor)
                while at != -1:
                    run = _common_run(text, at, form, offset, width)
                    if run[1] - run[0] >= min_run:
                        spans.append(_token_around(text, *run))
                    at = text.find(anchor, at + 1)
        if not spans:
            return text
        pieces, last = [], 0
        for start, end in _merged(spans):
            pieces += [text[last:start], MASK]
            last = end
        return "".join([*pieces, text[last:]])


def _common_run(text: str, at: int, form: str, offset: int, width: int) -> tuple[int, int]:
    """The span of ``text`` around ``text[at:at + width] == form[offset:offset + width]`` that equals ``form``."""
    start, j = at, offset
    while start > 0 and j > 0 and text[start - 1] == form[j - 1]:
        start, j = start - 1, j - 1
    end, k = at + width, offset + width
    while end < len(text) and k < len(form) and text[end] == form[k]:
        end, k = end + 1, k + 1
    return start, end


def _token_around(text: str, start: int, end: int) -> tuple[int, int]:
    """``start``–``end`` widened to the whole token (a masked or cut key goes on with ``*``, ``…`` and the like)."""
    while start > 0 and _TOKEN_CHARS.match(text[start - 1]):
        start -= 1
    while end < len(text) and _TOKEN_CHARS.match(text[end]):
        end += 1
    return start, end


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
