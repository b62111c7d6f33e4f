"""The records the store keeps, as plain frozen dataclasses shared by every implementation and by the core.

Nothing here does I/O; :mod:`server.store.protocols` says what a store does with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from server.operations.histogram import add_value, merge

GroupBy = Literal["provider", "model", "tool", "ab_bucket", "workflow"]
GROUP_COLUMNS: tuple[str, ...] = ("provider", "model", "tool", "ab_bucket", "workflow")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One provider attempt, as recorded.

    Attributes:
        ts: when the attempt started, Unix seconds.
        call_id: the tool call the attempt belongs to (several attempts share one).
        tool: the MCP tool that made the call (``orchestrate`` …).
        provider: configured provider name.
        model: model name as configured (or as the upstream reported it).
        status: ``ok``, ``error``, or ``cancelled`` (early stop, a deadline, the client going away: counted in no
            call, error or latency figure, so it never moves error rates, breakers or incidents).
        error_class: :attr:`server.errors.ProviderError.error_class` for failures.
        latency_ms: time spent waiting on the provider, milliseconds.
        input_tokens / output_tokens: usage reported by the provider.
        cost_usd: from the configured prices.
        attempt: 1-based position of this attempt within its call.
        ab_bucket: ``experiment:variant`` / ``experiment:control`` when the call ran in an A/B bucket.
        cached: answered from the response cache (no provider was called).
        workflow: the saved workflow whose step made the call, if any.
    """

    ts: float
    call_id: str
    tool: str
    provider: str
    model: str
    status: Literal["ok", "error", "cancelled"]
    latency_ms: float
    error_class: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    attempt: int = 1
    ab_bucket: str | None = None
    cached: bool = False
    workflow: str | None = None


@dataclass(slots=True)
class GroupTotals:
    """Raw totals of one group over a window; :mod:`server.operations.summary` turns them into a summary.

    ``latencies_ms`` holds every attempt's latency in the window (successes and failures), sorted ascending.
    """

    key: str
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, status: str, latency_ms: float, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        """Count one attempt (append order is the caller's business; sort before summarising); a cancelled one
        counts for nothing."""
        if status == "cancelled":
            return
        self.calls += 1
        self.errors += status != "ok"
        self.input_tokens += input_tokens or 0
        self.output_tokens += output_tokens or 0
        self.cost_usd += cost_usd or 0.0
        self.latencies_ms.append(latency_ms)


CallRow = tuple[str, float, str, float, int, int, float]


@dataclass(slots=True)
class Aggregate:
    """Figures of many calls: counts, tokens, cost, and latencies as a :mod:`server.operations.histogram` histogram
    (bucket index -> count). Aggregates add up exactly."""

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, record: CallRecord) -> None:
        """Count one record (a cancelled one counts for nothing: see :attr:`CallRecord.status`)."""
        if record.status == "cancelled":
            return
        self.calls += 1
        self.errors += record.status != "ok"
        self.input_tokens += record.input_tokens or 0
        self.output_tokens += record.output_tokens or 0
        self.cost_usd += record.cost_usd or 0.0
        add_value(self.histogram, record.latency_ms)

    def absorb(self, other: Aggregate) -> None:
        """Add ``other``'s figures to these."""
        self.calls += other.calls
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        merge(self.histogram, other.histogram)


@dataclass(slots=True)
class AggregateRow(Aggregate):
    """The calls of one group (``key``) in one period (a minute or an hour) starting at ``start``, Unix seconds."""

    start: float = 0.0
    key: str = ""


@dataclass(frozen=True, slots=True)
class PatternRecord:
    """One version of a knowledge pattern, as stored (:mod:`knowledge` validates and gives it meaning).

    Attributes:
        name: the pattern's slug (``code-review``).
        version: 1 for the first version; each change adds one. Ignored by :meth:`PatternStore.put_pattern <server.store.protocols.PatternStore.put_pattern>` on input.
        description / template: the pattern's text; the template has ``{{ variable }}`` placeholders.
        variables: declared variables, each ``{"name", "description", "required", "default"}``.
        metadata: any JSON object (``domain``, ``tags``, ``copilot`` …).
        apply_to: globs for GitHub Copilot's ``applyTo``.
        tags: lower-case tags (from ``metadata["tags"]``), kept apart for filtering and full-text search.
        source: ``builtin`` (the shipped library) or ``registered``.
        created_at: when version 1 was stored, Unix seconds; updated_at: when this version was stored.
    """

    name: str
    version: int
    description: str
    template: str
    variables: tuple[dict[str, Any], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    apply_to: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    source: str = "registered"
    created_at: float = 0.0
    updated_at: float = 0.0

    def same_content(self, other: PatternRecord) -> bool:
        """Whether ``other`` would store nothing new (version and timestamps aside)."""
        return (self.description, self.template, self.variables, self.metadata, self.apply_to, self.tags,
                self.source) == (other.description, other.template, other.variables, other.metadata,
                                 other.apply_to, other.tags, other.source)


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A saved workflow definition (:mod:`server.workflows` validates and gives it meaning).

    Attributes:
        name: the workflow's slug.
        version: 1 when first saved; each change adds one.
        definition: the definition as JSON data.
        created_at / updated_at: Unix seconds.
    """

    name: str
    version: int
    definition: dict[str, Any]
    created_at: float = 0.0
    updated_at: float = 0.0


AgentSource = Literal["config", "registered"]
"""Where an agent version came from (:attr:`AgentRecord.source`)."""


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One version of an agent (a named role; :mod:`server.agents` validates the spec and gives it meaning).

    Attributes:
        name: the agent's slug.
        version: 1 when first stored; each change of the spec adds one (identical content stores nothing).
        spec: the agent as JSON data (description, system prompt, capabilities, providers, tools …).
        created_at: when version 1 was stored; updated_at: when this version was, Unix seconds.
        source: where this version came from: ``config`` (``[agents.NAME]``, stored at a start) or ``registered``
            (``register_agent``).
    """

    name: str
    version: int
    spec: dict[str, Any]
    created_at: float = 0.0
    updated_at: float = 0.0
    source: AgentSource = "registered"


def next_agent_version(current: AgentRecord | None, name: str, spec: dict[str, Any], ts: float,
                       source: AgentSource) -> AgentRecord | None:
    """The version to store after ``current`` (``None``: the agent is new), or ``None`` when ``current`` already
    holds ``spec`` from ``source`` (every :class:`~server.store.AgentStore` stores nothing then)."""
    if current is not None and (current.spec, current.source) == (spec, source):
        return None
    if current is None:
        return AgentRecord(name, 1, spec, ts, ts, source)
    return AgentRecord(name, current.version + 1, spec, current.created_at, ts, source)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One API key as stored: never the key itself, only its SHA-256 (see :mod:`server.security.keys`).

    Attributes:
        id: the key's public id (also its owner id for ``run_id`` s and ``continuation_id`` s).
        name: a label chosen at creation.
        role: ``user`` or ``admin``.
        key_hash: hex SHA-256 of the whole key.
        prefix: the first characters of the key, to recognise it in listings.
        created_at / expires_at / revoked_at: Unix seconds (``None`` when not set).
    """

    id: str
    name: str
    role: str
    key_hash: str
    prefix: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class GuardrailDecision:
    """One guardrail decision on one call: the rule and what it did, never the text it looked at."""

    ts: float
    tool: str
    principal: str
    stage: Literal["input", "output", "models"]
    action: Literal["allow", "block", "redact"]
    rule: str
    detail: str = ""


RunState = Literal["pending", "running", "completed", "failed", "cancelled"]
"""Where a run stands in the store: ``pending`` (recorded, not executing yet), ``running``, or finished."""
FINISHED: tuple[RunState, ...] = ("completed", "failed", "cancelled")
RUN_STATES: tuple[RunState, ...] = ("pending", "running", *FINISHED)


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """A workflow run as the server records it: what was started, by whom, when, and where it stands.

    The runtime (DBOS, or the in-memory one) executes the run and keeps its step records; this record is the
    server's own, written before the run id is returned to anyone, so ownership and listing never depend on the
    runtime's recorded arguments.

    Attributes:
        run_id: the run's id (server-made ``run-<hex>``, or the caller's idempotency key).
        workflow: the workflow's name.
        fingerprint: SHA-256 hex of the run's definition, sub-workflows and inputs (the same id with other
            arguments is refused).
        created_at / updated_at: Unix seconds.
        owner: the principal id that started the run (``None``: started without authentication).
        workflow_version: the saved workflow's version the run started from (``None``: an inline definition).
        status: see :data:`RunState`; ``waiting`` (an approval open) is not stored, it is seen live.
        steps: how many steps the run plans (sub-workflows' steps included), for progress.
        deadline_at: when the duration ceiling stops the run, Unix seconds (``None``: no ceiling).
        error: why the run failed, once it has.
    """

    run_id: str
    workflow: str
    fingerprint: str
    created_at: float
    updated_at: float = 0.0
    owner: str | None = None
    workflow_version: int | None = None
    status: RunState = "pending"
    steps: int = 0
    deadline_at: float | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the run has ended (completed, failed or cancelled)."""
        return self.status in FINISHED


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of the append-only audit trail (:mod:`server.operations.audit` writes and reads them).

    Attributes:
        id: unique and deterministic for the fact it records (``run:<run id>:step:<step>`` …): appending the
            same fact again (a run replayed after a crash) keeps the first entry.
        ts: when, Unix seconds.
        actor: who: a principal id (``key:…``, ``jwt:…``, ``local``, ``system:scheduler`` …).
        action: what: ``run.started``, ``step.finished``, ``approval.decided``, ``guardrail.redact``,
            ``workflow.saved``, ``schedule.changed``, ``incident.action`` …
        subject: what it is about: a run id (entries of one run share it), ``workflow:<name>``,
            ``pattern:<name>``, ``agent:<name>``, ``key:<id>``, ``incident:<id>``.
        step: the step's record name, for step entries.
        input_sha256 / output_sha256: SHA-256 hex of the canonical JSON of what went in and came out.
        detail: small facts (provider, model, decision, comment, rule …), JSON data.
        content: the inputs and outputs themselves, only when ``[audit] content`` is on.
        seq: the store's order of appending (0 until stored).
    """

    id: str
    ts: float
    actor: str
    action: str
    subject: str
    step: str | None = None
    input_sha256: str | None = None
    output_sha256: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] | None = None
    seq: int = 0
