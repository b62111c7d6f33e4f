"""The client's own model as a consensus member (``host: true``), asked through MCP sampling by the in-memory
client's sampling handler, in both protocol eras: its answer joins the vote, is screened and recorded like a
provider's; a refusal leaves a partial consensus that says so; no capability is -32021; it never becomes a
fallback candidate, a task, or a workflow step's member."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client, MCPError
from mcp_types import CreateMessageRequestParams, CreateMessageResult, ErrorData, TextContent

from server.app.assembly import build_server
from server.config import Config
from server.store.memory import MemoryStore
from tests.fakes import Fleet, Reply, fake_config, fake_entry, fleet_for
from tests.tasks_client import TasksClient, start_task

pytestmark = pytest.mark.anyio
MODES = ["auto", "legacy"]  # 2026-07-28 (the answer rides an input-required round) and the handshake era


class Host:
    """A client's sampling handler: answers ``reply`` (or refuses), remembering what it was asked."""

    def __init__(self, reply: str | None = "Paris", model: str = "host-model-1") -> None:
        self.reply = reply
        self.model = model
        self.asked: list[CreateMessageRequestParams] = []

    async def __call__(self, context: Any, params: CreateMessageRequestParams) -> CreateMessageResult | ErrorData:
        self.asked.append(params)
        if self.reply is None:
            return ErrorData(code=-1, message="the user declined to share their model")
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=self.reply),
                                   model=self.model)


def two_providers(**sections: Any) -> tuple[Config, Fleet]:
    config = fake_config(fake_entry("a", model="a"), fake_entry("b", model="b"), **sections)
    return config, fleet_for(config)


async def call(config: Config, fleet: Fleet, sampling: Host | None, store: MemoryStore, mode: str,
               **arguments: Any) -> Any:
    """The call's result, or the protocol error it got."""
    mcp = build_server(config, store_factory=lambda: store, provider_factory=fleet)
    async with Client(mcp, mode=mode, sampling_callback=sampling) as client:  # type: ignore[arg-type]
        try:
            return await client.call_tool("consensus", arguments)
        except MCPError as exc:
            return exc


@pytest.mark.parametrize("mode", MODES)
async def test_the_hosts_model_answers_as_a_member_and_is_recorded(mode: str) -> None:
    config, fleet = two_providers()
    fleet["a"].script(Reply("Paris"))
    fleet["b"].script(Reply("Lyon"))
    store, host = MemoryStore(), Host("paris")
    result = await call(config, fleet, host, store, mode, prompt="Capital of France?", choices=["Paris", "Lyon"],
                        providers=["a", "b"], host=True, threshold=1.0)  # every answer counts: no early stop
    assert not result.is_error, result.content
    out = result.structured_content
    assert [(r["provider"], r["status"]) for r in out["responses"]] == [("a", "ok"), ("b", "ok"),
                                                                       ("host:sampling", "ok")]
    assert out["responses"][2]["model"] == "host-model-1"
    assert (out["status"], out["answer"], out["agreement"]) == ("no_consensus", "Paris", pytest.approx(2 / 3))
    assert len(host.asked) == 1 and host.asked[0].messages[0].content.text == "Capital of France?"
    recorded = [(r.provider, r.model, r.status, r.tool) for r in store.calls.records]
    assert ("host:sampling", "host-model-1", "ok", "consensus") in recorded


@pytest.mark.parametrize("mode", MODES)
async def test_the_hosts_model_is_screened_like_a_provider(mode: str) -> None:
    config, fleet = two_providers(guardrails={"redact_pii": True, "blocked_output_patterns": ["NEVER-SAY-THIS"]})
    fleet["a"].script(Reply("yes"))
    fleet["b"].script(Reply("yes"))
    store, host = MemoryStore(), Host("NEVER-SAY-THIS")
    result = await call(config, fleet, host, store, mode, prompt="Mail alice@example.com about it?",
                        choices=["yes", "no"], providers=["a", "b"], host=True)
    assert not result.is_error, result.content
    assert "alice@example.com" not in host.asked[0].messages[0].content.text  # redacted before it was sent
    report = result.structured_content["responses"][2]
    assert (report["provider"], report["status"], report["error_class"]) == ("host:sampling", "error",
                                                                            "guardrail_blocked")
    assert "NEVER-SAY-THIS" not in str(result.structured_content)


async def test_a_refusal_leaves_a_partial_consensus_that_says_so() -> None:
    config, fleet = two_providers()
    fleet["a"].script(Reply("Paris"))
    fleet["b"].script(Reply("Paris"))
    store = MemoryStore()
    result = await call(config, fleet, Host(None), store, "legacy", prompt="Capital of France?",
                        choices=["Paris", "Lyon"], providers=["a", "b"], host=True)
    assert not result.is_error, result.content
    out = result.structured_content
    host = out["responses"][2]
    assert (host["provider"], host["status"], host["error_class"]) == ("host:sampling", "refused", "refused")
    assert "declined" in host["error"]
    assert (out["status"], out["answer"]) == ("partial", "Paris")
    assert ("host:sampling", "error") in [(r.provider, r.status) for r in store.calls.records]


@pytest.mark.parametrize("mode", MODES)
async def test_without_the_sampling_capability_the_call_is_refused_with_32021(mode: str) -> None:
    config, fleet = two_providers()
    refused = await call(config, fleet, None, MemoryStore(), mode, prompt="q", host=True)
    assert isinstance(refused, MCPError) and refused.error.code == -32021
    assert refused.error.data == {"requiredCapabilities": {"sampling": {}}}
    assert fleet["a"].requests == [] and fleet["b"].requests == []  # nothing was sent


async def test_without_host_the_client_is_never_asked() -> None:
    config, fleet = two_providers()
    fleet["a"].script(Reply("x"))
    fleet["b"].script(Reply("x"))
    host = Host()
    result = await call(config, fleet, host, MemoryStore(), "legacy", prompt="q", max_providers=2)
    assert not result.is_error and host.asked == []
    assert sorted(r["provider"] for r in result.structured_content["responses"]) == ["a", "b"]


async def test_the_host_is_not_offered_to_tasks_or_workflow_steps() -> None:
    config, fleet = two_providers()
    mcp = build_server(config, store_factory=MemoryStore, provider_factory=fleet)
    host = Host()
    async with Client(mcp, sampling_callback=host, extensions=[TasksClient()]) as client:
        refused = await start_task(client, "consensus", {"prompt": "q", "host": True})
        assert refused.is_error and "not a task" in refused.content[0].text
    step = {"name": "s", "steps": [{"id": "c", "kind": "consensus", "with": {"prompt": "q", "host": True}}]}
    async with Client(build_server(config, store_factory=MemoryStore, provider_factory=fleet),
                      sampling_callback=host) as client:
        run = await client.call_tool("run_workflow", {"workflow": step, "wait_s": 5})
    assert host.asked == []
    assert run.structured_content["status"] == "failed" and "host" in run.structured_content["error"]
