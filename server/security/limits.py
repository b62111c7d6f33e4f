"""Per-call ceilings: tokens and worst-case cost before a provider is called; workflow step and duration caps.

Transport-level limits (body size, request rate, concurrent calls per key) are in :mod:`server.security.http`.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.config import ProviderConfig
from server.errors import OrchestrationError
from server.security.settings import LimitSettings
from server.pool.text import estimate_tokens


class CeilingExceeded(OrchestrationError):
    """A call asks for more than a configured ceiling allows; nothing was sent to a provider."""


def check_call_ceilings(limits: LimitSettings, providers: Sequence[ProviderConfig], *, prompt_chars: int,
                        max_tokens: int, answers: int = 1, history_tokens: int = 0) -> None:
    """Refuse a call over ``max_tokens_per_call`` or whose worst-case cost passes ``max_cost_usd_per_call``.

    The worst case is ``answers`` completions of ``max_tokens`` each at the most expensive configured
    provider, with the prompt (estimated at 4 characters a token) plus ``history_tokens`` as input.

    Raises:
        CeilingExceeded: with the figures and what to change.
    """
    if limits.max_tokens_per_call is not None and max_tokens > limits.max_tokens_per_call:
        raise CeilingExceeded(f"max_tokens {max_tokens} is over this server's ceiling of "
                              f"{limits.max_tokens_per_call} per call: ask for fewer")
    if limits.max_cost_usd_per_call is None or not providers:
        return
    input_tokens = (prompt_chars + 3) // 4 + history_tokens
    worst = answers * max(p.cost_usd(input_tokens, max_tokens) for p in providers)
    if worst > limits.max_cost_usd_per_call:
        raise CeilingExceeded(f"this call could cost up to ${worst:.4f} ({answers} answer(s) of up to {max_tokens} "
                              f"tokens), over this server's ceiling of ${limits.max_cost_usd_per_call:.4f} per call: "
                              "lower max_tokens, shorten the prompt or ask fewer providers")


def check_workflow_ceilings(limits: LimitSettings, step_count: int, duration_s: float | None = None) -> float:
    """Refuse a workflow with more steps than ``workflow_max_steps``; return the run's deadline in seconds
    (the requested ``duration_s`` capped at ``workflow_max_duration_s``).

    Raises:
        CeilingExceeded: too many steps, or a requested duration over the cap.
    """
    if step_count > limits.workflow_max_steps:
        raise CeilingExceeded(f"the workflow has {step_count} steps, over this server's ceiling of "
                              f"{limits.workflow_max_steps}")
    if duration_s is not None and duration_s > limits.workflow_max_duration_s:
        raise CeilingExceeded(f"a duration of {duration_s:g} s is over this server's ceiling of "
                              f"{limits.workflow_max_duration_s:g} s per workflow run")
    return limits.workflow_max_duration_s if duration_s is None else duration_s


__all__ = ["CeilingExceeded", "check_call_ceilings", "check_workflow_ceilings", "estimate_tokens"]
