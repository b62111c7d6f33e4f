"""Metric conditions that start saved workflows (``[[triggers]]``, :class:`server.workflows.settings.TriggerSettings`).

The alert evaluation (:mod:`server.operations.incidents`, every ``[alerts] interval_s``, once per interval across
replicas) hands each evaluation's per-provider summary here. A trigger is breached while its ``metric`` of its
``provider`` (of any provider, without one) is over its ``threshold``, with at least ``[alerts] min_calls`` calls
behind a latency or error-rate figure. Debounce: it fires once the breach has lasted ``debounce_s`` (0: at the
first breached evaluation); a normal evaluation in between starts the wait again. Cooldown: after firing, not
again for ``cooldown_s``. The run id is ``trigger-<name>-<cooldown slot>``: two replicas evaluating in the same
cooldown window start one run. The breach and cooldown times are kept by the evaluating process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)
Start = Callable[[str, Mapping[str, Any], str], Awaitable[str]]
"""``(workflow, inputs, run_id) -> run id as started``."""


@dataclass
class _State:
    breached_since: float | None = None
    fired_at: float | None = None


class MetricTriggers:
    """The configured triggers and their debounce and cooldown state.

    Args:
        triggers: ``[[triggers]]``.
        start: starts a saved workflow (under the system principal ``system:triggers``, through the same
            workflow service, governance and policy as any start).
    """

    def __init__(self, triggers: Sequence[Any], start: Start) -> None:
        self.triggers = tuple(triggers)
        self._start = start
        self._state = {t.name: _State() for t in self.triggers}

    async def evaluate(self, groups: Sequence[Any], now: float, min_calls: int) -> list[str]:
        """One evaluation over the summary's provider groups; returns the run ids started."""
        started = []
        for trigger in self.triggers:
            state = self._state[trigger.name]
            value = _worst(trigger, groups, min_calls)
            if value is None or value <= trigger.threshold:
                state.breached_since = None
                continue
            state.breached_since = now if state.breached_since is None else state.breached_since
            cooled = state.fired_at is None or now - state.fired_at >= trigger.cooldown_s
            if now - state.breached_since < trigger.debounce_s or not cooled:
                continue
            state.fired_at = now
            slot = int(now // trigger.cooldown_s) if trigger.cooldown_s > 0 else int(now)
            inputs = {"trigger": trigger.name, "metric": trigger.metric, "value": value,
                      "threshold": trigger.threshold, "provider": trigger.provider, "at": now}
            try:
                run_id = await self._start(trigger.workflow, inputs, f"trigger-{trigger.name}-{slot}")
            except Exception as exc:  # noqa: BLE001 - logged; the next breach after the cooldown tries again
                logger.warning("trigger %s: workflow %s could not start: %s", trigger.name, trigger.workflow, exc)
                continue
            logger.info("trigger %s: %s %.4g over %.4g: workflow %s started (run %s)", trigger.name,
                        trigger.metric, value, trigger.threshold, trigger.workflow, run_id)
            started.append(run_id)
        return started


def _worst(trigger: Any, groups: Sequence[Any], min_calls: int) -> float | None:
    values = []
    for group in groups:
        if trigger.provider is not None and group.key != trigger.provider:
            continue
        value = getattr(group, trigger.metric, None)
        enough = trigger.metric == "cost_per_hour_usd" or (group.calls or 0) >= min_calls
        if value is not None and enough:
            values.append(value)
    return max(values, default=None)
