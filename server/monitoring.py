"""The operations summary as the server reports it: figures, incidents and provider health together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from server.operations import OperationsSummary, operations_summary
from server.pool_status import pool_state
from server.store import GroupBy

if TYPE_CHECKING:
    from server.app import Dependencies


async def summarize(deps: Dependencies, *, window: str = "1h", group_by: GroupBy = "provider",
                    metrics: Sequence[str] | None = None) -> OperationsSummary:
    """:func:`server.operations.operations_summary` with the active incidents and the pool's health.

    Raises:
        ValueError: a malformed window, unknown group or metric.
    """
    incidents = await deps.incidents.active() if deps.incidents is not None else []
    return await operations_summary(
        deps.store, deps.config.alerts, window=window, group_by=group_by, metrics=metrics,
        settings=deps.config.operations, providers=pool_state(deps.pool, deps.clock).providers,
        incidents=incidents, clock=deps.clock)
