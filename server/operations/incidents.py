"""Alert evaluation, incidents and automated responses.

On a schedule (``[alerts] interval_s``) the service summarises the last ``[alerts] window`` per provider and
compares each provider's ``latency_p95_ms``, ``error_rate`` and ``cost_per_hour_usd`` with its thresholds
(``[alerts]``, overridden per provider by ``[alerts.providers.NAME]``). A crossing with no active incident for
that (metric, provider) opens one and runs the responses configured for the metric
(``[[alerts.responses.METRIC]]``); each action taken is recorded on the incident. An incident whose metric stays
normal for ``cooldown_s`` resolves itself; ``acknowledge_incident`` marks it seen (it still resolves itself).
Latency and error-rate incidents need at least ``min_calls`` calls in the window.

The same loop rolls raw call records older than ``[operations] raw_retention_s`` up (deletes them; their
per-minute aggregates stay), every ``rollup_interval_s``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from server.config import AlertMetric, Config, ResponseAction
from server.errors import OrchestrationError
from server.operations.incident_types import Incident, IncidentAction
from server.pool.pool import ProviderPool
from server.security.redact import redact
from server.store import CallStore, IncidentStore

if TYPE_CHECKING:
    from server.operations.audit import AuditLog
    from server.operations.triggers import MetricTriggers
    from server.pool.member import PoolMember

logger = logging.getLogger(__name__)
ALERT_METRICS: tuple[AlertMetric, ...] = ("latency_p95_ms", "error_rate", "cost_per_hour_usd")
# Runs a saved workflow with the incident as input; returns the run id. Wired once workflows exist.
WorkflowRunner = Callable[[str, Mapping[str, Any]], Awaitable[str]]
Listener = Callable[[], Awaitable[None]]


class IncidentError(OrchestrationError):
    """Root of the incident service's errors."""


class UnknownIncident(IncidentError):
    """No incident has the given id."""


class IncidentResolved(IncidentError):
    """The incident was already resolved: there is nothing to acknowledge."""


class IncidentService:
    """Evaluates thresholds, keeps incidents and takes automated responses.

    Args:
        incidents: where incidents live.
        calls: where the figures come from (and what roll-ups trim).
        pool: the provider pool the responses act on.
        config: ``[alerts]`` and ``[operations]``.
        clock: Unix seconds (the pool's breakers use the same clock).
        run_workflow: the ``run_workflow`` response's hook; ``None`` records that action as failed.
        sleep: how the schedule waits (tests pass a fake).
        claim: ``(job, interval_s, now) -> bool``: whether this process runs the job (``evaluate``, ``roll_up``)
            in the current interval. Replicas sharing a PostgreSQL database pass the store's
            ``claim_interval`` (an advisory lock and the last claimed slot), so each interval's evaluation runs on
            one replica and a threshold crossing opens one incident; default: always this process.
        audit: the trail incident actions (responses, acknowledgements) are recorded in.
        triggers: ``[[triggers]]``, handed each evaluation's summary (:mod:`server.operations.triggers`).
    """

    def __init__(self, incidents: IncidentStore, calls: CallStore, pool: ProviderPool, config: Config, *,
                 clock: Callable[[], float] = time.time,
                 run_workflow: WorkflowRunner | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
                 claim: Callable[[str, float, float], Awaitable[bool]] | None = None,
                 audit: AuditLog | None = None, triggers: MetricTriggers | None = None) -> None:
        self.audit = audit
        self.triggers = triggers
        self.incidents = incidents
        self.calls = calls
        self.pool = pool
        self.config = config
        self.clock = clock
        self.run_workflow = run_workflow
        self._sleep = sleep
        self._claim = claim
        self._listeners: list[Listener] = []
        self._demoted: dict[str, tuple[int, float]] = {}  # provider -> (configured priority, demoted until)
        self._lock = anyio.Lock()
        self._last_rollup = clock()

    # -- listeners ------------------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` after incidents change (opened, acknowledged, resolved)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception:
                logger.warning("an incident listener failed", exc_info=True)

    # -- reading --------------------------------------------------------------------------------------------

    async def active(self) -> list[Incident]:
        """Open and acknowledged incidents, newest first."""
        return await active_incidents(self.incidents)

    async def recent(self, limit: int = 100) -> list[Incident]:
        """Every incident, newest first, at most ``limit``."""
        return [Incident.model_validate(i) for i in await self.incidents.list_incidents(limit=limit)]

    # -- the schedule ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate every ``interval_s`` (and roll up every ``rollup_interval_s``) until cancelled."""
        while True:
            await self._sleep(self.config.alerts.interval_s)
            try:
                await self.tick()
            except Exception:
                logger.exception("alert evaluation failed")

    async def tick(self) -> list[Incident]:
        """What the schedule does once per interval: evaluate (if this process claims the interval, see
        ``claim``) and roll up when due. Returns the incidents that changed."""
        changed: list[Incident] = []
        if self._claim is None or await self._claim("evaluate", self.config.alerts.interval_s, self.clock()):
            changed = await self.evaluate()
        await self.maybe_roll_up()
        return changed

    async def maybe_roll_up(self) -> int:
        """Delete raw records past retention if ``rollup_interval_s`` has passed since the last roll-up."""
        now = self.clock()
        operations = self.config.operations
        if now - self._last_rollup < operations.rollup_interval_s:
            return 0
        self._last_rollup = now
        if self._claim is not None and not await self._claim("roll_up", operations.rollup_interval_s, now):
            return 0  # another replica rolls up in this interval
        deleted = await self.calls.roll_up(now - operations.raw_retention_s)
        if deleted:
            logger.info("rolled up %d raw call record(s)", deleted)
        return deleted

    async def evaluate(self) -> list[Incident]:
        """One evaluation: open, update and resolve incidents, restore demotions. Returns what changed."""
        async with self._lock:
            changed = await self._evaluate()
        if changed:
            await self._changed()
        return changed

    async def _evaluate(self) -> list[Incident]:
        now = self.clock()
        self._restore_demotions(now)
        alerts = self.config.alerts
        active = {(i.metric, i.provider): i for i in await self.active()}
        if not active and not _any_threshold(self.config) and self.triggers is None:
            return []
        from server.operations.summary import operations_summary  # not at start-up: the first evaluation is interval_s later

        summary = await operations_summary(self.calls, alerts, window=alerts.window, group_by="provider",
                                           metrics=["errors", "latency", "cost"], settings=self.config.operations,
                                           clock=self.clock)
        if self.triggers is not None:
            await self.triggers.evaluate(summary.groups, now, alerts.min_calls)
        changed: list[Incident] = []
        breached: set[tuple[str, str | None]] = set()
        for group in summary.groups:
            limits = alerts.for_provider(group.key)
            for metric in ALERT_METRICS:
                limit, value = getattr(limits, metric), getattr(group, metric)
                enough = metric == "cost_per_hour_usd" or (group.calls or 0) >= alerts.min_calls
                if limit is None or value is None or not enough or value <= limit:
                    continue
                breached.add((metric, group.key))
                incident = active.get((metric, group.key))
                if incident is None:
                    changed.append(await self._open(metric, group.key, value, limit, now))
                else:
                    incident.last_value, incident.last_breach_at = value, now
                    await self._save(incident)
        for key, incident in active.items():
            if key not in breached and now - incident.last_breach_at >= alerts.cooldown_s:
                incident.status, incident.resolved_at = "resolved", now
                await self._save(incident)
                logger.info("incident %s resolved (%s of %s back to normal)", incident.id, incident.metric,
                            incident.provider)
                changed.append(incident)
        return changed

    async def _open(self, metric: str, provider: str, value: float, threshold: float, now: float) -> Incident:
        incident = Incident(id=f"inc-{uuid.uuid4().hex[:12]}", severity="critical" if value >= 2 * threshold
                            else "warning", metric=metric, value=value, threshold=threshold, provider=provider,
                            status="open", opened_at=now, last_value=value, last_breach_at=now)
        logger.warning("incident %s opened: %s of %s is %.4g (threshold %.4g)", incident.id, metric, provider,
                       value, threshold)
        await self._save(incident)  # recorded before any response runs
        for action in self.config.alerts.responses.get(metric, ()):  # type: ignore[call-overload]
            incident.actions.append(await self._respond(action, incident, now))
            await self._save(incident)
            await self._audited(f"incident.{action.action}", "system:incidents", incident,
                                incident.actions[-1].model_dump(mode="json"))
        return incident

    async def _save(self, incident: Incident) -> None:
        await self.incidents.put_incident(incident.model_dump(mode="json"))

    # -- automated responses --------------------------------------------------------------------------------

    async def _respond(self, action: ResponseAction, incident: Incident, now: float) -> IncidentAction:
        try:
            if action.action == "open_circuit":
                detail = self._open_circuit(self._member(incident), action.duration_s, now)
            elif action.action == "demote":
                detail = self._demote(self._member(incident), action.demote_by, now + action.duration_s)
            else:
                detail = await self._run_workflow(action.workflow or "", incident)
            ok = True
        except Exception as exc:  # a failing response is recorded, never raised
            ok, detail = False, redact(str(exc) or type(exc).__name__, self.config.secrets())
        logger.info("incident %s: %s %s: %s", incident.id, action.action, "done" if ok else "failed", detail)
        return IncidentAction(action=action.action, at=now, ok=ok, detail=detail)

    def _member(self, incident: Incident) -> PoolMember:
        for member in self.pool.members:
            if member.config.name == incident.provider:
                return member
        raise IncidentError(f"provider {incident.provider!r} is not in the pool")

    @staticmethod
    def _open_circuit(member: PoolMember, duration_s: float, now: float) -> str:
        health = member.health
        health.state, health.probe_in_flight = "open", False
        health.open_until = max(health.open_until, now + duration_s)
        health.outcomes.clear()
        return f"circuit of {member.config.name} open until {health.open_until:.0f} ({duration_s:g} s)"

    def _demote(self, member: PoolMember, by: int, until: float) -> str:
        name = member.config.name
        configured, _ = self._demoted.get(name, (member.config.priority, until))
        member.config = member.config.model_copy(update={"priority": configured + by})
        self._demoted[name] = (configured, until)
        return f"priority of {name} {configured} -> {configured + by} until {until:.0f}"

    def _restore_demotions(self, now: float) -> None:
        for member in self.pool.members:
            demoted = self._demoted.get(member.config.name)
            if demoted is not None and now >= demoted[1]:
                member.config = member.config.model_copy(update={"priority": demoted[0]})
                del self._demoted[member.config.name]
                logger.info("priority of %s restored to %d", member.config.name, demoted[0])

    async def _run_workflow(self, workflow: str, incident: Incident) -> str:
        if self.run_workflow is None:
            raise RuntimeError("workflows are not available in this server")
        run_id = await self.run_workflow(workflow, {"incident": incident.model_dump(mode="json")})
        return f"workflow {workflow} started: run {run_id}"

    # -- acknowledging --------------------------------------------------------------------------------------

    async def acknowledge(self, incident_id: str, *, by: str | None = None, note: str | None = None,
                          actor: str | None = None) -> Incident:
        """Mark an open incident as seen (idempotent; it still resolves itself after the cooldown).

        Raises:
            UnknownIncident: no such id.
            IncidentResolved: the incident is already resolved.
        """
        # Free text kept and shown to every reader: secrets (configured keys, key shapes) are masked first.
        secrets = self.config.secrets()
        by = None if by is None else redact(by, secrets)
        note = None if note is None else redact(note, secrets)
        async with self._lock:
            found = await self.incidents.get_incident(incident_id)
            if found is None:
                raise UnknownIncident(f"no incident with id {incident_id!r}: monitor_operations or "
                                      "operations://incidents lists them")
            incident = Incident.model_validate(found)
            if incident.status == "resolved":
                raise IncidentResolved(f"incident {incident_id} was already resolved; nothing to acknowledge")
            if incident.status == "acknowledged" and (note is None or note == incident.note):
                return incident
            incident.status = "acknowledged"
            incident.acknowledged_at = incident.acknowledged_at or self.clock()
            incident.acknowledged_by = by or incident.acknowledged_by
            incident.note = note if note is not None else incident.note
            await self._save(incident)
        await self._audited("incident.acknowledged", actor or "local", incident, {"by": by, "note": note})
        await self._changed()
        return incident

    async def _audited(self, action: str, actor: str, incident: Incident, detail: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record(action, actor=actor, subject=f"incident:{incident.id}", detail=detail)


async def active_incidents(incidents: IncidentStore) -> list[Incident]:
    """Open and acknowledged incidents, newest first."""
    return [Incident.model_validate(i) for i in await incidents.list_incidents(active_only=True)]


def _any_threshold(config: Config) -> bool:
    sets: Sequence[Any] = [config.alerts, *config.alerts.providers.values()]
    return any(getattr(s, m) is not None for s in sets for m in ALERT_METRICS)
