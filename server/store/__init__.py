"""The store interface: call records and their summaries (patterns, runs and incidents join later).

Nothing outside ``server/store/`` writes SQL. Two implementations: :class:`server.store.sqlite.SQLiteStore`
(full mode; one thread owns the connection) and :class:`server.store.memory.MemoryStore` (simple mode and
tests). Recording is fire-and-forget (:meth:`Store.record_call` never blocks and never waits for disk);
:meth:`Store.aclose` flushes whatever is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

GroupBy = Literal["provider", "model", "tool", "ab_bucket"]
GROUP_COLUMNS: tuple[str, ...] = ("provider", "model", "tool", "ab_bucket")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One provider attempt, as recorded.

    Attributes:
        ts: when the attempt started, Unix seconds.
        call_id: the tool call the attempt belongs to (several attempts share one).
        tool: the MCP tool that made the call (``orchestrate`` …).
        provider: configured provider name.
        model: model name as configured (or as the upstream reported it).
        status: ``ok`` or ``error``.
        error_class: :attr:`server.errors.ProviderError.error_class` for failures.
        latency_ms: time spent waiting on the provider, milliseconds.
        input_tokens / output_tokens: usage reported by the provider.
        cost_usd: from the configured prices.
        attempt: 1-based position of this attempt within its call.
        ab_bucket: ``experiment:variant`` / ``experiment:control`` when the call ran in an A/B bucket.
        cached: answered from the response cache (no provider was called).
    """

    ts: float
    call_id: str
    tool: str
    provider: str
    model: str
    status: Literal["ok", "error"]
    latency_ms: float
    error_class: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    attempt: int = 1
    ab_bucket: str | None = None
    cached: bool = False


@dataclass(slots=True)
class GroupTotals:
    """Raw totals of one group over a window; :mod:`server.operations` turns them into a summary.

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
        """Count one attempt (append order is the caller's business; sort before summarising)."""
        self.calls += 1
        self.errors += status != "ok"
        self.input_tokens += input_tokens or 0
        self.output_tokens += output_tokens or 0
        self.cost_usd += cost_usd or 0.0
        self.latencies_ms.append(latency_ms)


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

    async def load_turns(self, conversation_id: str) -> list[tuple[str, str]] | None:
        """A conversation's (role, content) turns, oldest first; ``None`` when the id is unknown."""
        ...

    def append_turns(self, conversation_id: str, turns: list[tuple[str, str]], ts: float) -> None:
        """Queue turns (the conversation is created if new); later reads see them."""
        ...

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        """The cached response under ``key`` stored at or after ``since_ts``: provider, model, text, tokens."""
        ...

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        """Queue a response for the cache."""
        ...

    async def flush(self) -> None:
        """Wait until every record queued so far is stored."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources. Idempotent."""
        ...
