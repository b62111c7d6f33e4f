"""Approvals asked through the waiting client (MCP form elicitation): the in-memory client's elicitation handler
answers for the person behind it; separation of duties decides who is asked (``not_starter``, ``approvers``),
the decision is recorded under the authenticated principal, and a declined form, a 2026-07-28 client or a
client without elicitation leave the step waiting for ``workflow_run`` approve/reject."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import ElicitRequestFormParams, ElicitResult

from server.app.assembly import build_server
from server.security import Principal
from server.store.memory import MemoryStore
from server.workflows.approval_prompts import ApprovalAnswer, wait_asking
from tests.fakes import fake_config, fake_entry, fleet_for
from tests.unit.test_workflows_service import ALICE, OPS, gate, service

pytestmark = pytest.mark.anyio


class Person:
    """A client's elicitation handler: fills the approval form in (or declines), remembering what it saw."""

    def __init__(self, decision: str | None = "approve", comment: str = "looks right") -> None:
        self.decision = decision
        self.comment = comment
        self.asked: list[ElicitRequestFormParams] = []

    async def __call__(self, context: Any, params: ElicitRequestFormParams) -> ElicitResult:
        self.asked.append(params)
        if self.decision is None:
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content={"decision": self.decision, "comment": self.comment})


def server() -> Any:
    config = fake_config(fake_entry("alpha", model="a"))
    return build_server(config, store_factory=MemoryStore, provider_factory=fleet_for(config))


async def test_an_approval_is_answered_through_the_waiting_clients_form() -> None:
    person = Person("approve", "ship it")
    async with Client(server(), mode="legacy", elicitation_callback=person) as client:  # type: ignore[arg-type]
        with anyio.fail_after(20):
            result = await client.call_tool("run_workflow", {"workflow": gate(), "wait_s": 15})
    status = result.structured_content
    assert status["status"] == "completed", status
    decision = status["steps"][0]["output"]
    assert (decision["decision"], decision["by"], decision["comment"]) == ("approved", "local", "ship it")
    assert len(person.asked) == 1 and "g0" in person.asked[0].message
    assert set(person.asked[0].requested_schema["properties"]) == {"decision", "comment"}


async def test_a_rejection_through_the_form_fails_the_run() -> None:
    async with Client(server(), mode="legacy", elicitation_callback=Person("reject", "no")) as client:  # type: ignore[arg-type]
        with anyio.fail_after(20):
            result = await client.call_tool("run_workflow", {"workflow": gate(), "wait_s": 15})
    status = result.structured_content
    assert (status["status"], status["steps"][0]["error_class"]) == ("failed", "rejected")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_without_an_answer_the_step_waits_for_workflow_run(mode: str) -> None:
    person = Person(None)  # declines (legacy); a 2026-07-28 client is never asked mid-call
    async with Client(server(), mode=mode, elicitation_callback=person) as client:  # type: ignore[arg-type]
        waiting = await client.call_tool("run_workflow", {"workflow": gate(), "wait_s": 0.5})
        assert waiting.structured_content["status"] == "waiting"
        run_id = waiting.structured_content["run_id"]
        decided = await client.call_tool("workflow_run", {"run_id": run_id, "action": "approve"})
        assert decided.structured_content["steps"][0]["status"] != "waiting"
    assert len(person.asked) == (1 if mode == "legacy" else 0)


async def asked_while_waiting(starter: Principal, wait_s: float, **rules: Any) -> tuple[list[str], str]:
    """Start a gated run as ``starter`` and wait on it (``wait_s``) as the starter, with an approver that
    approves; returns the steps put to the approver and the run's status after the wait."""
    asked: list[str] = []

    async def approve(run_id: str, step: str) -> ApprovalAnswer:
        asked.append(step)
        return ApprovalAnswer("approved", "fine")

    async with service() as workflows:
        run_id, _ = await workflows.start(gate(**rules), {}, caller=starter)
        with anyio.fail_after(10):
            status = await wait_asking(workflows, run_id, wait_s, None, starter, approve)
    return asked, status.status


async def test_separation_of_duties_decides_who_is_asked() -> None:
    assert await asked_while_waiting(ALICE, 8) == (["g0"], "completed")  # the owner may decide
    assert await asked_while_waiting(ALICE, 0.5, not_starter=True, approvers=["user"]) == ([], "waiting")
    assert await asked_while_waiting(ALICE, 0.5, approvers=["admin"]) == ([], "waiting")
    assert await asked_while_waiting(OPS, 8, approvers=["admin"]) == (["g0"], "completed")
