"""The ``consensus`` service: fan a prompt out to several providers in parallel and aggregate the answers.

Fan-out runs every (provider, sample) slot in one task group. Answers are aggregated as they arrive; the
call ends when every slot has answered or failed, when a vote can no longer change (early stop: the
outstanding calls are cancelled, so their connections close and no usage is recorded for them), at the soft
deadline if at least two answers are in (status ``partial``), or at the hard deadline whatever is in.
Aggregation methods are in :mod:`server.consensus.aggregation`; ``synthesize`` hands the answers to a judge model
(:mod:`server.consensus.judge`). The client's own model can be one more member, asked before the call
(:mod:`server.consensus.host`). What a call takes and returns is in :mod:`server.consensus.report`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import anyio

from server.consensus.aggregation import (
    Ballot,
    Outcome,
    ReliabilityEstimate,
    answer_label,
    bayesian,
    normalise,
    parse_confident_answer,
    similarity,
    vote,
    vote_is_settled,
)
from server.consensus.host import HOST, HostProvider, HostRefused
from server.consensus.judge import JUDGE_SYSTEM, revise, synthesize
from server.consensus.judge import judge_prompt as fenced_prompt
from server.consensus.report import (
    METHODS,
    ConsensusInputError,
    ConsensusRequest,
    ConsensusResult,
    Method,
    NotEnoughAnswers,
    ResponseReport,
)
from knowledge import resolve_prompt
from server.errors import (
    CeilingExceeded,
    DeadlineExceeded,
    GuardrailBlocked,
    OrchestrationError,
    ProviderError,
    require_finite,
)
from server.operations.telemetry import SPAN_FAN_OUT, Telemetry, span
from server.pool.call import Call
from server.pool.pool import ProviderPool
from server.pool.providers import Completion, CompletionRequest, Message, Provider
from server.pool.text import estimate_tokens, prompt_tokens
from server.security import LOCAL, Principal

if TYPE_CHECKING:
    from knowledge import PatternRegistry, ResolvedPrompt

__all__ = ["METHODS", "ConsensusInputError", "ConsensusRequest", "ConsensusResult", "ConsensusService", "Method",
           "NotEnoughAnswers", "ResponseReport"]

CONFIDENCE_INSTRUCTION = (
    'Reply with JSON only: {"answer": <your answer>, "confidence": <probability from 0 to 1 that it is right>}.'
)
Progress = Callable[[float, float, str], Awaitable[None]]


@dataclass(slots=True)
class _Slot:
    index: int
    provider: str
    sample: int
    weight: float
    report: ResponseReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = ResponseReport(provider=self.provider, sample=self.sample, status="missing")


@dataclass(frozen=True, slots=True)
class _Plan:
    """A call checked and ready to fan out: every slot, the providers by name, the screened request."""

    resolved: ResolvedPrompt
    method: str
    providers: dict[str, Provider]
    judge: tuple[str, Provider] | None
    slots: list[_Slot]
    request: CompletionRequest


class ConsensusService:
    """Runs consensus calls over a pool.

    Args:
        pool: the provider pool (its answerers and judge are asked directly, each behind the policy layer).
        patterns: the pattern registry, for ``ask.pattern``.
        rng: shuffles the judge's candidates.
        timer: monotonic seconds.
    """

    def __init__(self, pool: ProviderPool, rng: random.Random | None = None,
                 timer: Callable[[], float] = time.perf_counter, telemetry: Telemetry | None = None,
                 patterns: PatternRegistry | None = None) -> None:
        self.pool = pool
        self.patterns = patterns
        self.telemetry = telemetry
        self.rng = rng or random.Random()
        self.timer = timer
        self.reliability = ReliabilityEstimate()
        self._configs = {c.name: c for c in pool.configs}

    def resolve_method(self, ask: ConsensusRequest) -> str:
        if ask.method is None:
            return "vote" if ask.choices or ask.answer_path else "similarity"
        if ask.method not in METHODS:
            raise ConsensusInputError(f"unknown method {ask.method!r}; use one of {', '.join(METHODS)}")
        return ask.method

    def answerers(self, ask: ConsensusRequest, prompt: str, call: Call) -> dict[str, Provider]:
        """The providers that will answer, by name (explicit, or the best ``max_providers`` available now), and
        the client's own model (:data:`~server.consensus.host.HOST`) when it answered before the call."""
        if ask.providers:
            names = list(dict.fromkeys(ask.providers))
        else:
            names = self.pool.choose(ask.max_providers, input_tokens=estimate_tokens(prompt),
                                     output_tokens=ask.max_tokens)
        providers = {name: self.pool.provider(name, call) for name in names}
        hosts = 0 if ask.host is None else 1
        if len(names) * ask.samples_per_provider + hosts < 2:
            raise ConsensusInputError(
                f"consensus needs at least 2 answers: got {len(names)} provider(s) × {ask.samples_per_provider} "
                "sample(s); name more providers, raise max_providers, or set samples_per_provider ≥ 2")
        if ask.host is not None:
            providers[HOST] = self.pool.outside(HostProvider(ask.host), call)
        return providers

    async def _question(self, ask: ConsensusRequest) -> tuple[ResolvedPrompt, str]:
        """The question's text (rendered from its pattern, if any) and the method, the arguments checked."""
        require_finite(threshold=ask.threshold, deadline_s=ask.deadline_s, hard_deadline_s=ask.hard_deadline_s,
                       temperature=ask.temperature)
        resolved = await resolve_prompt(self.patterns, ask.prompt, ask.pattern, ask.variables)
        if not resolved.text.strip():
            raise ConsensusInputError("prompt is empty: pass the question to ask the models")
        if not 0 < ask.threshold <= 1:
            raise ConsensusInputError(f"threshold must be in (0, 1], got {ask.threshold}")
        return resolved, self.resolve_method(ask)

    async def host_request(self, ask: ConsensusRequest, principal: Principal = LOCAL) -> CompletionRequest:
        """The request to put to the client's own model before the call runs: the answerers' request, screened
        under ``principal`` (an input guardrail refuses it, PII is redacted) and within the token ceiling.

        Raises:
            ConsensusInputError, server.errors.PolicyError, server.errors.OrchestrationError: as :meth:`run`
                refuses them before anything is sent.
        """
        resolved, method = await self._question(ask)
        call = await self.pool.call(principal, "consensus")
        call.policy.check_plan([], ask.max_tokens)
        return await call.policy.screen_request(self._request(ask, resolved.text, method))

    async def check(self, ask: ConsensusRequest, principal: Principal = LOCAL) -> None:
        """Refuse what :meth:`run` would refuse before sending anything (a consensus started as a task is checked
        so before the task exists).

        Raises:
            as :meth:`run`, but never :class:`NotEnoughAnswers`.
        """
        await self._plan(ask, principal)

    async def _plan(self, ask: ConsensusRequest, principal: Principal) -> _Plan:
        resolved, method = await self._question(ask)
        call = await self.pool.call(principal, "consensus")
        providers = self.answerers(ask, resolved.text, call)
        names = [name for name in providers if name != HOST]
        judge = self._judge(ask, names, call) if method == "synthesize" else None
        weights = {c.name: c.weight for c in self.pool.configs}
        pairs = [(n, s) for n in names for s in range(ask.samples_per_provider)] + [(HOST, 0)] * (HOST in providers)
        slots = [_Slot(i, name, sample, weights.get(name, 1.0) if method == "weighted_vote" else 1.0)
                 for i, (name, sample) in enumerate(pairs)]
        request = self._request(ask, resolved.text, method)
        self._check_plan(call, ask, request, slots, judge)
        request = await call.policy.screen_request(request)  # once for the whole fan-out
        return _Plan(resolved, method, providers, judge, slots, request)

    async def run(self, ask: ConsensusRequest, progress: Progress | None = None, *,
                  principal: Principal = LOCAL) -> ConsensusResult:
        """Fan out, aggregate, report.

        Args:
            principal: who asks; every answer and the judge are screened under it.

        Raises:
            ConsensusInputError: bad arguments (an :class:`~server.errors.InvalidRequest`).
            NotEnoughAnswers: fewer than two usable answers.
            server.errors.PolicyError: refused by a guardrail or a ceiling before anything was sent.
            server.errors.OrchestrationError: no providers, unknown providers, no judge available; an unknown
                pattern or variables that do not fit it.
        """
        started = self.timer()
        plan = await self._plan(ask, principal)
        resolved, method, providers, judge, slots, request = (plan.resolved, plan.method, plan.providers,
                                                              plan.judge, plan.slots, plan.request)
        results: dict[int, Completion] = {}
        with span(self.telemetry, SPAN_FAN_OUT, {"ai_orchestration.consensus.method": method,
                                                 "ai_orchestration.consensus.answerers": len(slots)}):
            early_stop, missing = await self._fan_out(ask, method, slots, providers, request, results, progress,
                                                      started)
        ballots = [b for b in (self._ballot(slot, results.get(slot.index), ask, method) for slot in slots) if b]
        if len(ballots) < 2:
            raise NotEnoughAnswers(self._shortfall(slots))
        for _ in range(ask.rounds if method == "synthesize" else 0):
            ballots = await self._refine(ask, resolved.text, slots, ballots, results, providers)
        outcome = self._aggregate(method, ballots)
        if early_stop:
            # Stopped early: count the cancelled answers as dissent, so agreement is the bound the stop relied on.
            cancelled = sum(s.weight for s in slots if s.report.status == "cancelled")
            received = sum(b.weight for b in ballots)
            outcome.agreement = outcome.agreement * received / (received + cancelled)
            outcome.agreement_basis += " (early stop: cancelled answers counted as dissent, a lower bound)"
        judge_report = None
        if judge is not None:
            outcome, judge_report = await self._synthesize(ask, resolved.text, judge, ballots, outcome, started)
        self._learn(method, slots, outcome)
        result = self._result(ask, method, slots, ballots, outcome, results, judge_report, early_stop, missing,
                              started)
        result.pattern, result.pattern_version = resolved.pattern, resolved.version
        return result

    # -- fan-out ----------------------------------------------------------------------------------------

    def _request(self, ask: ConsensusRequest, prompt: str, method: str) -> CompletionRequest:
        system = ask.system
        if method == "bayesian":
            system = f"{system}\n\n{CONFIDENCE_INSTRUCTION}" if system else CONFIDENCE_INSTRUCTION
        temperature = ask.temperature
        if temperature is None and ask.samples_per_provider > 1:
            temperature = 0.7  # self-consistency needs diverse samples
        return CompletionRequest(messages=(Message("user", prompt),), system=system, max_tokens=ask.max_tokens,
                                 temperature=temperature)

    def _check_plan(self, call: Call, ask: ConsensusRequest, request: CompletionRequest, slots: list[_Slot],
                    judge: tuple[str, Provider] | None) -> None:
        """The call's worst case, priced per answer at its own provider: every slot, every revision round, the
        judge (whose prompt holds every answer at up to ``max_tokens``)."""
        configs = {c.name: c for c in self.pool.configs}
        asked = prompt_tokens(request)
        combined = asked + len(slots) * ask.max_tokens + estimate_tokens(JUDGE_SYSTEM) + 50 * len(slots)
        priced = [s for s in slots if s.provider != HOST]  # the host's model costs the server nothing
        answers = [(configs[s.provider], asked) for s in priced]
        if judge is not None:
            answers += [(configs[s.provider], combined) for s in priced for _ in range(ask.rounds)]
            answers.append((configs[judge[0]], combined))
        call.policy.check_plan(answers, ask.max_tokens)

    async def _fan_out(
        self, ask: ConsensusRequest, method: str, slots: list[_Slot], providers: Mapping[str, Provider],
        request: CompletionRequest, results: dict[int, Completion], progress: Progress | None, started: float,
    ) -> tuple[bool, list[str]]:
        """Run every slot; returns (stopped early, slots missing at the deadline)."""
        soft_at = None if ask.deadline_s is None else started + ask.deadline_s
        hard_s = ask.hard_deadline_s or (ask.deadline_s * 2 if ask.deadline_s else None)
        hard_at = None if hard_s is None else started + hard_s
        send, receive = anyio.create_memory_object_stream[tuple[_Slot, Completion | OrchestrationError]](len(slots))
        pending = {slot.index for slot in slots}
        early_stop = False

        async def answer(slot: _Slot) -> None:
            timeout_s = None if hard_at is None else max(0.001, hard_at - self.timer())
            try:
                outcome: Completion | OrchestrationError = await providers[slot.provider].complete(
                    replace(request, timeout_s=timeout_s))
            except OrchestrationError as exc:  # a provider error, or this answer refused or withheld by policy
                outcome = exc
            try:
                await send.send((slot, outcome))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the call already ended (early stop or deadline)

        async with anyio.create_task_group() as group:
            for slot in slots:
                group.start_soon(answer, slot)
            with send, receive:
                while pending:
                    past_soft = soft_at is not None and self.timer() >= soft_at
                    if past_soft and len(results) >= 2:
                        break  # a late second answer arrived past the soft deadline: go on with these
                    deadline = hard_at if past_soft or soft_at is None else soft_at
                    with anyio.move_on_after(None if deadline is None else max(0.0, deadline - self.timer())):
                        slot, outcome = await receive.receive()
                        pending.discard(slot.index)
                        self._settle(slot, outcome, results)
                        if progress is not None:
                            await progress(len(slots) - len(pending), len(slots),
                                           f"{slot.provider} answered" if slot.index in results
                                           else f"{slot.provider} failed")
                        if method in ("vote", "weighted_vote") and pending and self._settled(
                                ask, slots, results, pending):
                            early_stop = True
                            break
                        continue
                    # The deadline passed: past the soft one, go on only while fewer than 2 answers are in.
                    if deadline == soft_at and len(results) < 2 and hard_at is not None and hard_at > soft_at:
                        continue
                    break
                group.cancel_scope.cancel()  # early stop or deadline: outstanding calls are cancelled
        for slot in slots:
            if slot.index in pending:
                slot.report.status = "cancelled" if early_stop else "missing"
        missing = [] if early_stop else [f"{s.provider}#{s.sample}" for s in slots if s.report.status == "missing"]
        return early_stop, missing

    def _settle(self, slot: _Slot, outcome: Completion | OrchestrationError, results: dict[int, Completion]) -> None:
        report = slot.report
        if isinstance(outcome, Completion):
            results[slot.index] = outcome
            usage = outcome.usage
            report.status, report.model, report.answer = "ok", outcome.model, outcome.text
            report.latency_ms = round(outcome.latency_ms, 3)
            report.input_tokens, report.output_tokens = usage.input_tokens, usage.output_tokens
            report.cost_usd = round(outcome.cost_usd, 10)
            return
        report.status = ("missing" if isinstance(outcome, DeadlineExceeded) else
                         "refused" if isinstance(outcome, HostRefused) else "error")
        if isinstance(outcome, ProviderError):
            report.error, report.error_class = outcome.detail, outcome.error_class
        else:
            report.error = str(outcome)
            report.error_class = ("guardrail_blocked" if isinstance(outcome, GuardrailBlocked) else
                                  "ceiling_exceeded" if isinstance(outcome, CeilingExceeded) else "error")

    def _settled(self, ask: ConsensusRequest, slots: list[_Slot], results: dict[int, Completion],
                 pending: set[int]) -> bool:
        ballots = [b for b in (self._ballot(s, results.get(s.index), ask, "vote") for s in slots) if b]
        outstanding = sum(s.weight for s in slots if s.index in pending)
        return len(ballots) >= 2 and vote_is_settled(ballots, outstanding, ask.threshold)

    # -- aggregation ------------------------------------------------------------------------------------

    def _ballot(self, slot: _Slot, result: Completion | None, ask: ConsensusRequest, method: str) -> Ballot | None:
        if result is None:
            return None
        text, confidence = result.text, None
        if method == "bayesian":
            text, confidence = parse_confident_answer(text)
            slot.report.confidence = confidence
        label = answer_label(text, choices=ask.choices, answer_path=ask.answer_path)
        key = None if label is None else (label if method in ("similarity", "synthesize") else normalise(label))
        slot.report.normalized = key
        if not key:
            slot.report.status = "unusable"
            return None
        text = label
        config = self._configs.get(slot.provider)  # None: the host's model
        configured = config.reliability if config is not None else None
        reliability = configured if configured is not None else self.reliability.reliability(slot.provider)
        return Ballot(slot.index, slot.provider, key, text, slot.weight, confidence, reliability)

    @staticmethod
    def _aggregate(method: str, ballots: list[Ballot]) -> Outcome:
        if method in ("vote", "weighted_vote"):
            return vote(ballots)
        if method == "bayesian":
            return bayesian(ballots)
        return similarity(ballots)

    def _learn(self, method: str, slots: list[_Slot], outcome: Outcome) -> None:
        if outcome.answer is None or outcome.tie or method == "synthesize":
            return
        winners = set(outcome.winners)
        for slot in slots:
            if slot.report.status == "ok":
                self.reliability.update(slot.provider, slot.index in winners)

    # -- synthesis (judge) ------------------------------------------------------------------------------

    def _judge(self, ask: ConsensusRequest, answerers: list[str], call: Call) -> tuple[str, Provider]:
        if ask.judge:  # named by the caller: allowed even if it also answers
            return ask.judge, self.pool.provider(ask.judge, call)
        others = [name for name in self.pool.choose(len(self.pool.configs)) if name not in answerers]
        if not others:
            raise ConsensusInputError("synthesize needs a judge that is not one of the answerers: name one with "
                                      "`judge` (it may be an answerer if you insist), or configure another provider")
        return others[0], self.pool.provider(others[0], call)

    def judge_prompt(self, question: str, answers: Sequence[str]) -> tuple[str, list[int]]:
        """:func:`server.consensus.judge.judge_prompt` with this service's shuffle."""
        return fenced_prompt(self.rng, question, answers)

    async def _synthesize(self, ask: ConsensusRequest, question: str, judge: tuple[str, Provider],
                          ballots: list[Ballot], outcome: Outcome, started: float) -> tuple[Outcome, ResponseReport]:
        remaining = None if ask.hard_deadline_s is None else max(0.001, started + ask.hard_deadline_s - self.timer())
        return await synthesize(self.rng, judge, question, [b.text for b in ballots], outcome,
                                max_tokens=ask.max_tokens, timeout_s=remaining)

    async def _refine(self, ask: ConsensusRequest, question: str, slots: list[_Slot], ballots: list[Ballot],
                      results: dict[int, Completion], providers: Mapping[str, Provider]) -> list[Ballot]:
        """One Mixture-of-Agents round over the answerers that answered (the host's model answered once, before
        the call: it keeps its answer)."""
        revisers = {s.index: providers[s.provider] for s in slots if s.index in results and s.provider != HOST}
        revised = await revise(self.rng, question, [b.text for b in ballots], revisers, max_tokens=ask.max_tokens,
                               temperature=ask.temperature)
        for index, result in revised.items():
            results[index] = result
            slot = slots[index]
            slot.report.answer = result.text
            slot.report.input_tokens += result.usage.input_tokens
            slot.report.output_tokens += result.usage.output_tokens
            slot.report.cost_usd = round(slot.report.cost_usd + result.cost_usd, 10)
        return [b for b in (self._ballot(s, results.get(s.index), ask, "synthesize") for s in slots) if b]

    # -- the report -------------------------------------------------------------------------------------

    @staticmethod
    def _shortfall(slots: list[_Slot]) -> str:
        parts = [f"{s.provider}: {s.report.status}" + (f" ({s.report.error_class})" if s.report.error_class else "")
                 for s in slots]
        return f"fewer than 2 usable answers ({'; '.join(parts)})"

    def _result(self, ask, method, slots, ballots, outcome, results, judge_report, early_stop, missing,
                started) -> ConsensusResult:
        reports = [slot.report for slot in slots]
        winners = set(outcome.winners)
        dissent = [slots[b.index].report for b in ballots if b.index not in winners]
        spenders = [*reports, *([judge_report] if judge_report else [])]
        reached = outcome.answer is not None and not outcome.tie and outcome.agreement >= ask.threshold
        refused = any(r.status == "refused" for r in reports)
        status = "partial" if missing or refused else ("consensus" if reached else "no_consensus")
        for group in outcome.groups:
            group.pop("key", None)
        return ConsensusResult(
            status=status, answer=outcome.answer, agreement=round(outcome.agreement, 6),
            agreement_basis=outcome.agreement_basis, threshold=ask.threshold, method=method, tie=outcome.tie,
            responses=reports, groups=outcome.groups, dissent=dissent, missing=missing, early_stop=early_stop,
            judge=judge_report,
            usage={"input_tokens": sum(r.input_tokens for r in spenders),
                   "output_tokens": sum(r.output_tokens for r in spenders)},
            cost_usd=round(sum(r.cost_usd for r in spenders), 10),
            latency_ms=round((self.timer() - started) * 1000, 3),
        )
