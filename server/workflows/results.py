"""What the workflow service hands its callers: a run's status (:class:`RunStatus`, its steps and progress), a
saved definition (:class:`SavedWorkflow`) and the run-id pattern the tools check.

Kept apart from :mod:`server.workflows.service` and :mod:`server.workflows.status` (which build them) so that the
tool surface, which publishes these models' schemas in ``tools/list``, loads without the workflow engine: the
interpreter and the service are imported when the first workflow call (or the warm start) needs them.
"""

from typing import Any

from pydantic import Field

from server.models import DeferredModel

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class StepReport(DeferredModel):
    """One step of a run. Times: Unix seconds and milliseconds."""

    id: str = Field(description="the step's DAG id (parent.child inside sub-workflows)")
    kind: str
    status: str = Field(description="pending, running, waiting, completed, failed, skipped or not_run")
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    duration_ms: float | None = None
    output: Any = None
    error: str | None = None
    error_class: str | None = None
    reason: str | None = Field(default=None, description="why a step was skipped")


class RunProgress(DeferredModel):
    done: int = Field(description="steps finished (completed, failed or skipped)")
    total: int
    message: str = ""


class RunStatus(DeferredModel):
    """A run: status, outputs, every step, progress."""

    run_id: str
    workflow: str
    status: str = Field(description="pending, running, waiting (an approval), completed, failed or cancelled")
    outputs: dict[str, Any] | None = None
    error: str | None = None
    steps: list[StepReport]
    progress: RunProgress
    created_at: float | None = None
    updated_at: float | None = None
    runtime: str = ""


class SavedWorkflow(DeferredModel):
    name: str
    version: int
    changed: bool
    steps: int
    uri: str
    mermaid: str
