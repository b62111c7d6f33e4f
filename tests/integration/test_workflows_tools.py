"""`tool` steps against real downstream MCP servers started over stdio by the server itself: the small test
server of `tests/downstream_mcp.py`, and `@modelcontextprotocol/server-everything` from npm (installed by
`scripts/install-everything.sh`; outside CI a missing install skips that test)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.store.memory import MemoryStore

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


def everything() -> Path:
    configured = os.environ.get("MCP_SERVER_EVERYTHING")
    path = Path(configured) if configured else REPO / ".cache" / "everything" / "bin" / "mcp-server-everything"
    if not path.exists():
        message = f"server-everything not found at {path}; run: bash scripts/install-everything.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


async def run(config: Config, definition: dict, **arguments: Any) -> dict:
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        with anyio.fail_after(60):
            result = await client.call_tool("run_workflow", {"workflow": definition, **arguments})
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_tool_steps_call_a_stdio_server_the_config_names() -> None:
    config = Config.model_validate({"mcp_servers": {"local": {
        "command": sys.executable, "args": [str(REPO / "tests" / "downstream_mcp.py")],
        "env": {"PYTHONPATH": str(REPO)}}}})
    out = await run(config, {"name": "stdio", "steps": [
        {"id": "sum", "kind": "tool", "with": {"server": "local", "tool": "add", "arguments": {"a": 2, "b": 3}}},
        {"id": "say", "kind": "tool", "depends_on": ["sum"],
         "with": {"server": "local", "tool": "echo", "arguments": {"text": "sum={{ steps.sum.output.structured.sum }}"}}},
        {"id": "bad", "kind": "tool", "on_error": "continue",
         "with": {"server": "nowhere", "tool": "echo", "arguments": {}}}],
        "outputs": {"said": "{{ steps.say.output.text }}", "bad": "{{ steps.bad.error }}"}})
    assert out["status"] == "completed"
    assert out["outputs"]["said"] == "sum=5.0"
    assert "unknown MCP server 'nowhere'; configured: local" in out["outputs"]["bad"]


async def test_tool_steps_call_server_everything() -> None:
    config = Config.model_validate({"mcp_servers": {"everything": {"command": str(everything())}}})
    out = await run(config, {"name": "everything", "steps": [
        {"id": "sum", "kind": "tool", "with": {"server": "everything", "tool": "get-sum", "arguments": {"a": 20, "b": 22}}},
        {"id": "echo", "kind": "tool", "depends_on": ["sum"],
         "with": {"server": "everything", "tool": "echo", "arguments": {"message": "{{ steps.sum.output.text }}"}}},
        {"id": "missing", "kind": "tool", "on_error": "continue",
         "with": {"server": "everything", "tool": "no-such-tool", "arguments": {}}}],
        "outputs": {"echo": "{{ steps.echo.output.text }}", "missing": "{{ steps.missing.error_class }}"}})
    assert out["status"] == "completed", out
    assert "42" in out["outputs"]["echo"] and out["outputs"]["echo"].startswith("Echo: ")
    assert out["outputs"]["missing"] == "tool_error"
