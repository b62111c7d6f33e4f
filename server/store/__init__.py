"""The store interface: call records and their summaries, knowledge patterns (runs and incidents join later).

Nothing outside ``server/store/`` writes SQL. Two implementations: :class:`server.store.sqlite.SQLiteStore`
(full mode; one thread owns the connection) and :class:`server.store.memory.MemoryStore` (simple mode and
tests). Recording is fire-and-forget (:meth:`Store.record_call` never blocks and never waits for disk);
:meth:`Store.aclose` flushes whatever is queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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
        version: 1 for the first version; each change adds one. Ignored by :meth:`Store.put_pattern` on input.
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


class Store(Protocol):
    """What the core needs from persistence."""

    def record_call(self, record: CallRecord) -> None:
        """Queue one record; returns at once. Records queued before :meth:`aclose` are never lost."""
        ...

    async def group_totals(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[GroupTotals]:
        """Totals per group for records with ``since_ts <= ts < until_ts``, ordered by group key."""
        ...

    async def cost_by_provider(self, since_ts: float) -> dict[str, float]:
        """USD recorded per provider since ``since_ts`` (budgets survive restarts through this)."""
        ...

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        """A conversation's (role, content) turns, oldest first; ``None`` when the id is unknown, or when
        ``owner`` is given and the conversation belongs to someone else (indistinguishable on purpose)."""
        ...

    def append_turns(self, conversation_id: str, turns: list[tuple[str, str]], ts: float, *,
                     owner: str | None = None) -> None:
        """Queue turns (the conversation is created if new, owned by ``owner``); later reads see them."""
        ...

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key record (written when this returns)."""
        ...

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key record with this hash, revoked or not; ``None`` when there is none."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key record, oldest first."""
        ...

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        """Mark a key revoked; ``False`` when no unrevoked key has this id."""
        ...

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        """Queue one guardrail decision; returns at once."""
        ...

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        """The cached response under ``key`` stored at or after ``since_ts``: provider, model, text, tokens."""
        ...

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        """Queue a response for the cache."""
        ...

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        """Store ``record`` as its pattern's next version, atomically; earlier versions stay readable.

        Nothing is stored when the content equals the current version's (returns that, ``False``), nor when
        ``keep_registered`` is set and the current version is not ``builtin`` (a registered pattern overrides
        the shipped library). Returns the version now current and whether it was stored by this call.
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

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        """Save a workflow definition, atomically: a new version when the content differs from the current one.
        Returns the record now current and whether this call stored it."""
        ...

    async def get_workflow(self, name: str) -> WorkflowRecord | None:
        """The saved workflow ``name``, or ``None``."""
        ...

    async def list_workflows(self) -> list[WorkflowRecord]:
        """Every saved workflow, ordered by name."""
        ...

    # -- operations (server.operations.summary, server.operations.incidents) ---------------------------------------------------

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        """Raw records with ``since_ts <= ts < until_ts`` as (group key, ts, status, latency_ms, input_tokens,
        output_tokens, cost_usd), in no particular order."""
        ...

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        """Per-minute (``period_s=60``) or per-hour (``3600``) aggregates with ``since_ts <= start < until_ts``,
        one per (start, group key)."""
        ...

    async def roll_up(self, before_ts: float) -> int:
        """Delete raw records older than ``before_ts`` (their per-minute aggregates stay); returns how many."""
        ...

    async def rolled_up_before(self) -> float:
        """The latest ``before_ts`` a roll-up used (0 when none): raw records are complete from there on."""
        ...

    async def put_incident(self, incident: dict[str, Any]) -> None:
        """Insert or replace an incident (a JSON-ready dict with an ``id``), atomically."""
        ...

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        """One incident, or ``None``."""
        ...

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Incidents, newest first; ``active_only``: open or acknowledged ones."""
        ...

    async def flush(self) -> None:
        """Wait until every record queued so far is stored."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources. Idempotent."""
        ...
