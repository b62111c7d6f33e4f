"""The audit trail: who did what, when, to which run, step, workflow, pattern, key, schedule or incident.

Entries (:class:`server.store.AuditEntry`) go to the store's append-only :class:`~server.store.AuditTrail`.
Each names its actor (a principal id), and carries the SHA-256 of the canonical JSON of its inputs and
outputs; the inputs and outputs themselves only with ``[audit] content = true`` (secrets masked). Entry ids are
deterministic (``run:<id>:step:<name>`` …), so a run replayed after a crash appends nothing twice.

What is recorded, and where:

- ``run.started`` (the workflow service, when the run record is created), ``step.finished`` (the interpreter,
  as each step's outcome is recorded: what it saw, what it produced, which provider and model answered, who
  approved), ``run.finished`` (the run's entry point);
- ``approval.decided`` (the service: approver, decision, comment);
- ``guardrail.<action>`` (the policy's decision log, :class:`AuditedGuardrails`: tied to the run and step
  making the call through :data:`current_step`);
- ``workflow.saved`` and ``schedule.changed``, ``pattern.registered``, ``key.created`` / ``key.revoked``,
  ``incident.action`` (where those changes are made).

A write that fails is logged at WARNING and does not undo the action it records. Retention
(``[audit] retention_days``) is the only deletion; no tool writes or edits the trail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from server.security.redact import redact
from server.store import AuditEntry, AuditTrail, GuardrailDecision, GuardrailLog, StorageError

logger = logging.getLogger(__name__)
current_step: ContextVar[tuple[str, str] | None] = ContextVar("ai_orchestration_audit_step", default=None)
"""(run id, step record name) of the workflow step whose calls are being made (set by the interpreter)."""
EXPORT_PAGE = 1000
_UNSET: Any = object()


def digest(value: Any) -> str:
    """SHA-256 hex of ``value``'s canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class AuditLog:
    """Writes and reads the trail.

    Args:
        trail: the store's audit trail.
        content: keep inputs and outputs themselves (``[audit] content``).
        retention_s: entries older than this are purged by :meth:`purge`.
        secrets: the configured credentials, masked in any content kept.
    """

    def __init__(self, trail: AuditTrail, *, content: bool = False, retention_s: float = 365 * 86_400.0,
                 secrets: Callable[[], Sequence[str]] = list, clock: Callable[[], float] = time.time) -> None:
        self.trail = trail
        self.content = content
        self.retention_s = retention_s
        self._secrets = secrets
        self._clock = clock
        self._pending: list[AuditEntry] = []

    def entry(self, action: str, *, actor: str, subject: str, id: str | None = None, step: str | None = None,
              inputs: Any = _UNSET, outputs: Any = _UNSET, detail: Mapping[str, Any] | None = None,
              ts: float | None = None) -> AuditEntry:
        """An entry (not stored yet); ``id`` defaults to a fresh unique one."""
        content = None
        if self.content and (inputs is not _UNSET or outputs is not _UNSET):
            content = {k: v for k, v in (("inputs", inputs), ("outputs", outputs)) if v is not _UNSET}
            content = json.loads(redact(json.dumps(content, ensure_ascii=False, default=str), list(self._secrets())))
        at = self._clock() if ts is None else ts
        return AuditEntry(id=id or f"{action}:{uuid.uuid4().hex}", ts=at, actor=actor, action=action,
                          subject=subject, step=step,
                          input_sha256=None if inputs is _UNSET else digest(inputs),
                          output_sha256=None if outputs is _UNSET else digest(outputs),
                          detail=dict(detail or {}), content=content)

    def note(self, entry: AuditEntry) -> None:
        """Keep ``entry`` to be stored with the next write (for callers that cannot wait, such as the policy's
        decision log); :meth:`flush` stores it now."""
        self._pending.append(entry)

    async def record(self, action: str, *, actor: str, subject: str, **fields: Any) -> None:
        """Append one entry (and any noted before), committed on return; a failure is logged, not raised."""
        await self.append([self.entry(action, actor=actor, subject=subject, **fields)])

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        pending, self._pending = self._pending, []
        try:
            await self.trail.append_audit([*pending, *entries])
        except StorageError as exc:
            logger.warning("%d audit entries could not be stored (%s)", len(pending) + len(entries), exc.condition)
        except Exception:  # noqa: BLE001 - an audit failure never fails what it records
            logger.warning("%d audit entries could not be stored", len(pending) + len(entries), exc_info=True)

    async def flush(self) -> None:
        if self._pending:
            await self.append([])

    async def upkeep(self, interval_s: float = 30.0, purge_every_s: float = 3600.0) -> None:
        """Until cancelled: store noted entries every ``interval_s``, purge past retention every
        ``purge_every_s`` (idempotent, so replicas sharing a store may each do it)."""
        import anyio

        last_purge = 0.0
        while True:
            await anyio.sleep(interval_s)
            try:
                await self.flush()
                if self._clock() - last_purge >= purge_every_s:
                    last_purge = self._clock()
                    await self.purge()
            except Exception:  # noqa: BLE001 - logged; tried again next interval
                logger.warning("audit upkeep failed", exc_info=True)

    async def purge(self) -> int:
        """Delete entries past retention; returns how many went."""
        return await self.trail.purge_audit(self._clock() - self.retention_s)

    async def export(self, since_ts: float) -> AsyncIterator[str]:
        """Every entry since ``since_ts`` as JSON lines, in append order (paged through the store)."""
        after = 0
        while True:
            page = await self.trail.audit_since(since_ts, after_seq=after, limit=EXPORT_PAGE)
            for entry in page:
                yield json.dumps(entry_json(entry), ensure_ascii=False, sort_keys=True)
            if len(page) < EXPORT_PAGE:
                return
            after = page[-1].seq


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """An entry as JSON data (keys of the record; ``content`` only when kept)."""
    data = {"seq": entry.seq, "id": entry.id, "ts": entry.ts, "actor": entry.actor, "action": entry.action,
            "subject": entry.subject, "step": entry.step, "input_sha256": entry.input_sha256,
            "output_sha256": entry.output_sha256, "detail": entry.detail}
    if entry.content is not None:
        data["content"] = entry.content
    return data


class AuditedGuardrails:
    """A :class:`~server.store.GuardrailLog` that also notes each decision in the audit trail, tied to the run
    and step making the call (:data:`current_step`), stored with the audit's next write."""

    def __init__(self, log: GuardrailLog, audit: AuditLog) -> None:
        self._log = log
        self._audit = audit

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        self._log.record_guardrail(decision)
        run_step = current_step.get()
        subject, step = run_step if run_step is not None else (f"principal:{decision.principal}", None)
        self._audit.note(self._audit.entry(
            f"guardrail.{decision.action}", actor=decision.principal, subject=subject, step=step, ts=decision.ts,
            detail={"tool": decision.tool, "stage": decision.stage, "rule": decision.rule, "detail": decision.detail}))

    async def list_guardrail_decisions(self, *, since_ts: float = 0.0, limit: int = 1000) -> list[GuardrailDecision]:
        return await self._log.list_guardrail_decisions(since_ts=since_ts, limit=limit)
