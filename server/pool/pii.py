"""PII redaction for ``[guardrails] redact_pii``: what leaves the server for a provider has personal data masked.

Replaced, in this order, each by its placeholder:

- e-mail addresses: ``[EMAIL]``;
- payment card numbers, 13 to 19 digits (spaces or dashes allowed between them), only when the Luhn check passes
  (ISO/IEC 7812-1): ``[CARD]``;
- US social security numbers written ``AAA-GG-SSSS``: ``[SSN]``;
- phone numbers: ``[PHONE]``. In full mode they are found by ``phonenumbers`` (Google's libphonenumber) as valid
  numbers, international ones (``+44 20 7946 0958``) and national ones of ``[guardrails] phone_region`` (default
  ``US``). In simple mode, which imports nothing beyond ``mcp``'s own dependencies, a narrow pattern stands in:
  an international number written with ``+`` and 8 to 15 digits (``+1 415 555 0100``, ``+49 30 901820``), or a
  North American number with ``-`` or ``.`` between its groups, or its area code in parentheses
  (``415-555-0100``, ``(415) 555-0100``, ``1-800-555-0199``). Neither mode takes a group out of a longer run of
  digit groups (a 16-digit number that fails the Luhn check stays as it is);
- IPv4 addresses: ``[IP]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

PhoneMode = Literal["library", "pattern"]
Span = tuple[int, int]

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,253}\.[A-Za-z]{2,24}")
_CARD = re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
_INTERNATIONAL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .\-]?\(?\d{1,4}\)?){2,6}(?!\d)")
_NORTH_AMERICAN = re.compile(r"(?<![\w+.\-])(?:1[ .\-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[.\-])[2-9]\d{2}[.\-]\d{4}(?!\d)")
_MORE_DIGITS = re.compile(r"[ .\-]?\(?\d")


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (ISO/IEC 7812-1 annex B)."""
    total, odd = 0, False
    for char in reversed(digits):
        d = int(char)
        if odd:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        odd = not odd
    return total % 10 == 0


def _isolated(text: str, start: int, end: int) -> bool:
    """The span is not one group of a longer run of digit groups (``1234 5678 9012 3456``)."""
    before = text[max(0, start - 2):start]
    return not _MORE_DIGITS.match(text, end) and not re.search(r"\d[ .\-]?$", before)


def phones_by_pattern(text: str) -> list[Span]:
    """Simple mode's phone numbers (the narrow pattern of the module docstring)."""
    spans = []
    for pattern in (_INTERNATIONAL, _NORTH_AMERICAN):
        for match in pattern.finditer(text):
            digits = sum(c.isdigit() for c in match.group())
            if (pattern is _NORTH_AMERICAN or 8 <= digits <= 15) and _isolated(text, *match.span()):
                spans.append(match.span())
    return _disjoint(spans)


def phones_by_library(region: str) -> Callable[[str], list[Span]]:
    """Full mode's phone numbers: ``phonenumbers.PhoneNumberMatcher`` at leniency VALID (imported on first use)."""

    def find(text: str) -> list[Span]:
        import phonenumbers  # full mode only: ~90 ms of imports, paid at the first redaction

        matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
        return _disjoint([(m.start, m.end) for m in matcher if _isolated(text, m.start, m.end)])

    return find


def _disjoint(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if not out or start >= out[-1][1]:
            out.append((start, end))
    return out


class PiiRedactor:
    """Replaces PII in text (see the module docstring).

    Args:
        phones: ``library`` (full mode: ``phonenumbers``) or ``pattern`` (simple mode: the narrow pattern).
        region: the region national phone numbers are read in (ISO 3166-1 alpha-2), for the library.
    """

    def __init__(self, phones: PhoneMode = "library", region: str = "US") -> None:
        self._phones = phones_by_library(region) if phones == "library" else phones_by_pattern

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """``text`` with PII replaced, and how many of each kind (``email``, ``card`` …) were replaced."""
        counts: dict[str, int] = {}

        def count(kind: str, placeholder: str, keep: Callable[[str], bool] = lambda _: True):
            def replace(match: re.Match[str]) -> str:
                if not keep(match.group()):
                    return match.group()
                counts[kind] = counts.get(kind, 0) + 1
                return placeholder
            return replace

        text = _EMAIL.sub(count("email", "[EMAIL]"), text)
        text = _CARD.sub(count("card", "[CARD]", lambda found: luhn_ok(re.sub(r"\D", "", found))), text)
        text = _SSN.sub(count("ssn", "[SSN]"), text)
        spans = self._phones(text) if any(c.isdigit() for c in text) else []
        if spans:
            counts["phone"] = len(spans)
            pieces, last = [], 0
            for start, end in spans:
                pieces += [text[last:start], "[PHONE]"]
                last = end
            text = "".join([*pieces, text[last:]])
        text = _IPV4.sub(count("ipv4", "[IP]"), text)
        return text, counts
