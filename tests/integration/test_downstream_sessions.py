"""Downstream MCP servers keep one pooled session each: a step's `timeout_s` measures the tool call, a crashed
server is reopened, the pool closes its processes on shutdown, and `mcp-servers list` shows each server's tools.
Driven through a real MCP client (`run_workflow`) against `tests/downstream_mcp.py` over stdio."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.store.memory import MemoryStore
from tests.serving import SERVER_COMMAND, server_env

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
SECRET = "9c4e2a7f1b3d5e8a0c6f2b4d"  # an env value of the downstream server: never in a log line


def local(**env: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(REPO / "tests" / "downstream_mcp.py")],
            "env": {"PYTHONPATH": str(REPO), **env}}


def tool(step_id: str, name: str, depends_on: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "tool", "depends_on": list(depends_on),
            "with": {"server": "local", "tool": name, "arguments": extra.pop("arguments", {})}, **extra}


async def run(client: Client, definition: dict) -> dict:
    with anyio.fail_after(60):
        result = await client.call_tool("run_workflow", {"workflow": definition, "wait_s": 50})
    assert not result.is_error, result.content[0].text
    return result.structured_content


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_steps_timeout_measures_the_tool_call_not_the_servers_start() -> None:
    # The server takes 1.5 s to start; each step allows its tool call 1 s.
    config = Config.model_validate({"mcp_servers": {"local": local(DOWNSTREAM_STARTUP_DELAY_S="1.5")}})
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        started = time.monotonic()
        first = await run(client, {"name": "slow-start", "steps": [
            tool("hello", "echo", arguments={"text": "hi"}, timeout_s=1), tool("who", "pid", ("hello",), timeout_s=1)],
            "outputs": {"said": "{{ steps.hello.output.text }}", "pid": "{{ steps.who.output.text }}"}})
        assert first["status"] == "completed", first
        assert time.monotonic() - started >= 1.5  # the start happened, outside the steps' 1 s
        assert first["outputs"]["said"] == "hi"
        second = await run(client, {"name": "again", "steps": [tool("who", "pid", timeout_s=1)],
                                    "outputs": {"pid": "{{ steps.who.output.text }}"}})
        assert second["status"] == "completed" and second["outputs"]["pid"] == first["outputs"]["pid"]  # pooled
        slow = await run(client, {"name": "slow-call", "steps": [
            tool("nap", "sleep", arguments={"seconds": 3}, timeout_s=0.5, on_error="continue")],
            "outputs": {"error": "{{ steps.nap.error_class }}"}})
        assert slow["outputs"]["error"] == "timeout"  # the call itself is still bounded
        pid = int(first["outputs"]["pid"])
        assert alive(pid)
    assert not alive(pid)  # shutdown closed the session and stopped the process


async def test_a_crashed_downstream_server_is_reopened() -> None:
    config = Config.model_validate({"mcp_servers": {"local": local()}})
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        before = await run(client, {"name": "before", "steps": [tool("who", "pid")],
                                    "outputs": {"pid": "{{ steps.who.output.text }}"}})
        crashed = await run(client, {"name": "crash", "steps": [tool("down", "crash", on_error="continue")],
                                     "outputs": {"error": "{{ steps.down.error_class }}"}})
        assert crashed["outputs"]["error"] == "connection"
        after = await run(client, {"name": "after", "steps": [tool("who", "pid"), tool("sum", "add", ("who",),
                                                                                           arguments={"a": 1, "b": 2})],
                                   "outputs": {"pid": "{{ steps.who.output.text }}",
                                               "sum": "{{ steps.sum.output.structured.sum }}"}})
        assert after["status"] == "completed", after
        assert after["outputs"]["pid"] != before["outputs"]["pid"] and after["outputs"]["sum"] == 3.0
        assert not alive(int(before["outputs"]["pid"]))


async def test_downstream_stderr_and_errors_are_logged_redacted(caplog: pytest.LogCaptureFixture) -> None:
    config = Config.model_validate({"mcp_servers": {"local": local(DOWNSTREAM_SECRET=SECRET)}})
    # On the logger itself: an earlier in-process test may have left the "server" logger above DEBUG.
    caplog.set_level(logging.DEBUG, logger="server.workflows.downstream")
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        out = await run(client, {"name": "leaky", "steps": [
            tool("say", "say_env", arguments={"name": "DOWNSTREAM_SECRET"}, on_error="continue")],
            "outputs": {"error": "{{ steps.say.error }}"}})
    assert SECRET not in str(out) and "[redacted]" in out["outputs"]["error"]
    lines = [r.getMessage() for r in caplog.records if r.name == "server.workflows.downstream"]
    assert any("starting with secret [redacted]" in line for line in lines), lines  # stderr reached the log …
    assert any("DOWNSTREAM_SECRET is [redacted]" in line for line in lines), lines
    assert not any(SECRET in line for line in lines)  # … redacted


def test_mcp_servers_list_shows_each_servers_tools(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[mcp_servers.local]\ncommand = "{sys.executable}"\n'
                    f'args = ["{REPO / "tests" / "downstream_mcp.py"}"]\n'
                    f'env = {{ PYTHONPATH = "{REPO}", DOWNSTREAM_SECRET = "{SECRET}" }}\n'
                    '[mcp_servers.gone]\ncommand = "/nonexistent/mcp-server"\n')
    out = subprocess.run([*SERVER_COMMAND, "--config", str(path), "mcp-servers", "list"], env=server_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr  # one server could not be listed
    assert "local (stdio:" in out.stdout and "  echo: Return the text." in out.stdout
    assert "  add: Add two numbers." in out.stdout
    assert "gone (stdio: /nonexistent/mcp-server)" in out.stdout and "could not reach" in out.stdout
    assert SECRET not in out.stdout + out.stderr
