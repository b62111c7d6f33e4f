"""The policy layer: one screening wrapper on the whole provider path.

Nothing reaches a provider without passing it: the pool hands out providers only wrapped in a
:class:`ScreenedProvider` bound to a call's :class:`CallPolicy` (:meth:`server.pool.ProviderPool.fallback` for
``orchestrate``, :meth:`~server.pool.ProviderPool.provider` for each consensus answer and the judge), and every
path — the tools, workflow steps (under the run's starter), incident-started workflows (under a system principal),
the CLI — gets its providers there. Tools pass the caller's principal down; they do not screen.

What it applies, per call:

- ``[guardrails] allowed_models``: providers serving other models leave the pool at start-up
  (:meth:`Policy.permitted`); naming one, or such a ``model``, is refused (:meth:`CallPolicy.check_models`).
- ``blocked_input_patterns``: a prompt or system prompt (or any message) matching one is refused before any
  provider is called.
- ``redact_pii``: PII in what is sent is replaced (:mod:`server.pool.pii`) before it leaves; callers store the
  screened request (conversation turns, the cache key), never the raw one.
- ``[limits] max_tokens_per_call`` and ``max_cost_usd_per_call``: the worst case (every answer at its
  ``max_tokens``, priced at the providers the call can actually use) is checked before anything is sent
  (:meth:`CallPolicy.check_plan` for a planned fan-out, and each wrapped call's own charge).
- on every reply, whatever is configured: text cleaned and configured secrets masked (:mod:`server.pool.replies`);
  then ``blocked_output_patterns``: a matching answer is withheld.

Every guardrail decision (allow, redact, block; the rule and counts, never the text) is recorded when guardrails
are configured.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
import anyio

from server.config import Config, ProviderConfig
from server.errors import CeilingExceeded, GuardrailBlocked
from server.pool.pii import PhoneMode, PiiRedactor
from server.pool.providers import Completion, CompletionRequest, Message, Provider
from server.pool.replies import SecretMasker, clean_text
from server.pool.text import prompt_tokens
from server.security import Principal
from server.security.settings import GuardrailSettings, LimitSettings
from server.store import GuardrailDecision, GuardrailLog

_THREAD_CHARS = 100_000
"""Texts longer than this are screened on a worker thread (PII redaction of a 1,000,000-character prompt takes
a noticeable part of a second)."""


class Policy:
    """The server's policy on the provider path (see the module docstring).

    Args:
        guardrails: ``[guardrails]``.
        limits: ``[limits]`` (the per-call ceilings).
        decisions: where guardrail decisions are recorded.
        clock: Unix seconds.
        secrets: configured credentials, masked in replies.
        phones: how PII redaction finds phone numbers (``library`` in full mode, ``pattern`` in simple mode).
    """

    def __init__(self, guardrails: GuardrailSettings, limits: LimitSettings, decisions: GuardrailLog, *,
                 clock: Callable[[], float] = time.time, secrets: Sequence[str] = (),
                 phones: PhoneMode = "library") -> None:
        self.guardrails = guardrails
        self.limits = limits
        self._decisions = decisions
        self._clock = clock
        self.input_patterns = [re.compile(p) for p in guardrails.blocked_input_patterns]
        self.output_patterns = [re.compile(p) for p in guardrails.blocked_output_patterns]
        self.pii = PiiRedactor(phones, guardrails.phone_region) if guardrails.redact_pii else None
        self.masker = SecretMasker(secrets)

    @classmethod
    def from_config(cls, config: Config, decisions: GuardrailLog, *, clock: Callable[[], float] = time.time,
                    phones: PhoneMode = "library") -> Policy:
        """The policy ``config`` describes (its guardrails, limits and secrets)."""
        return cls(config.guardrails, config.limits, decisions, clock=clock, secrets=config.secrets(), phones=phones)

    def permitted(self, configs: Sequence[ProviderConfig]) -> list[ProviderConfig]:
        """The providers whose model ``allowed_models`` permits (all of them when it is not set)."""
        allowed = self.guardrails.allowed_models
        return list(configs) if allowed is None else [c for c in configs if c.model in allowed]

    def for_call(self, principal: Principal, tool: str) -> CallPolicy:
        """The screening state of one call made for ``principal`` on behalf of ``tool``."""
        return CallPolicy(self, principal, tool)

    def record(self, tool: str, principal: Principal, stage: str, action: str, rule: str, detail: str = "") -> None:
        if self.guardrails.active:
            self._decisions.record_guardrail(GuardrailDecision(
                ts=self._clock(), tool=tool, principal=principal.id, stage=stage,  # type: ignore[arg-type]
                action=action, rule=rule, detail=detail))  # type: ignore[arg-type]


class CallPolicy:
    """The policy applied to one call: its decisions, its committed worst-case cost, and what it has screened.

    A request screened once is not screened (or recorded) again within the call: the consensus fan-out sends
    one request to every answerer and records one input decision.
    """

    def __init__(self, policy: Policy, principal: Principal, tool: str) -> None:
        self.policy = policy
        self.principal = principal
        self.tool = tool
        self._screened: dict[tuple, tuple[str | None, tuple[Message, ...]]] = {}
        self._reserved_usd = 0.0
        self._charged_usd = 0.0
        self._answers = 0

    # -- models and ceilings -----------------------------------------------------------------------------------

    def check_models(self, named: Sequence[ProviderConfig], model: str | None = None) -> None:
        """Refuse named providers, or a ``model``, that ``allowed_models`` does not permit.

        Raises:
            GuardrailBlocked: naming the provider or model.
        """
        allowed = self.policy.guardrails.allowed_models
        if allowed is None:
            return
        for config in named:
            if config.model not in allowed:
                self._record("models", "block", "allowed_models", f"provider {config.name}")
                raise GuardrailBlocked(f"provider {config.name!r} serves model {config.model!r}, which the server's "
                                       "guardrails do not allow (allowed_models)")
        if model is not None and model not in allowed:
            self._record("models", "block", "allowed_models", "model argument")
            raise GuardrailBlocked(f"model {model!r} is not allowed by the server's guardrails (allowed_models)")

    def check_plan(self, answers: Sequence[tuple[ProviderConfig, int]], max_tokens: int) -> None:
        """Check a planned fan-out against the ceilings before any of it is sent, and reserve its worst case.

        Args:
            answers: every answer the call may ask for: (provider, estimated input tokens).
            max_tokens: each answer's completion ceiling.

        Raises:
            CeilingExceeded: with the figures and what to change.
        """
        self._check_tokens(max_tokens)
        worst = sum(config.cost_usd(tokens, max_tokens) for config, tokens in answers)
        self._check_cost(worst, len(answers), max_tokens)
        self._reserved_usd = max(self._reserved_usd, worst)

    def charge(self, candidates: Sequence[ProviderConfig], request: CompletionRequest) -> None:
        """Count one answer (from the dearest of ``candidates``) against the call's ceilings.

        Raises:
            CeilingExceeded: this answer would take the call's worst case over a ceiling.
        """
        limits = self.policy.limits
        self._check_tokens(request.max_tokens)
        if limits.max_cost_usd_per_call is None or not candidates:
            return
        tokens = prompt_tokens(request)
        charged = self._charged_usd + max(c.cost_usd(tokens, request.max_tokens) for c in candidates)
        self._check_cost(max(self._reserved_usd, charged), self._answers + 1, request.max_tokens)
        self._charged_usd, self._answers = charged, self._answers + 1

    def _check_tokens(self, max_tokens: int) -> None:
        ceiling = self.policy.limits.max_tokens_per_call
        if ceiling is not None and max_tokens > ceiling:
            raise CeilingExceeded(f"max_tokens {max_tokens} is over this server's ceiling of {ceiling} per call: "
                                  "ask for fewer")

    def _check_cost(self, worst: float, answers: int, max_tokens: int) -> None:
        ceiling = self.policy.limits.max_cost_usd_per_call
        if ceiling is not None and worst > ceiling:
            raise CeilingExceeded(f"this call could cost up to ${worst:.4f} ({answers} answer(s) of up to {max_tokens} "
                                  f"tokens at the providers it can use), over this server's ceiling of "
                                  f"${ceiling:.4f} per call: lower max_tokens, shorten the prompt or ask fewer "
                                  "or cheaper providers")

    # -- requests and replies ----------------------------------------------------------------------------------

    async def screen_request(self, request: CompletionRequest) -> CompletionRequest:
        """``request`` as it may leave the server: refused if an input pattern matches, PII redacted.

        Raises:
            GuardrailBlocked: naming the rule (never the text).
        """
        policy = self.policy
        if not (policy.input_patterns or policy.pii):
            return request
        key = (request.system, request.messages)
        done = self._screened.get(key)
        if done is None:
            size = len(request.system or "") + sum(len(m.content) for m in request.messages)
            if size > _THREAD_CHARS:
                done = await anyio.to_thread.run_sync(self._screen_texts, request)
            else:
                done = self._screen_texts(request)
            self._screened[key] = self._screened[(done[0], done[1])] = done
        return replace(request, system=done[0], messages=done[1])

    def _screen_texts(self, request: CompletionRequest) -> tuple[str | None, tuple[Message, ...]]:
        policy = self.policy
        texts = [request.system, *(m.content for m in request.messages)]
        for index, pattern in enumerate(policy.input_patterns):
            if any(text and pattern.search(text) for text in texts):
                self._record("input", "block", f"blocked_input_patterns[{index}]")
                raise GuardrailBlocked(f"the prompt was refused by the server's input guardrail "
                                       f"blocked_input_patterns[{index}]")
        if policy.pii is None:
            self._record("input", "allow", "input_policy")
            return request.system, request.messages
        totals: dict[str, int] = {}
        out: list[str | None] = []
        for text in texts:
            if not text:
                out.append(text)
                continue
            redacted, counts = policy.pii.redact(text)
            out.append(redacted)
            for kind, count in counts.items():
                totals[kind] = totals.get(kind, 0) + count
        if totals:
            detail = ", ".join(f"{kind}={count}" for kind, count in sorted(totals.items()))
            self._record("input", "redact", "redact_pii", detail)
        else:
            self._record("input", "allow", "input_policy")
        messages = tuple(replace(m, content=text or "") for m, text in zip(request.messages, out[1:], strict=True))
        return out[0], messages

    def screen_completion(self, completion: Completion) -> Completion:
        """A reply as it may be returned and stored: cleaned, secrets masked, then the output policy.

        Raises:
            GuardrailBlocked: a blocked output pattern matched (the answer is withheld; the rule is named).
        """
        policy = self.policy
        text = policy.masker.mask(clean_text(completion.text))
        model = clean_text(completion.model)
        if policy.guardrails.active:
            for index, pattern in enumerate(policy.output_patterns):
                if pattern.search(text):
                    self._record("output", "block", f"blocked_output_patterns[{index}]")
                    raise GuardrailBlocked(f"the answer was withheld by the server's output guardrail "
                                           f"blocked_output_patterns[{index}]")
            self._record("output", "allow", "output_policy")
        if text is completion.text and model is completion.model:
            return completion
        return replace(completion, text=text, model=model)

    def wrap(self, provider: Provider, candidates: Sequence[ProviderConfig]) -> ScreenedProvider:
        """``provider`` behind this call's screening; ``candidates`` are the providers it may end up asking (their
        prices bound the call's worst case)."""
        return ScreenedProvider(provider, self, candidates)

    def _record(self, stage: str, action: str, rule: str, detail: str = "") -> None:
        self.policy.record(self.tool, self.principal, stage, action, rule, detail)


class ScreenedProvider:
    """A provider behind a call's policy: ceilings charged and the request screened before it is sent, the reply
    screened before it is returned. Per call; it owns no connections (the pool closes its members)."""

    def __init__(self, inner: Provider, policy: CallPolicy, candidates: Sequence[ProviderConfig]) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.policy = policy
        self.candidates = list(candidates)

    async def complete(self, request: CompletionRequest) -> Completion:
        """The inner provider's answer to the screened request, screened.

        Raises:
            GuardrailBlocked / CeilingExceeded: refused (nothing sent), or the answer withheld.
            server.errors.OrchestrationError: what the inner provider raises.
        """
        screened = await self.policy.screen_request(request)
        self.policy.charge(self.candidates, screened)
        return self.policy.screen_completion(await self.inner.complete(screened))

    async def aclose(self) -> None:
        """Nothing to close (see the class docstring)."""
