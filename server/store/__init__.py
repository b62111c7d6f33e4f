"""Persistence: small protocols by concern (:mod:`.protocols`), the records they keep (:mod:`.records`), the
errors they raise (:mod:`.errors`), and their implementations.

Nothing outside ``server/store/`` writes SQL. Implementations: :class:`server.store.sqlite.SQLiteStore` (full mode;
one thread owns the connection), :class:`server.store.memory.MemoryStore` (tests, and simple mode's records) and
:class:`server.store.jsonfile.JSONFileStore` (simple mode: patterns and saved workflows in a JSON file). This
package imports only the standard library, so simple mode can use it.
"""

from __future__ import annotations

from server.store.errors import StorageError, StoreUnavailable
from server.store.protocols import (
    AgentStore,
    AuditTrail,
    CallStore,
    ConversationStore,
    GuardrailLog,
    IncidentStore,
    KeyStore,
    PatternStore,
    ResponseCache,
    RunStore,
    Store,
    WorkflowStore,
)
from server.store.records import (
    FINISHED,
    GROUP_COLUMNS,
    RUN_STATES,
    AgentRecord,
    AgentSource,
    Aggregate,
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

__all__ = [
    "FINISHED", "GROUP_COLUMNS", "RUN_STATES", "AgentRecord", "AgentSource", "AgentStore", "Aggregate", "AggregateRow",
    "ApiKeyRecord", "AuditEntry", "AuditTrail", "CallRecord", "CallRow", "CallStore", "ConversationStore", "GroupBy",
    "GroupTotals", "GuardrailDecision", "GuardrailLog", "IncidentStore", "KeyStore", "PatternRecord", "PatternStore",
    "ResponseCache", "RunState", "RunStore", "StorageError", "Store", "StoreUnavailable", "WorkflowRecord",
    "WorkflowRun", "WorkflowStore",
]
