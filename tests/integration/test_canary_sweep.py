"""The canary sweep: secrets planted in every place a configuration can hold one (a provider key, a downstream
server's env value and HTTP header) and echoed back by hostile peers (an upstream quoting the key in an error,
a downstream server writing its env to stderr and quoting the header in a JSON-RPC error, a tool returning the
headers it got, an upstream quoting the key whole, partly and base64-encoded in a 200 reply) are searched for,
whole and in their partial and base64 forms, in the server's stderr at DEBUG (logs of every level, the console
span exporter's spans, downstream stderr), in every result and in every stored row: 0 hits."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from server.simulator import Behaviour, Upstream
from tests.conftest import provider_entry
from tests.secure_serving import CANARY, ServerProcess, make_key, mcp_client, running_server, write_toml

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
ENV_SECRET = "e1b7c3a9f5d2048b6c1e9a7f"     # [mcp_servers.local] env
HEADER_SECRET = "h4d2f8b6a0c9e7153b8d4f2a"  # [mcp_servers.remote] headers
ECHOED_KEY = "5d1e8f3a9b2c7e4f6a0d1b3c"     # a provider key of no recognisable shape, echoed by its upstream
TRACING = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}


def forms(secret: str) -> dict[str, str]:
    """What must not be found: the secret, a 12-character run of it, its base64 forms (the encoding's core)."""
    encoded = base64.b64encode(secret.encode()).decode()
    return {"whole": secret, "start": secret[:12], "end": secret[-12:], "base64": encoded[:-4],
            "base64 shifted": base64.b64encode(b"x" + secret.encode()).decode()[4:-4]}


def sweep(folder: Path, results: list[Any], secrets: list[str]) -> list[str]:
    """Every hit of any form of ``secrets`` in the files under ``folder`` (logs, databases, WAL) and in ``results``;
    the config file, where the secrets were planted, aside."""
    (folder / "results.json").write_text(json.dumps(results, default=str))
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".toml":
            data = path.read_bytes()
            hits += [f"{path.name}: {secret[:6]}… {name}" for secret in secrets
                     for name, form in forms(secret).items() if form.encode() in data]
    return hits


def call_text(result: Any) -> str:
    return result.content[0].text if result.content else ""


@asynccontextmanager
async def verbose_server(tmp_path: Path, config: Path, database: Path, key: str,
                         env: dict[str, str]) -> AsyncIterator[tuple[ServerProcess, Client]]:
    """The server at DEBUG with the console span exporter (stderr in ``server.log``), and a client with ``key``."""
    with running_server(config, database, tmp_path / "server.log", extra=("--log-level", "DEBUG"),
                        env={**env, **TRACING}) as server, anyio.fail_after(90):
        async with mcp_client(server.url, key) as client:
            yield server, client


async def test_no_planted_secret_leaves_by_any_exit(tmp_path: Path, upstream: Upstream, downstream_url: str) -> None:
    upstream.script("leaky-sim", Behaviour(status=401, error_message=f"Incorrect API key provided: {CANARY}"),
                    repeat=True)
    config = write_toml(
        tmp_path / "c.toml",
        [provider_entry(upstream, "leaky", model="leaky-sim", priority=1, api_key_env="CANARY_PROVIDER_KEY"),
         provider_entry(upstream, "fine", model="fine-sim", priority=2)],
        auth={"enabled": True},
        mcp_servers__local={"command": sys.executable, "args": [str(REPO / "tests" / "downstream_mcp.py")],
                            "env": {"PYTHONPATH": str(REPO), "DOWNSTREAM_SECRET": ENV_SECRET}},
        mcp_servers__remote={"url": downstream_url, "headers": {"X-Api-Key": HEADER_SECRET}})
    database = tmp_path / "s.db"
    admin = make_key(config, database, "sweep-admin", role="admin")
    steps = [
        {"id": "env", "kind": "tool", "on_error": "continue",
         "with": {"server": "local", "tool": "say_env", "arguments": {"name": "DOWNSTREAM_SECRET"}}},
        {"id": "quoted", "kind": "tool", "on_error": "continue",
         "with": {"server": "remote", "tool": "refuse_quoting_header", "arguments": {"name": "x-api-key"}}},
        {"id": "headers", "kind": "tool", "with": {"server": "remote", "tool": "headers", "arguments": {}}},
    ]
    workflow = {"name": "sweep", "steps": steps,
                "outputs": {"env": "{{ steps.env.error }}", "quoted": "{{ steps.quoted.error }}",
                            "headers": "{{ steps.headers.output.text }}"}}
    results: list[Any] = []
    async with verbose_server(tmp_path, config, database, admin, {"CANARY_PROVIDER_KEY": CANARY}) as (server, client):
        answered = await client.call_tool("orchestrate", {"prompt": "hello"})
        assert not answered.is_error and answered.structured_content["provider"] == "fine"
        ran = await client.call_tool("run_workflow", {"workflow": workflow, "wait_s": 60})
        assert not ran.is_error, call_text(ran)
        run = ran.structured_content
        assert run["status"] == "completed", run
        status = await client.call_tool("workflow_run", {"run_id": run["run_id"]})
        results += [r.model_dump(mode="json") for r in (answered, ran, status)]
        for tool in ("list_providers", "monitor_operations"):
            results.append((await client.call_tool(tool, {})).model_dump(mode="json"))
    outputs = run["outputs"]
    assert "[redacted]" in outputs["env"] and "[redacted]" in outputs["quoted"]
    assert "x-api-key" in outputs["headers"].lower()  # the header was sent; its value is not shown
    log = server.log.read_text()
    assert " DEBUG " in log  # the sweep read logs at their most verbose
    assert "MCP server 'local': starting with secret [redacted]" in log  # downstream stderr went through the log
    assert '"name": "MCP send tools/call refuse_quoting_header"' in log  # the SDK's client span was exported …
    assert "refused: x-api-key [redacted] is not accepted here" in log  # … its status description redacted
    hits = sweep(tmp_path, results, [CANARY, ENV_SECRET, HEADER_SECRET, admin.split("_", 2)[-1]])
    assert not hits, hits


async def test_a_key_echoed_in_a_200_reply_reaches_no_exit(tmp_path: Path, upstream: Upstream) -> None:
    encoded = base64.b64encode(ECHOED_KEY.encode()).decode()
    upstream.script("echo-sim", Behaviour(text=f"Your key is {ECHOED_KEY}; masked {ECHOED_KEY[:18]}******; "
                                               f"encoded {encoded}."), repeat=True)
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "echoer", model="echo-sim",
                                                             api_key_env="ECHOED_PROVIDER_KEY")],
                        auth={"enabled": True})
    database = tmp_path / "s.db"
    key = make_key(config, database, "echo")
    results: list[Any] = []
    async with verbose_server(tmp_path, config, database, key, {"ECHOED_PROVIDER_KEY": ECHOED_KEY}) as (_, client):
        first = await client.call_tool("orchestrate", {"prompt": "what is my key?"})
        assert not first.is_error, call_text(first)
        again = await client.call_tool("orchestrate", {
            "prompt": "and again?", "continuation_id": first.structured_content["continuation_id"]})
        results += [first.model_dump(mode="json"), again.model_dump(mode="json")]
    # The upstream did echo the key in all three forms, and each was masked (not dropped with the answer).
    assert call_text(first).count("[redacted]") == 3 and "Your key is" in call_text(first), call_text(first)
    hits = sweep(tmp_path, results, [ECHOED_KEY])
    assert not hits, hits
