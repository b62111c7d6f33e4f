"""Simple mode: the same tools over wire-protocol providers and the JSON-file store; nothing imported from
outside ``mcp``'s dependency set (checked on a real stdio server process)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

import tools
from server.config import Config
from server.errors import ConfigError
from server.app.simple import (
    FullModeRequired,
    build_simple_server,
    open_simple_store,
    simple_mode_requested,
    state_path,
)
from server.simulator import Behaviour, Upstream
from tests.conftest import config_for, provider_entry
from tests.import_audit import BOOTSTRAP, OPTIONAL_IMPORTS, foreign_modules, read_audit, requirement_closure
from tests.serving import server_env

pytestmark = pytest.mark.anyio
GREET = {"name": "greet", "description": "Greet someone by name.", "template": "Hello {{ who }}!"}


@pytest.fixture
def config(upstream: Upstream) -> Config:
    return config_for(provider_entry(upstream, "gpt", kind="openai", model="gpt-sim", priority=1),
                      provider_entry(upstream, "claude", kind="anthropic", model="claude-sim", priority=2))


WORKFLOW = {"name": "welcome", "steps": [
    {"id": "greet", "kind": "pattern", "with": {"pattern": "greet", "variables": {"who": "{{ inputs.who }}"}}},
    {"id": "say", "kind": "orchestrate", "depends_on": ["greet"], "with": {"prompt": "{{ steps.greet.output.text }}"}}],
    "outputs": {"said": "{{ steps.say.output.text }}"}}


async def call(client: Client, tool: str, **arguments: Any) -> dict:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_simple_server_orchestrates_and_keeps_patterns_across_restarts(
        config: Config, tmp_path: Path, upstream: Upstream, mode: str) -> None:
    path = tmp_path / "state.json"
    async with Client(build_simple_server(config, store_factory=lambda: open_simple_store(path)), mode=mode) as c:
        assert {t.name for t in (await c.list_tools()).tools} == tools.SIMPLE_MODE_TOOLS
        out = await call(c, "orchestrate", prompt="hi there")
        assert (out["provider"], out["text"]) == ("gpt", "[gpt-sim] hi there")
        upstream.script("gpt-sim", Behaviour(text="yes"))
        upstream.script("claude-sim", Behaviour(text="Yes."))
        agreed = await call(c, "consensus", prompt="pick one", choices=["yes", "no"], method="vote")
        assert (agreed["status"], agreed["answer"]) == ("consensus", "yes")
        assert {r["provider"] for r in agreed["responses"]} == {"gpt", "claude"}
        assert (await call(c, "register_pattern", **GREET))["version"] == 1
        assert (await call(c, "monitor_operations", window="15m"))["groups"]
        chart = await c.call_tool("monitor_operations", {"include_chart": True})
        assert chart.is_error and "needs full mode" in chart.content[0].text
        assert (await call(c, "save_workflow", definition=WORKFLOW))["version"] == 1
    assert {r.wire for r in upstream.requests} == {"openai", "anthropic"}
    # httpx2's own user agent: the wire-protocol providers, not the vendor SDKs, made the calls
    assert all(r.headers["user-agent"].startswith("python-httpx") for r in upstream.requests)
    async with Client(build_simple_server(config, store_factory=lambda: open_simple_store(path)), mode=mode) as c:
        prompt = await c.get_prompt("greet", {"who": "Ada"})
        assert prompt.messages[0].content.text == "Hello Ada!"
        out = await call(c, "orchestrate", pattern="greet", variables={"who": "Bob"})
        assert out["text"] == "[gpt-sim] Hello Bob!"
        run = await call(c, "run_workflow", workflow="welcome", inputs={"who": "Cy"})  # saved before the restart
        assert (run["status"], run["outputs"]) == ("completed", {"said": "[gpt-sim] Hello Cy!"})


async def test_a_tool_left_out_of_simple_mode_says_it_needs_full_mode(config: Config, tmp_path: Path) -> None:
    mcp = build_simple_server(config, store_factory=lambda: open_simple_store(tmp_path / "s.json"),
                              full_mode_only=["list_providers"])  # as for any full-mode-only tool
    async with Client(mcp) as client:
        result = await client.call_tool("list_providers", {})
    assert result.is_error
    assert result.content[0].text == str(FullModeRequired("the tool list_providers", "not offered in simple mode"))
    assert "needs full mode" in result.content[0].text and "without --simple" in result.content[0].text


@pytest.mark.parametrize(("flag", "environ", "expected"), [
    (True, {}, True), (False, {}, False), (False, {"AI_ORCHESTRATION_SIMPLE": "1"}, True),
    (False, {"AI_ORCHESTRATION_SIMPLE": "true"}, True), (False, {"AI_ORCHESTRATION_SIMPLE": "0"}, False),
])
def test_simple_mode_comes_from_the_flag_or_the_environment(flag: bool, environ: Mapping[str, str],
                                                             expected: bool) -> None:
    assert simple_mode_requested(flag, environ) is expected


def test_the_environment_variable_switches_the_command_to_simple_mode(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "server", "check", "--database", str(tmp_path / "s.db")],
                          capture_output=True, text=True, timeout=60,
                          env={**server_env(), "AI_ORCHESTRATION_SIMPLE": "1"})
    assert done.returncode == 0, done.stderr
    assert "mode: simple" in done.stdout and f"state file: {tmp_path / 's.json'}" in done.stdout


def test_an_unclear_simple_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AI_ORCHESTRATION_SIMPLE: must be 1 or 0"):
        simple_mode_requested(False, {"AI_ORCHESTRATION_SIMPLE": "maybe"})


def test_the_state_file_sits_where_the_database_would(tmp_path: Path) -> None:
    assert state_path(Config(), {"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "ai-orchestration-mcp" / "state.json"
    assert state_path(Config(), {}, str(tmp_path / "x.db")) == tmp_path / "x.json"


def test_an_unreadable_state_file_stops_the_server_with_a_clear_error_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{ half written")
    done = subprocess.run([sys.executable, "-m", "server", "--simple", "--database", str(tmp_path / "state.db")],
                          input="", capture_output=True, text=True, env=server_env(), timeout=60)
    assert done.returncode == 2
    assert f"the state file {path} is not valid JSON" in done.stderr
    assert done.stdout == "" and path.read_text() == "{ half written"


async def test_simple_stdio_server_imports_nothing_outside_the_mcp_dependency_set(
        tmp_path: Path, upstream: Upstream) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[providers]]\nname = "gpt"\nkind = "openai"\nmodel = "gpt-sim"\npriority = 1\n'
        f'base_url = "{upstream.openai_base_url}"\n'
        f'[[providers]]\nname = "claude"\nkind = "anthropic"\nmodel = "claude-sim"\nbase_url = "{upstream.url}"\n')
    audit = tmp_path / "imports.json"
    params = StdioServerParameters(
        command=sys.executable, args=["-c", BOOTSTRAP, "--simple", "--config", str(config), "--database",
                                      str(tmp_path / "state.db")],
        env={**server_env(), "IMPORT_AUDIT_FILE": str(audit)})
    with anyio.fail_after(60):
        async with Client(params, mode="legacy") as client:
            assert {t.name for t in (await client.list_tools()).tools} == tools.SIMPLE_MODE_TOOLS
            assert (await call(client, "orchestrate", prompt="x"))["provider"] == "gpt"
            assert (await call(client, "consensus", prompt="y", method="similarity"))["responses"]
            assert (await call(client, "register_pattern", **GREET))["version"] == 1
            assert (await client.read_resource("knowledge://patterns/greet")).contents
            run = await call(client, "run_workflow", workflow=WORKFLOW, inputs={"who": "Di"})
            assert run["status"] == "completed"
            assert (await call(client, "monitor_operations", group_by="workflow"))["groups"]
    assert audit.exists()  # the client waits for the process to exit; the process writes the audit at exit
    modules = read_audit(audit)
    assert "server.pool.providers.openai_wire" in modules and "server.store.jsonfile" in modules
    assert "server.workflows.interpreter" in modules  # the workflow path was audited too
    allowed = requirement_closure("mcp") | {"ai-orchestration-mcp"} | set(OPTIONAL_IMPORTS)
    assert {"httpx2", "pydantic", "anyio"} <= allowed and "openai" not in allowed
    assert foreign_modules(modules, allowed) == {}
    assert json.loads((tmp_path / "state.json").read_text())["patterns"]["greet"][0]["template"] == "Hello {{ who }}!"
