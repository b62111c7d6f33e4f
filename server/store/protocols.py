"""What the core needs from persistence, as small protocols by concern, and the bundle that holds one of each.

Core code takes the protocol it uses (the pool a :class:`CallStore`, the pattern registry a
:class:`PatternStore` …); only the app assembly holds a :class:`Store`, which bundles one implementation of
every protocol over one backend and closes it. Implementations: SQLite (:mod:`server.store.sqlite`, full mode),
in memory (:mod:`server.store.memory`, tests and simple mode), the JSON state file for patterns and saved
workflows (:mod:`server.store.jsonfile`, simple mode); ``tests/unit/test_store_contract.py`` holds every one to
the same contract.

Durability: a method that returns an id or a version to a client (or stores what such an id names) has
**committed** when its coroutine returns; the ones that only queue (call records, guardrail decisions, cache
entries) return at once, never block the event loop, and are flushed by :meth:`CallStore.flush` and
:meth:`Store.aclose`. A failed write raises :class:`server.store.errors.StorageError` naming the condition
(disk full, read-only, locked …) and keeps nothing of that write; a write that fails never takes another
caller's write with it. Times are Unix seconds throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from server.store.records import (
    AgentRecord,
    AgentSource,
    AggregateRow,
    ApiKeyRecord,
    AuditEntry,
    CallRecord,
    CallRow,
    GroupBy,
    GroupTotals,
    GuardrailDecision,
    PatternRecord,
    RunState,
    WorkflowRecord,
    WorkflowRun,
)


class CallStore(Protocol):
    """Call records (one per provider attempt) and the figures drawn from them: totals, aggregates, spend."""

    def record_call(self, record: CallRecord) -> None:
        """Queue one record; returns at once. Records queued before :meth:`Store.aclose` are never lost; one that
        cannot be stored (bad data) is dropped alone, logged, and takes no other record with it."""
        ...

    async def group_totals(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[GroupTotals]:
        """Totals per group for records with ``since_ts <= ts < until_ts``, ordered by group key, each group's
        latencies sorted ascending.

        Raises:
            ValueError: ``group_by`` is not one of :data:`server.store.GROUP_COLUMNS`.
        """
        ...

    async def cost_by_provider(self, since_ts: float) -> dict[str, float]:
        """USD recorded per provider since ``since_ts`` (budgets survive restarts through this)."""
        ...

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        """Raw records with ``since_ts <= ts < until_ts`` as (group key, ts, status, latency_ms, input_tokens,
        output_tokens, cost_usd), in no particular order."""
        ...

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        """Per-minute (``period_s=60``) or per-hour (``3600``) aggregates with ``since_ts <= start < until_ts``,
        one per (start, group key).

        Raises:
            ValueError: another ``period_s``, or an unknown ``group_by``.
        """
        ...

    async def roll_up(self, before_ts: float) -> int:
        """Delete raw records older than ``before_ts`` (their aggregates stay); returns how many went."""
        ...

    async def rolled_up_before(self) -> float:
        """The latest ``before_ts`` a roll-up used (0 when none): raw records are complete from there on."""
        ...

    async def flush(self) -> None:
        """Wait until every record queued so far is stored (or, if it could not be, dropped and logged)."""
        ...


class GuardrailLog(Protocol):
    """The audit of guardrail decisions: which rule did what to which call, never the text it looked at."""

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        """Queue one decision; returns at once (flushed like call records)."""
        ...

    async def list_guardrail_decisions(self, *, since_ts: float = 0.0, limit: int = 1000) -> list[GuardrailDecision]:
        """Decisions with ``ts >= since_ts``, oldest first, at most ``limit``."""
        ...


class ConversationStore(Protocol):
    """Conversations, addressed by the ``continuation_id`` s that ``orchestrate`` returns."""

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        """A conversation's (role, content) turns, oldest first; ``None`` when the id is unknown, or when
        ``owner`` is given and the conversation belongs to someone else (indistinguishable on purpose)."""
        ...

    async def append_turns(self, conversation_id: str, turns: Sequence[tuple[str, str]], ts: float, *,
                           owner: str | None = None) -> None:
        """Append turns (the conversation is created if new, owned by ``owner``; an existing one keeps its
        owner). Committed when this returns: only then may the id reach a client.

        Raises:
            StorageError: nothing was stored (``invalid text`` for a string that is not valid Unicode).
        """
        ...


class ResponseCache(Protocol):
    """Answers to identical ``temperature=0`` requests, by a key the caller computes."""

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        """The entry under ``key`` stored at or after ``since_ts`` (provider, model, text, input_tokens,
        output_tokens), or ``None``."""
        ...

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        """Queue an entry (replacing an older one under ``key``); returns at once. A cache entry is no
        acknowledgement: one that cannot be stored is dropped alone."""
        ...


class PatternStore(Protocol):
    """Knowledge patterns, every version of each (:mod:`knowledge` validates them and gives them meaning)."""

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        """Store ``record`` as its pattern's next version, atomically; earlier versions stay readable.

        Nothing is stored when the content equals the current version's (returns that, ``False``), nor when
        ``keep_registered`` is set and the current version is not ``builtin`` (a registered pattern overrides
        the shipped library). Returns the version now current and whether this call stored it (committed).

        Raises:
            StorageError: nothing was stored.
        """
        ...

    async def get_pattern(self, name: str, version: int | None = None) -> PatternRecord | None:
        """The current version of pattern ``name`` (or the given ``version``); ``None`` when there is none."""
        ...

    async def pattern_versions(self, name: str) -> list[int]:
        """Every stored version number of ``name``, ascending (empty for an unknown name)."""
        ...

    async def list_patterns(self) -> list[PatternRecord]:
        """The current version of every pattern, ordered by name."""
        ...

    async def search_patterns(self, terms: Sequence[str], tags: Sequence[str], limit: int
                              ) -> list[tuple[PatternRecord, float]]:
        """Current patterns carrying all of ``tags`` that match ``terms`` (lower-case words; the last may be a
        word half typed), best first with a score (higher is better), at most ``limit``.

        Patterns with every term come first, ranked over name, description, tags and template (the name
        weighing most), then patterns with some term in the name, description or tags. With no terms: every
        pattern carrying the tags, by name, score 0. :func:`server.store.sqlite_patterns.search` has the
        details (and how very common words are handled).
        """
        ...

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        """Names of current patterns starting with ``prefix``, ordered, at most ``limit``."""
        ...


class WorkflowStore(Protocol):
    """Saved workflow definitions (:mod:`server.workflows` validates them and gives them meaning)."""

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        """Save a definition, atomically: a new version when the content differs from the current one.
        Returns the record now current and whether this call stored it (committed).

        Raises:
            StorageError: nothing was stored.
        """
        ...

    async def get_workflow(self, name: str) -> WorkflowRecord | None:
        """The saved workflow ``name``, or ``None``."""
        ...

    async def list_workflows(self) -> list[WorkflowRecord]:
        """Every saved workflow, ordered by name."""
        ...


class AgentStore(Protocol):
    """Agents (named roles), every version of each (:mod:`server.agents` validates them and gives them meaning)."""

    async def put_agent(self, name: str, spec: dict[str, Any], ts: float, *,
                        source: AgentSource = "registered") -> tuple[AgentRecord, bool]:
        """Store ``spec`` as agent ``name``'s next version from ``source``, atomically; earlier versions stay
        readable. Nothing is stored when spec and source equal the current version's (returns that, ``False``).
        Returns the version now current and whether this call stored it (committed).

        Raises:
            StorageError: nothing was stored.
        """
        ...

    async def get_agent(self, name: str, version: int | None = None) -> AgentRecord | None:
        """The current version of agent ``name`` (or the given ``version``); ``None`` when there is none."""
        ...

    async def list_agents(self) -> list[AgentRecord]:
        """The current version of every agent, ordered by name."""
        ...


class RunStore(Protocol):
    """Workflow run records: the server's own account of each run (the runtime keeps the step records)."""

    async def create_run(self, run: WorkflowRun) -> tuple[WorkflowRun, bool]:
        """Record ``run`` unless its id is taken, atomically (of two concurrent creations of one id, one wins).
        Returns the stored record (the existing one when the id was taken) and whether this call created it
        (committed).

        Raises:
            StorageError: nothing was stored.
        """
        ...

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        """The run record, or ``None``."""
        ...

    async def list_runs(self, *, owner: str | None = None, status: Sequence[RunState] = (), limit: int = 50,
                        offset: int = 0) -> list[WorkflowRun]:
        """Runs newest first (``created_at`` descending, then ``run_id`` descending), paged by ``limit`` and
        ``offset``; ``owner`` keeps only that principal's runs (``None``: every run); ``status`` keeps only
        runs in those states (empty: any). A query, not a scan: its cost follows the page, not the history."""
        ...

    async def set_run_status(self, run_id: str, status: RunState, ts: float, *, error: str | None = None,
                             if_unfinished: bool = True) -> bool:
        """Move a run to ``status`` (``updated_at = ts``; ``error`` kept with a failure), committed on return.
        With ``if_unfinished`` a finished run keeps its status. Returns whether the record changed.

        Raises:
            StorageError: nothing was changed.
        """
        ...


class IncidentStore(Protocol):
    """Incidents opened by the alert evaluator, as JSON-ready dicts with ``id``, ``opened_at`` and ``status``."""

    async def put_incident(self, incident: dict[str, Any]) -> None:
        """Insert or replace an incident, atomically (committed on return: acknowledgements go through here).

        Raises:
            StorageError: nothing was stored.
        """
        ...

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        """One incident, or ``None``."""
        ...

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Incidents, newest first (``opened_at`` descending, then ``id``); ``active_only``: not resolved."""
        ...


class KeyStore(Protocol):
    """API key records (hashes only; see :mod:`server.security.keys`)."""

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key record (committed on return).

        Raises:
            StorageError: nothing was stored (``conflict`` when the id or the hash exists).
        """
        ...

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key record with this hash, revoked or not; ``None`` when there is none."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key record, oldest first (``created_at``, then ``id``)."""
        ...

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        """Mark a key revoked (committed on return); ``False`` when no unrevoked key has this id."""
        ...


class AuditTrail(Protocol):
    """The append-only audit trail: entries are added and read, never changed; only retention deletes them."""

    async def append_audit(self, entries: Sequence[AuditEntry]) -> int:
        """Append entries in one transaction, committed on return; an entry whose ``id`` is stored already is
        skipped (the first one stays as it was). Returns how many were added."""
        ...

    async def audit_of(self, subject: str, *, limit: int = 10_000) -> list[AuditEntry]:
        """The entries about ``subject`` (a run id …), in the order they were appended."""
        ...

    async def audit_since(self, since_ts: float, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        """Entries with ``ts >= since_ts`` and ``seq > after_seq``, in append order (page on with the last
        ``seq``)."""
        ...

    async def purge_audit(self, before_ts: float) -> int:
        """Delete entries older than ``before_ts`` (retention); returns how many went."""
        ...


class Store(Protocol):
    """One implementation of every protocol over one backend, for the app assembly (which hands each core
    service the parts it needs) and the CLI."""

    @property
    def calls(self) -> CallStore: ...

    @property
    def guardrails(self) -> GuardrailLog: ...

    @property
    def conversations(self) -> ConversationStore: ...

    @property
    def cache(self) -> ResponseCache: ...

    @property
    def patterns(self) -> PatternStore: ...

    @property
    def workflows(self) -> WorkflowStore: ...

    @property
    def runs(self) -> RunStore: ...

    @property
    def agents(self) -> AgentStore: ...

    @property
    def incidents(self) -> IncidentStore: ...

    @property
    def keys(self) -> KeyStore: ...

    @property
    def audit(self) -> AuditTrail: ...

    async def aclose(self) -> None:
        """Store everything queued, then release the backend. Idempotent; shielded from cancellation."""
        ...
