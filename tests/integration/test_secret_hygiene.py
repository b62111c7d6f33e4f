"""Secrets never leave the process: a planted provider key that the upstream echoes, presented tokens, keys and
secret-bearing argument values, over a real server process (the session-wide sweep in conftest.py then
searches every log line, database row and dumped result of the run for them)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from server.simulator import Behaviour, Upstream
from tests.conftest import provider_entry
from tests.secure_serving import CANARY, make_key, mcp_client, running_server, write_toml
from tests.integration.test_security_http import post

SECRET_ARGUMENTS = [
    {"prompt": "x", "max_tokens": CANARY},
    {"prompt": "x", "strategy": CANARY},
    {"prompt": "x", "providers": [CANARY]},
    {"prompt": "x", "continuation_id": CANARY},
    {"prompt": "x", "temperature": CANARY},
    {"pattern": CANARY, "variables": {"k": CANARY}},
]


@pytest.mark.anyio
async def test_planted_secrets_stay_out_of_logs_rows_and_results(tmp_path: Path, upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [
        provider_entry(upstream, "leaky", model="leaky-sim", priority=1, api_key_env="CANARY_PROVIDER_KEY"),
        provider_entry(upstream, "fine", model="fine-sim", priority=2)], auth={"enabled": True})
    # The upstream quotes the provider key in its error body, as some vendors do.
    upstream.script("leaky-sim", Behaviour(status=401, error_message=f"Incorrect API key provided: {CANARY}"),
                    repeat=True)
    database = tmp_path / "s.db"
    key = make_key(config, database, "hygiene")
    results = []
    with running_server(config, database, tmp_path / "server.log", extra=("--log-level", "DEBUG"),
                        env={"CANARY_PROVIDER_KEY": CANARY}) as server:
        with anyio.fail_after(60):
            async with mcp_client(server.url, key) as client:
                answered = await client.call_tool("orchestrate", {"prompt": "hello"})
                results.append(answered.model_dump(mode="json"))
                assert not answered.is_error and answered.structured_content["provider"] == "fine"
                assert answered.structured_content["attempts"][0]["error_class"] == "authentication"
                for arguments in SECRET_ARGUMENTS:
                    refused = await client.call_tool("orchestrate", arguments)
                    results.append(refused.model_dump(mode="json"))
                    assert refused.is_error
                window = await client.call_tool("monitor_operations", {"window": CANARY[:16]})
                results.append(window.model_dump(mode="json"))
                for tool in ("list_providers", "monitor_operations"):
                    results.append((await client.call_tool(tool, {})).model_dump(mode="json"))
            for token in (CANARY, f"aiom_{CANARY[10:22]}_{CANARY}"):
                refused_http = await anyio.to_thread.run_sync(lambda t=token: post(server.url, t))
                assert refused_http.status_code == 401 and CANARY not in refused_http.text
    dumped = json.dumps(results)
    (tmp_path / "results.json").write_text(dumped)
    assert CANARY not in dumped and CANARY[:16] not in dumped
    assert "[redacted]" in dumped
    log = (tmp_path / "server.log").read_text()
    assert CANARY not in log and key not in log
    assert "DEBUG" in log  # the sweep read a log at its most verbose
