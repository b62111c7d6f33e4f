"""Governance policies: the declarative rules of ``[[governance.rules]]`` (:mod:`server.workflows.settings`),
checked when a workflow is saved and again when a run starts; a violation is listed precisely (rule, step,
what is wrong) and nothing is saved or run (:class:`PolicyViolation`).

Rule kinds:

- ``approval_before_tools``: every ``tool`` step needs an ``approval`` step upstream (for a sub-workflow's
  steps, upstream inside it or upstream of the ``workflow`` step that runs it).
- ``max_cost_per_run``: :func:`estimate_cost_usd` of the run at most ``max_usd``.
- ``allowed_providers``: every model step names its ``providers`` (and a consensus ``judge``) from the list.
- ``attended_steps``: the listed step kinds or tools need an approval upstream when nobody attends the run: a
  workflow with schedules (on save), a run started by a ``system:`` principal (schedules, webhooks, metric
  triggers, incidents; on start).

The work is linear in the steps of the run (sub-workflows expanded, which the step ceiling bounds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.workflows.model import Definition, Step, WorkflowError, upstream_test
from server.workflows.settings import AllowedProviders, ApprovalBeforeTools, AttendedSteps, MaxCostPerRun

DEFAULT_MAX_TOKENS = 1024
"""The completion tokens a model step without ``max_tokens`` is estimated at (the tools' default)."""
CHARS_PER_TOKEN = 4
MODEL_STEPS = ("orchestrate", "consensus")


class PolicyViolation(WorkflowError):
    """The workflow breaks governance rules; nothing was saved or started.

    Attributes:
        violations: one line per violation: the rule's name, where (``steps.publish``) and why.
    """

    def __init__(self, violations: Sequence[str], *, when: str) -> None:
        self.violations = list(violations)
        super().__init__(f"governance policy refuses this workflow {when} ({len(self.violations)} violation(s)): "
                         + "; ".join(self.violations[:50]))


@dataclass(frozen=True)
class _Placed:
    where: str
    step: Step
    gated: bool  # an approval step is upstream


def _steps(definition: Definition, library: Mapping[str, Any], prefix: str = "steps.", gated: bool = False,
           depth: int = 0) -> Iterator[_Placed]:
    """Every step of the run (sub-workflows expanded once per use), with whether an approval is upstream."""
    is_upstream = upstream_test(definition)
    approvals = [s.id for s in definition.steps if s.kind == "approval"]
    for step in definition.steps:
        here = gated or any(is_upstream(step.id, a) for a in approvals)
        yield _Placed(f"{prefix}{step.id}", step, here)
        child = step.with_.get("workflow") if step.kind == "workflow" else None
        if isinstance(child, str) and child in library and depth < 8:
            sub = library[child]
            sub = sub if isinstance(sub, Definition) else Definition.model_validate(sub)
            yield from _steps(sub, library, f"{prefix}{step.id}.", here, depth + 1)


def check(rules: Sequence[Any], definition: Definition, library: Mapping[str, Any], providers: Sequence[Any], *,
          unattended: bool, inputs: Mapping[str, Any] | None = None) -> list[str]:
    """The violations of ``rules`` by a run of ``definition`` (``[]``: compliant).

    Args:
        library: the sub-workflows (name -> definition or its JSON data), as :mod:`server.workflows.library`
            gathers them.
        providers: the pool's provider configurations (:class:`server.config.ProviderConfig`), for prices.
        unattended: nobody attends the run (see the module docstring).
        inputs: the run's inputs (their size counts into the cost estimate), or ``None`` on save.
    """
    placed = list(_steps(definition, library))
    found: list[str] = []
    for index, rule in enumerate(rules):
        if not rule.applies_to(definition.name, definition.tags):
            continue
        label = rule.name or f"governance.rules[{index}]"
        if isinstance(rule, ApprovalBeforeTools):
            found += [f"{label} ({rule.kind}): {p.where} is a tool step with no approval step upstream"
                      for p in placed if p.step.kind == "tool" and not p.gated]
        elif isinstance(rule, MaxCostPerRun):
            cost = estimate_cost_usd(placed, providers, inputs)
            if cost > rule.max_usd:
                found.append(f"{label} ({rule.kind}): the estimated cost per run is ${cost:.4f}, over the "
                             f"maximum of ${rule.max_usd:g}")
        elif isinstance(rule, AllowedProviders):
            found += _provider_problems(label, rule, placed)
        elif isinstance(rule, AttendedSteps) and unattended:
            found += [f"{label} ({rule.kind}): {p.where} ({_what(p.step)}) may not run unattended: add an approval "
                      "step upstream of it" for p in placed if _listed(rule, p.step) and not p.gated]
    return found


def _what(step: Step) -> str:
    if step.kind == "tool":
        return f"tool {step.with_.get('server')}.{step.with_.get('tool')}"
    return f"a {step.kind} step"


def _listed(rule: AttendedSteps, step: Step) -> bool:
    if step.kind in rule.step_kinds:
        return True
    return step.kind == "tool" and f"{step.with_.get('server')}.{step.with_.get('tool')}" in rule.tools


def _provider_problems(label: str, rule: AllowedProviders, placed: Sequence[_Placed]) -> list[str]:
    allowed = set(rule.providers)
    found = []
    for p in placed:
        if p.step.kind not in MODEL_STEPS:
            continue
        named = p.step.with_.get("providers")
        if not isinstance(named, list) or not named or not all(isinstance(n, str) for n in named):
            found.append(f"{label} ({rule.kind}): {p.where} must name its `providers` (a list, from "
                         f"{', '.join(rule.providers)}); the pool's default choice is not allowed")
            continue
        other = [n for n in named if n not in allowed or "{{" in n]
        judge = p.step.with_.get("judge")
        if isinstance(judge, str) and judge not in allowed:
            other.append(f"judge {judge}")
        if other:
            found.append(f"{label} ({rule.kind}): {p.where} uses {', '.join(other)}; allowed: "
                         f"{', '.join(rule.providers)}")
    return found


def estimate_cost_usd(placed: Sequence[_Placed], providers: Sequence[Any], inputs: Mapping[str, Any] | None) -> float:
    """An upper-bound estimate of a run's model cost in USD: for each model step, every attempt
    (``retry.max_attempts``) of every call it makes (consensus: each provider asked × samples × rounds, plus
    a judge reading every answer) at the dearest provider it may use, with ``max_tokens`` completion tokens
    (default :data:`DEFAULT_MAX_TOKENS`) and its parameters' text (plus the run's inputs) at
    :data:`CHARS_PER_TOKEN` characters per token as the prompt. Steps skipped by ``when`` count too."""
    prices = {p.name: (p.input_cost_per_mtok, p.output_cost_per_mtok) for p in providers}
    extra_chars = len(json.dumps(inputs, ensure_ascii=False)) if inputs else 0
    total = 0.0
    for p in placed:
        step = p.step
        if step.kind not in MODEL_STEPS:
            continue
        w = step.with_
        named = w.get("providers") if isinstance(w.get("providers"), list) else None
        usable = [prices[n] for n in (named or prices) if isinstance(n, str) and n in prices] or [(0.0, 0.0)]
        price_in, price_out = max(x[0] for x in usable), max(x[1] for x in usable)
        out_tokens = _count(w.get("max_tokens"), DEFAULT_MAX_TOKENS)
        in_tokens = math.ceil((len(json.dumps(w, ensure_ascii=False)) + extra_chars) / CHARS_PER_TOKEN)
        calls = 1
        if step.kind == "consensus":
            asked = len(named) if named else _count(w.get("max_providers"), len(prices) or 1)
            calls = asked * _count(w.get("samples_per_provider"), 1) * _count(w.get("rounds"), 1)
            if w.get("method") == "judge" or w.get("judge"):
                total += step.retry.max_attempts * ((in_tokens + calls * out_tokens) * price_in
                                                    + out_tokens * price_out) / 1e6
        total += step.retry.max_attempts * calls * (in_tokens * price_in + out_tokens * price_out) / 1e6
    return total


def _count(value: Any, default: int) -> int:
    """A positive integer parameter, or ``default`` (absent, or a placeholder filled at run time)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


class Governance:
    """The configured rules, applied on save and on start.

    Args:
        rules: ``[[governance.rules]]``.
        providers: the configured providers (their prices feed the cost estimate).
    """

    def __init__(self, rules: Sequence[Any], providers: Sequence[Any]) -> None:
        self.rules = tuple(rules)
        self.providers = tuple(providers)

    def check_save(self, definition: Definition, library: Mapping[str, Any]) -> None:
        """Raises :class:`PolicyViolation` when saving ``definition`` breaks a rule (a workflow with schedules is
        unattended)."""
        self._raise(check(self.rules, definition, library, self.providers, unattended=bool(definition.schedules)),
                    "on save")

    def check_start(self, definition: Definition, library: Mapping[str, Any], inputs: Mapping[str, Any],
                    starter_id: str) -> None:
        """Raises :class:`PolicyViolation` when this run breaks a rule (a ``system:`` starter is unattended)."""
        self._raise(check(self.rules, definition, library, self.providers, inputs=inputs,
                          unattended=starter_id.startswith("system:")), "on start")

    @staticmethod
    def _raise(violations: list[str], when: str) -> None:
        if violations:
            raise PolicyViolation(violations, when=when)
