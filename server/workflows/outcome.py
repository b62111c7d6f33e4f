"""What a run records for each step: :class:`StepOutcome` (and :class:`ApprovalOpened` for an approval's
opening), typed here and kept as plain JSON in the runtime's step records.

The JSON shape is the one runs have always recorded (``{"status", "output", "error", "error_class", "attempts",
"started_at", "ended_at", "reason"}``, absent keys meaning their defaults), so records written by earlier
versions of the server read back unchanged and a DBOS replay returns exactly what was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

OutcomeStatus = Literal["completed", "failed", "skipped"]
R = TypeVar("R", bound="_Record")


class _Record(BaseModel):
    """A model kept as JSON in a step record."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_record(cls: type[R], record: Any) -> R | None:
        """The model a step record holds, or ``None`` when ``record`` is not one (another kind of record, or
        nothing recorded yet)."""
        if not isinstance(record, Mapping):
            return None
        try:
            return cls.model_validate(record)
        except ValidationError:
            return None

    def record(self) -> dict[str, Any]:
        """The JSON a runtime records."""
        return self.model_dump(mode="json")


class StepOutcome(_Record):
    """A step's recorded outcome: how it ended, its output or error, and when.

    Attributes:
        status: ``completed``, ``failed`` (retries exhausted, rejected, timed out …) or ``skipped``.
        output: the step's JSON output (``None`` when it failed or was skipped; an approval's decision either
            way: ``{"decision", "by", "role", "comment", "decided_at"}``).
        error / error_class: why it failed (redacted, at most 1,000 characters) and the class that
            ``retry.retry_on`` and ``steps.X.error_class`` name.
        attempts: attempts made (0 for a skip).
        started_at / ended_at: Unix seconds.
        reason: why it was skipped.
    """

    status: OutcomeStatus
    output: Any = None
    error: str | None = None
    error_class: str | None = None
    attempts: int = Field(default=0, ge=0)
    started_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None

    @classmethod
    def completed(cls, output: Any, *, attempts: int, started_at: float, ended_at: float) -> StepOutcome:
        return cls(status="completed", output=output, attempts=attempts, started_at=started_at, ended_at=ended_at)

    @classmethod
    def failed(cls, error: str, error_class: str, *, attempts: int, started_at: float, ended_at: float,
               output: Any = None) -> StepOutcome:
        return cls(status="failed", output=output, error=error, error_class=error_class, attempts=attempts,
                   started_at=started_at, ended_at=ended_at)

    @classmethod
    def skipped(cls, reason: str) -> StepOutcome:
        return cls(status="skipped", reason=reason)

    def view(self) -> dict[str, Any]:
        """What later steps' templates and conditions see as ``steps.<id>``."""
        return {"status": self.status, "output": self.output, "error": self.error, "error_class": self.error_class}


class ApprovalOpened(_Record):
    """When an approval step first started waiting (recorded once, so its timeout survives a restart)."""

    opened_at: float
