"""What each dashboard page shows, read through the core services the MCP tools call (never SQL).

- the overview: :func:`server.operations.monitoring.summarize` (``monitor_operations``'s summary);
- providers: :func:`server.pool.status.pool_state` (``list_providers``);
- runs: :class:`server.workflows.service.WorkflowService` ``list`` / ``status`` / ``diagram`` / ``decide``, with the
  caller (the principal), as ``tools/workflows.py`` calls them (a user sees their own runs, an admin all);
- incidents: :class:`server.operations.incidents.IncidentService` ``active`` / ``recent`` / ``acknowledge``;
- patterns and agents: :class:`knowledge.PatternRegistry` and :class:`server.agents.AgentRegistry` (``deps.agents``).

Bad input (an unknown window or status, a malformed id) raises :class:`BadRequest` before any service is called.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from server.app.dashboard.charts import Chart, time_chart
from server.app.dashboard.dag import FlowchartError, draw
from server.app.dashboard.formatting import ms, percent, usd
from server.workflows.results import RUN_ID_PATTERN

if TYPE_CHECKING:
    from server.dependencies import Dependencies
    from server.security import Principal
    from server.workflows.service import WorkflowService

WINDOWS = ("1h", "24h", "7d")
RUN_STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
RUNS_PER_PAGE = 25
WORKFLOW_SCAN = 500  # runs read to filter by workflow name (the service filters by status only)
_RUN_ID = re.compile(RUN_ID_PATTERN)
_INCIDENT_ID = re.compile(r"^inc-[0-9a-f]{12}$")
_FINISHED = ("completed", "failed", "cancelled")


class BadRequest(ValueError):
    """A query or form value the page does not take (400)."""


class NotFound(LookupError):
    """No such run or incident, or not the caller's (404)."""


class Refused(ValueError):
    """The action does not fit the current state: no approval waiting, an incident already resolved (409)."""


async def overview(deps: Dependencies, window: str) -> dict[str, Any]:
    """Totals and four charts (calls, error rate, p95 latency, cost per bucket) over ``window``, and the open incidents."""
    if window not in WINDOWS:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}")
    from server.operations.monitoring import summarize

    summary = await summarize(deps, window=window, metrics=["calls", "errors", "latency", "cost", "series"])
    series = summary.totals.series or []
    times = [p.t for p in series]
    totals = summary.totals

    def chart(key: str, title: str, values: list[float | None], kind: str, total: str, label: Any) -> Chart:
        return time_chart(key, title, times, values, kind=kind, step_s=summary.step_s, total=total, label=label)

    charts = [
        chart("calls", "Calls", [float(p.calls) for p in series], "bars", f"{totals.calls or 0:,}", _count),
        chart("error-rate", "Error rate", [p.error_rate if p.calls else None for p in series], "line",
              percent(totals.error_rate), percent),
        chart("p95", "Latency p95", [p.latency_p95_ms for p in series], "line", ms(totals.latency_p95_ms), ms),
        chart("cost", "Cost", [p.cost_usd for p in series], "bars", usd(totals.cost_usd), usd),
    ]
    return {"window": window, "windows": WINDOWS, "summary": summary, "charts": charts,
            "incidents": [i for i in summary.incidents if i.status != "resolved"]}


def providers(deps: Dependencies) -> dict[str, Any]:
    """The pool's health (``list_providers``)."""
    from server.pool.status import pool_state

    return {"pool": pool_state(deps.pool, deps.clock)}


async def runs(deps: Dependencies, principal: Principal, status: str | None, workflow: str | None,
               offset_text: str) -> dict[str, Any]:
    """A page of runs, newest first, filtered by status and workflow name."""
    if status is not None and status not in RUN_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(RUN_STATUSES)}")
    if workflow is not None and len(workflow) > 200:
        raise BadRequest("the workflow filter is at most 200 characters")
    if not offset_text.isdigit() or int(offset_text) > 100_000:
        raise BadRequest("offset must be a whole number from 0 to 100000")
    offset = int(offset_text)
    service = _service(deps)
    if workflow is None:
        found = await service.list(status, RUNS_PER_PAGE + 1, offset, principal)
    else:  # the service filters by status only: filter the newest WORKFLOW_SCAN runs by name
        scanned = await service.list(status, WORKFLOW_SCAN, 0, principal)
        found = [r for r in scanned if r.workflow == workflow][offset:offset + RUNS_PER_PAGE + 1]
    more = len(found) > RUNS_PER_PAGE
    return {"runs": found[:RUNS_PER_PAGE], "status": status, "workflow": workflow, "statuses": RUN_STATUSES,
            "offset": offset, "next_offset": offset + RUNS_PER_PAGE if more else None,
            "previous_offset": max(offset - RUNS_PER_PAGE, 0) if offset else None, "scan": WORKFLOW_SCAN}


async def run(deps: Dependencies, principal: Principal, run_id: str) -> dict[str, Any]:
    """A run's status and steps, and its DAG drawn from its Mermaid definition with each step's status."""
    from server.workflows.service import RunNotFound

    if not _RUN_ID.match(run_id):
        raise BadRequest("not a run id")
    service = _service(deps)
    try:
        status = await service.status(run_id, principal)
        mermaid = await service.diagram(run_id, principal)
    except RunNotFound as exc:
        raise NotFound(str(exc)) from None
    try:
        drawing = draw(mermaid, {s.id: s.status for s in status.steps})
    except FlowchartError:
        drawing = None  # the steps table still shows everything
    waiting = [s.id for s in status.steps if s.status == "waiting"]
    return {"run": status, "drawing": drawing, "mermaid": mermaid, "waiting": waiting,
            "finished": status.status in _FINISHED}


async def decide(deps: Dependencies, principal: Principal, run_id: str, form: Mapping[str, str]) -> str:
    """Approve or reject the run's waiting step (as ``workflow_run`` does, the approver being ``principal``).
    Returns the decision (``approved`` or ``rejected``)."""
    from server.security import Forbidden
    from server.workflows.service import ApprovalRefused, RunConflict, RunNotFound

    if not _RUN_ID.match(run_id):
        raise BadRequest("not a run id")
    decision = {"approve": "approved", "reject": "rejected"}.get(form.get("decision", ""))
    if decision is None:
        raise BadRequest("decision must be approve or reject")
    comment = form.get("comment") or None
    if comment is not None and len(comment) > 2000:
        raise BadRequest("the comment is at most 2000 characters")
    step = form.get("step") or None
    if step is not None and len(step) > 600:
        raise BadRequest("not a step id")
    try:
        await _service(deps).decide(run_id, decision, step=step, comment=comment, caller=principal)
    except RunNotFound as exc:
        raise NotFound(str(exc)) from None
    except RunConflict as exc:
        raise Refused(str(exc)) from None
    except ApprovalRefused as exc:  # the step's approvers or not_starter (403)
        raise Forbidden(str(exc)) from None
    return decision


async def incidents(deps: Dependencies) -> dict[str, Any]:
    """Open and acknowledged incidents, then the 50 most recent of any status."""
    if deps.incidents is None:
        return {"active": [], "recent": [], "available": False}
    return {"active": await deps.incidents.active(), "recent": await deps.incidents.recent(50), "available": True}


async def acknowledge(deps: Dependencies, principal: Principal, incident_id: str, form: Mapping[str, str]) -> None:
    """Acknowledge an incident as ``principal`` (as ``acknowledge_incident`` does)."""
    from server.operations.incidents import UnknownIncident

    if not _INCIDENT_ID.match(incident_id):
        raise BadRequest("not an incident id")
    note = form.get("note") or None
    if note is not None and len(note) > 2000:
        raise BadRequest("the note is at most 2000 characters")
    if deps.incidents is None:
        raise NotFound("incidents are not available in this server")
    try:
        await deps.incidents.acknowledge(incident_id, by=principal.id, note=note)
    except UnknownIncident as exc:
        raise NotFound(str(exc)) from None
    except ValueError as exc:  # already resolved
        raise Refused(str(exc)) from None


async def patterns(deps: Dependencies) -> dict[str, Any]:
    """Every pattern (current version) with its version numbers, and every agent (current version), by name.

    ``agents_available`` is ``False`` when the server has no agent service (then ``agents`` is empty).
    """
    listed = []
    for pattern in await deps.patterns.all():
        listed.append({"pattern": pattern, "versions": await deps.patterns.versions(pattern.name)})
    agents = await deps.agents.registry.list() if deps.agents is not None else []
    return {"patterns": listed, "agents": agents, "agents_available": deps.agents is not None}


def _service(deps: Dependencies) -> WorkflowService:
    service = deps.workflows
    if service is None:
        raise NotFound("workflows are not available in this server")
    return service


def _count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
