"""Patterns over real transports: the server as a stdio subprocess (both eras) and the MCP Inspector CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import PromptListChangedNotification

from tests.serving import SERVER_COMMAND, server_env
from tests.integration.test_inspector import console_script, inspector, run_inspector  # noqa: F401 - fixtures


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_server_registers_renders_and_persists_patterns(config_file: Path, tmp_path: Path,
                                                                    mode: str) -> None:
    received: list[Any] = []

    async def handler(message: Any) -> None:
        received.append(message)

    params = StdioServerParameters(command=SERVER_COMMAND[0], args=[
        *SERVER_COMMAND[1:], "--config", str(config_file), "--database", str(tmp_path / "p.db")], env=server_env())
    with anyio.fail_after(60):
        async with Client(params, mode=mode, message_handler=handler) as client:
            out = await client.call_tool("register_pattern", {
                "name": "ticket", "description": "Draft a support reply", "template": "Reply to: {{ ticket }}"})
            assert out.structured_content["version"] == 1
            assert "ticket" in {p.name for p in (await client.list_prompts()).prompts}
            reply = await client.get_prompt("ticket", {"ticket": "login fails"})
            assert reply.messages[0].content.text == "Reply to: login fails"
            if mode == "legacy":
                assert any(isinstance(m, PromptListChangedNotification) for m in received)
        async with Client(params, mode=mode) as client:  # a new process on the same database
            assert "ticket" in {p.name for p in (await client.list_prompts()).prompts}


def test_inspector_lists_gets_and_reads_patterns(inspector: Path, console_script: Path,  # noqa: F811
                                                 config_file: Path, tmp_path: Path) -> None:
    database = tmp_path / "inspector.db"
    listed = run_inspector(inspector, console_script, config_file, database, "--method", "prompts/list")
    prompts = {p["name"]: p for p in listed["prompts"]}
    assert {"code-review", "summarize", "threat-model"} <= set(prompts)
    assert {a["name"]: a["required"] for a in prompts["summarize"]["arguments"]} == {
        "text": True, "audience": False, "length": False}
    got = run_inspector(inspector, console_script, config_file, database, "--method", "prompts/get",
                        "--prompt-name", "summarize", "--prompt-args", "text=The build is green.")
    assert "The build is green." in got["messages"][0]["content"]["text"]
    read = run_inspector(inspector, console_script, config_file, database, "--method", "resources/read",
                         "--uri", "knowledge://exports/copilot/secure-coding")
    assert read["contents"][0]["text"].startswith('---\napplyTo: "**/*.py,')
