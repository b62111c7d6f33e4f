"""The operations summary as the server reports it: figures, incidents and provider health together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from server.operations.summary import OperationsSummary, operations_summary
from server.pool.status import pool_state
from server.store import GroupBy

if TYPE_CHECKING:
    from server.dependencies import Dependencies


async def summarize(deps: Dependencies, *, window: str = "1h", group_by: GroupBy = "provider",
                    metrics: Sequence[str] | None = None) -> OperationsSummary:
    """:func:`server.operations.summary.operations_summary` with the active incidents and the pool's health.

    Raises:
        ValueError: a malformed window, unknown group or metric.
    """
    incidents = await deps.incidents.active() if deps.incidents is not None else []
    return await operations_summary(
        deps.store.calls, deps.config.alerts, window=window, group_by=group_by, metrics=metrics,
        settings=deps.config.operations, providers=pool_state(deps.pool, deps.clock).providers,
        incidents=incidents, clock=deps.clock)
