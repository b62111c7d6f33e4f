"""Selectable tools over stdio, as a user starts the server: ``--tools``, ``AI_ORCHESTRATION_TOOLS`` and
``[server] tools`` (in that order of precedence); an unknown name stops the start with the valid ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.serving import SERVER_COMMAND, server_env

pytestmark = pytest.mark.anyio


async def listed_and_refused(args: list[str], env: dict[str, str]) -> tuple[list[str], str]:
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=[*SERVER_COMMAND[1:], *args], env=env)
    async with Client(params, mode="legacy") as client:
        names = [t.name for t in (await client.list_tools()).tools]
        refused = await client.call_tool("monitor_operations", {})
    assert refused.is_error
    return names, refused.content[0].text


async def test_tools_flag_lists_exactly_those_tools_and_refuses_a_call_to_another(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\ntools = ["list_providers"]\n')
    base = ["--config", str(config), "--database", str(tmp_path / "s.db")]
    names, refused = await listed_and_refused([*base, "--tools", "orchestrate,consensus"], server_env())
    assert names == ["orchestrate", "consensus"]
    assert "monitor_operations is not enabled on this server (enabled: orchestrate, consensus)" in refused
    from_env, _ = await listed_and_refused(base, {**server_env(), "AI_ORCHESTRATION_TOOLS": "consensus"})
    assert from_env == ["consensus"]
    from_config, _ = await listed_and_refused(base, server_env())
    assert from_config == ["list_providers"]


def test_an_unknown_tool_name_stops_the_start_with_the_valid_ones(tmp_path: Path) -> None:
    done = subprocess.run([*SERVER_COMMAND, "--tools", "orchestrate,consenus", "--database", str(tmp_path / "s.db")],
                          input="", capture_output=True, text=True, env=server_env(), timeout=60)
    assert done.returncode == 2
    assert "--tools: unknown tool(s) consenus; valid: orchestrate, consensus, monitor_operations" in done.stderr
