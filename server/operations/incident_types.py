"""The incident record, shared by the summary (:mod:`server.operations.summary`) and the engine (:mod:`server.operations.incidents`)."""

from typing import Literal

from pydantic import Field

from server.models import DeferredModel


class IncidentAction(DeferredModel):
    """An automated response taken (or attempted) for an incident."""

    action: str = Field(description="open_circuit, demote, run_workflow")
    at: float = Field(description="Unix seconds")
    ok: bool
    detail: str


class Incident(DeferredModel):
    """A threshold crossing, from opening to resolution. Times are Unix seconds."""

    id: str
    severity: Literal["warning", "critical"] = Field(description="critical when the value is twice the threshold")
    metric: str = Field(description="latency_p95_ms, error_rate or cost_per_hour_usd")
    value: float = Field(description="the value that opened the incident")
    threshold: float
    provider: str | None
    status: Literal["open", "acknowledged", "resolved"]
    opened_at: float
    last_value: float
    last_breach_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    note: str | None = None
    resolved_at: float | None = None
    actions: list[IncidentAction] = Field(default_factory=list)
