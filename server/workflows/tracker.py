"""Live state of the runs executing in this process: each step's status as it changes, and change signals that
status readers wait on (anyio Events: progress reports and waits never poll)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from server.workflows.outcome import StepOutcome


@dataclass
class StepState:
    """Live state of one step in this process."""

    status: str = "pending"  # pending | running | waiting | completed | failed | skipped
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    error_class: str | None = None
    output: Any = None
    reason: str | None = None
    seen: Any = None
    """The parameters the step ran with (rendered), for the audit trail; not part of a recorded outcome."""

    def apply(self, outcome: StepOutcome) -> None:
        """Take a recorded outcome as the live state."""
        for name in ("status", "attempts", "started_at", "ended_at", "error", "error_class", "output", "reason"):
            setattr(self, name, getattr(outcome, name))


@dataclass
class RunState:
    steps: dict[str, StepState] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)
    """Set at the run's next change (then replaced): wait on it, then read the state again."""
    finished: bool = False
    """The interpreter is done with the run here (its result is being recorded, or is)."""

    def progress(self) -> tuple[int, int]:
        """(steps finished, steps known) by the live states."""
        done = sum(s.status in ("completed", "failed", "skipped") for s in self.steps.values())
        return done, len(self.steps)

    def touch(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class RunTracker:
    """Live step states of the runs executing in this process, with change signals for progress and waits."""

    def __init__(self) -> None:
        self._runs: dict[str, RunState] = {}
        self._appeared: anyio.Event | None = None  # made at first use: an Event needs a running event loop

    def run(self, run_id: str) -> RunState:
        state = self._runs.get(run_id)
        if state is None:
            state = self._runs[run_id] = RunState()
            if self._appeared is not None:
                self._appeared.set()
                self._appeared = None
        return state

    def get(self, run_id: str) -> RunState | None:
        return self._runs.get(run_id)

    def changed(self, run_id: str) -> anyio.Event:
        """An event set at the run's next change here, or, while the run is not executing here, when any run
        starts executing here. Take it before reading the state, then wait on it."""
        state = self._runs.get(run_id)
        if state is not None:
            return state.changed
        if self._appeared is None:
            self._appeared = anyio.Event()
        return self._appeared

    def update(self, run_id: str, step: str, **fields: Any) -> None:
        state = self.run(run_id)
        current = state.steps.setdefault(step, StepState())
        for key, value in fields.items():
            setattr(current, key, value)
        state.touch()

    def settle(self, run_id: str, step: str, outcome: StepOutcome) -> None:
        """A step's outcome is recorded: show it."""
        state = self.run(run_id)
        state.steps.setdefault(step, StepState()).apply(outcome)
        state.touch()

    def seen(self, run_id: str, step: str) -> Any:
        """The parameters the step ran with here (``None``: not run in this process, e.g. replayed)."""
        state = self._runs.get(run_id)
        found = state.steps.get(step) if state is not None else None
        return None if found is None else found.seen

    def forget(self, run_id: str) -> None:
        state = self._runs.pop(run_id, None)
        if state is not None:
            state.finished = True
            state.touch()
