"""The security checks ``orchestrate`` and ``consensus`` share: caller, per-call ceilings, guardrails."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context

from knowledge import ResolvedPrompt, resolve_prompt
from server.dependencies import Dependencies
from server.security import Principal, caller
from server.security.limits import check_call_ceilings


@dataclass(frozen=True, slots=True)
class Screened:
    """A call's text after the checks: pass ``prompt``/``system``/``pattern``/``variables`` on; ``resolved`` is
    set when the pattern was rendered here (report its name and version)."""

    principal: Principal
    prompt: str | None
    system: str | None
    pattern: str | None
    variables: Mapping[str, Any] | None
    resolved: ResolvedPrompt | None = None


async def screen_call(ctx: Context, deps: Dependencies, tool: str, *, prompt: str | None, system: str | None,
                      pattern: str | None, variables: Mapping[str, Any] | None, names: Sequence[str],
                      model: str | None, max_tokens: int, answers: int = 1, history_tokens: int = 0) -> Screened:
    """Check one call before any provider sees it (run inside ``core_errors()``).

    Raises:
        server.security.limits.CeilingExceeded / server.security.guardrails.GuardrailBlocked: refused.
        ValueError / knowledge.PatternError: the pattern cannot be rendered.
    """
    principal = caller(ctx)
    guard = deps.guardrails
    limits = deps.config.limits
    resolved = None
    # The rendered text is needed when a guardrail must read it or a cost ceiling must measure it.
    if pattern is not None and (guard is not None or limits.max_cost_usd_per_call is not None):
        resolved = await resolve_prompt(deps.patterns, prompt, pattern, variables)
        prompt, pattern, variables = resolved.text, None, None
    size = len(prompt or "") + len(system or "") + (len(json.dumps(variables)) if variables else 0)
    check_call_ceilings(limits, deps.pool.configs, prompt_chars=size, max_tokens=max_tokens, answers=answers,
                        history_tokens=history_tokens)
    if guard is not None:
        guard.check_models(tool, principal, names, model)
        prompt, system = guard.screen_input(tool, principal, [prompt, system])
    return Screened(principal, prompt, system, pattern, variables, resolved)
