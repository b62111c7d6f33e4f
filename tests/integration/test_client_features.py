"""The client's own features through a real client over Streamable HTTP with API keys: the host's model as a
consensus member answered by the client's sampling handler (both protocol eras), and an approval answered
through the client's elicitation handler by a principal allowed to decide it (the starter is not asked when
the step says ``not_starter``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageRequestParams, CreateMessageResult, ElicitResult, TextContent

from server.simulator import Upstream
from tests.conftest import provider_entry
from tests.secure_serving import make_key, running_server, write_toml

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def client(url: str, token: str, mode: str, **callbacks: Any) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **callbacks) as connected:
            yield connected


def with_auth(tmp_path: Path, upstream: Upstream) -> tuple[Path, Path, str]:
    """A config with one upstream provider and API keys on, its database, and a user key (alice's)."""
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True, "key_cache_s": 0})
    database = tmp_path / "state.db"
    return config, database, make_key(config, database, "alice")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_consensus_includes_the_hosts_model_answered_by_the_sampling_handler(
        tmp_path: Path, upstream: Upstream, mode: str) -> None:
    config, database, alice = with_auth(tmp_path, upstream)
    asked: list[CreateMessageRequestParams] = []

    async def sampling(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="Blue, mostly."),
                                   model="host-llm")

    with running_server(config, database, tmp_path / "server.log") as server:
        async with client(server.url, alice, mode, sampling_callback=sampling) as c:
            with anyio.fail_after(60):
                result = await c.call_tool("consensus", {"prompt": "What colour is the sky?", "host": True,
                                                         "max_providers": 2})
    assert not result.is_error, result.content
    responses = {r["provider"]: r for r in result.structured_content["responses"]}
    assert set(responses) == {"primary", "host:sampling"}
    assert (responses["host:sampling"]["status"], responses["host:sampling"]["answer"],
            responses["host:sampling"]["model"]) == ("ok", "Blue, mostly.", "host-llm")
    assert len(asked) == 1 and asked[0].messages[0].content.text == "What colour is the sky?"


GATE = {"name": "gate", "steps": [{"id": "review", "kind": "approval",
                                   "with": {"timeout_s": 600, "approvers": ["user"]}}]}


async def test_an_approval_is_answered_through_elicitation_by_an_allowed_principal(tmp_path: Path,
                                                                                   upstream: Upstream) -> None:
    config, database, alice = with_auth(tmp_path, upstream)
    forms: list[str] = []

    async def person(context: Any, params: Any) -> ElicitResult:
        forms.append(params.message)
        return ElicitResult(action="accept", content={"decision": "approve", "comment": "checked"})

    strict = {**GATE, "steps": [{**GATE["steps"][0], "with": {**GATE["steps"][0]["with"], "not_starter": True}}]}
    with running_server(config, database, tmp_path / "server.log") as server:
        async with client(server.url, alice, "legacy", elicitation_callback=person) as c:
            with anyio.fail_after(60):
                kept = await c.call_tool("run_workflow", {"workflow": strict, "wait_s": 2})
                assert kept.structured_content["status"] == "waiting" and forms == []  # the starter is not asked
                done = await c.call_tool("run_workflow", {"workflow": GATE, "wait_s": 45})
    assert done.structured_content["status"] == "completed", done.structured_content
    decision = done.structured_content["steps"][0]["output"]
    assert decision["decision"] == "approved" and decision["comment"] == "checked"
    assert decision["by"].startswith("key:") and decision["role"] == "user"  # the authenticated principal
    assert len(forms) == 1 and "review" in forms[0]
