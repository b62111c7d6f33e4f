"""Guardrails on ``orchestrate`` and ``consensus``: allowed models, blocked patterns, PII redaction.

The seed's "guardian validation", configured in ``[guardrails]`` (:class:`GuardrailSettings`):

- ``allowed_models``: providers serving other models are left out of the pool at start-up
  (:func:`permitted_providers`), and a call that names one (``providers``, ``model``, ``judge``) is refused.
- ``blocked_input_patterns``: a prompt or system prompt matching one is refused before any provider is called.
- ``redact_pii``: e-mail addresses, phone numbers, payment card numbers (Luhn-checked), US social security
  numbers and IPv4 addresses in the prompt and system prompt are replaced by ``[EMAIL]`` … before the prompt
  leaves the server (and so are stored conversation turns).
- ``blocked_output_patterns``: an answer matching one is withheld (the call fails with the rule's name).

Every decision (allow, redact, block) is recorded in the store with the rule and a count, never the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.config import ProviderConfig
from server.errors import OrchestrationError
from server.security import Principal
from server.security.settings import GuardrailSettings
from server.store import GuardrailDecision, GuardrailLog

_PII: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("email", "[EMAIL]", re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,253}\.[A-Za-z]{2,24}")),
    ("card", "[CARD]", re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")),
    ("ssn", "[SSN]", re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")),
    ("phone", "[PHONE]", re.compile(r"(?<![\w+])\+?\d{1,3}[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}(?!\d)")),
    ("ipv4", "[IP]", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")),
)


class GuardrailBlocked(OrchestrationError):
    """A guardrail refused the call. The message names the rule, never the matching text."""


def _luhn_ok(digits: str) -> bool:
    total, odd = 0, False
    for char in reversed(digits):
        d = int(char)
        if odd:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        odd = not odd
    return total % 10 == 0


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with PII replaced, and how many of each kind were replaced."""
    counts: dict[str, int] = {}
    for kind, placeholder, pattern in _PII:
        def replace(match: re.Match[str], kind: str = kind, placeholder: str = placeholder) -> str:
            if kind == "card" and not _luhn_ok(re.sub(r"\D", "", match.group())):
                return match.group()
            counts[kind] = counts.get(kind, 0) + 1
            return placeholder

        text = pattern.sub(replace, text)
    return text, counts


def permitted_providers(settings: GuardrailSettings, providers: Sequence[ProviderConfig]) -> list[ProviderConfig]:
    """The providers whose model ``allowed_models`` permits (all of them when it is not set)."""
    if settings.allowed_models is None:
        return list(providers)
    return [p for p in providers if p.model in settings.allowed_models]


@dataclass
class Guardrails:
    """Applies :class:`GuardrailSettings` to one call at a time and records each decision."""

    settings: GuardrailSettings
    store: GuardrailLog
    configs: Sequence[ProviderConfig]
    clock: Callable[[], float]

    def __post_init__(self) -> None:
        self._input = [re.compile(p) for p in self.settings.blocked_input_patterns]
        self._output = [re.compile(p) for p in self.settings.blocked_output_patterns]
        self._by_name = {p.name: p for p in self.configs}

    def _record(self, tool: str, principal: Principal, stage: str, action: str, rule: str, detail: str = "") -> None:
        self.store.record_guardrail(GuardrailDecision(ts=self.clock(), tool=tool, principal=principal.id,
                                                      stage=stage, action=action, rule=rule,  # type: ignore[arg-type]
                                                      detail=detail))

    def check_models(self, tool: str, principal: Principal, names: Sequence[str], model: str | None) -> None:
        """Refuse named providers or a model that ``allowed_models`` does not permit.

        Raises:
            GuardrailBlocked: naming the provider or model.
        """
        allowed = self.settings.allowed_models
        if allowed is None:
            return
        for name in names:
            config = self._by_name.get(name)
            if config is not None and config.model not in allowed:
                self._record(tool, principal, "models", "block", "allowed_models", f"provider {name}")
                raise GuardrailBlocked(f"provider {name!r} serves model {config.model!r}, which the server's "
                                       "guardrails do not allow (allowed_models)")
        if model is not None and model not in allowed:
            self._record(tool, principal, "models", "block", "allowed_models", "model argument")
            raise GuardrailBlocked(f"model {model!r} is not allowed by the server's guardrails (allowed_models)")

    def screen_input(self, tool: str, principal: Principal, texts: Sequence[str | None]) -> list[str | None]:
        """Check ``texts`` (prompt, system …) against the input policy; return them with PII redacted.

        Raises:
            GuardrailBlocked: a blocked pattern matched (the message names its index in the config).
        """
        if not self.settings.active:
            return list(texts)
        for index, pattern in enumerate(self._input):
            if any(text and pattern.search(text) for text in texts):
                self._record(tool, principal, "input", "block", f"blocked_input_patterns[{index}]")
                raise GuardrailBlocked(f"the prompt was refused by the server's input guardrail "
                                       f"blocked_input_patterns[{index}]")
        out: list[str | None] = list(texts)
        if self.settings.redact_pii:
            totals: dict[str, int] = {}
            for position, text in enumerate(texts):
                if text:
                    out[position], counts = redact_pii(text)
                    for kind, count in counts.items():
                        totals[kind] = totals.get(kind, 0) + count
            if totals:
                detail = ", ".join(f"{kind}={count}" for kind, count in sorted(totals.items()))
                self._record(tool, principal, "input", "redact", "redact_pii", detail)
                return out
        self._record(tool, principal, "input", "allow", "input_policy")
        return out

    def screen_output(self, tool: str, principal: Principal, texts: Sequence[str | None]) -> None:
        """Withhold answers matching a blocked output pattern.

        Raises:
            GuardrailBlocked: naming the rule.
        """
        if not self.settings.active:
            return
        for index, pattern in enumerate(self._output):
            if any(text and pattern.search(text) for text in texts):
                self._record(tool, principal, "output", "block", f"blocked_output_patterns[{index}]")
                raise GuardrailBlocked(f"the answer was withheld by the server's output guardrail "
                                       f"blocked_output_patterns[{index}]")
        self._record(tool, principal, "output", "allow", "output_policy")
