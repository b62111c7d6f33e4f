"""``ai-orchestration-mcp metrics``: the operations summary of a database, printed as a table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from os import PathLike
from typing import TextIO

from server.config import Config
from server.errors import OrchestrationError
from server.operations.summary import GroupSummary, OperationsSummary

_COLUMNS = (("group", 24), ("calls", 8), ("errors", 7), ("err%", 7), ("p50 ms", 9), ("p95 ms", 9), ("p99 ms", 9),
            ("/min", 8), ("tok in", 9), ("tok out", 9), ("cost $", 10), ("prev calls", 10))


def format_table(summary: OperationsSummary) -> str:
    """The summary's groups and totals as fixed-width text."""

    def number(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    def row(group: GroupSummary) -> Sequence[str]:
        return (group.key or "(none)", str(group.calls), str(group.errors), number((group.error_rate or 0) * 100),
                number(group.latency_p50_ms), number(group.latency_p95_ms), number(group.latency_p99_ms),
                number(group.throughput_per_min, 2), str(group.input_tokens), str(group.output_tokens),
                number(group.cost_usd, 4), str(group.previous.calls if group.previous else "-"))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell[:width].rjust(width) if i else cell[:width].ljust(width)
                         for i, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS, strict=True))).rstrip()

    lines = [f"window {summary.window} by {summary.group_by} (percentiles: {summary.percentiles})",
             line([name for name, _ in _COLUMNS]), line(["-" * w for _, w in _COLUMNS])]
    lines += [line(row(group)) for group in summary.groups]
    lines.append(line(row(summary.totals)))
    for alert in summary.alerts:
        lines.append(f"alert: {alert.group} {alert.metric} = {alert.value:.4g} (threshold {alert.threshold:.4g})")
    for incident in summary.incidents:
        lines.append(f"incident {incident.id}: {incident.status} {incident.severity} {incident.metric} of "
                     f"{incident.provider} = {incident.value:.4g}")
    return "\n".join(lines)


def print_metrics(config: Config, db_path: PathLike | str, window: str, group_by: str,
                  out: TextIO | None = None) -> int:
    """Print the table for the last ``window``. Returns the exit code (2 for a bad window)."""
    import anyio

    from server.app.assembly import open_store
    from server.operations.incidents import active_incidents
    from server.operations.summary import operations_summary

    out = out or sys.stdout

    async def run() -> OperationsSummary:
        store = open_store(db_path, command=True)
        try:
            active = await active_incidents(store.incidents)
            return await operations_summary(store.calls, config.alerts, window=window, group_by=group_by,  # type: ignore[arg-type]
                                            settings=config.operations, incidents=active)
        finally:
            await store.aclose()

    try:
        summary = anyio.run(run)
    except OrchestrationError as exc:
        print(f"metrics: {exc}", file=sys.stderr)  # cli-output (stderr)
        return 2
    print(format_table(summary), file=out)  # cli-output
    return 0
