"""Replicas of the server as real processes on one PostgreSQL database, for the team-deployment tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from tests.serving import free_port, server_env, wait_for_port


CALLER = "{caller}"
"""In a replica's config text: replaced, at each start, by :attr:`Replica.caller` (see :func:`replica_config`)."""


class Replica:
    """``python -m server --transport http --database URL --replica-id ID`` on a free loopback port; restartable
    under the same id and port."""

    def __init__(self, folder: Path, database_url: str, replica_id: str, config_text: str,
                 allowed_hosts: str = "") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.id = replica_id
        self.allowed_hosts = allowed_hosts
        self.database_url = database_url
        self.port = free_port()
        self.config = folder / f"{replica_id}.toml"
        self.config_text = config_text
        self.log = folder / f"{replica_id}.log"
        self.process: subprocess.Popen | None = None
        self.kills = 0
        self._write_config()

    @property
    def caller(self) -> str:
        """Which process of this replica is (or was last) running: ``ID.N``, N the kills before its start."""
        return f"{self.id}.{self.kills}"

    def _write_config(self) -> None:
        self.config.write_text(self.config_text.replace(CALLER, self.caller))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "server", "--transport", "http", "--port", str(self.port), "--config",
                str(self.config), "--database", self.database_url, "--replica-id", self.id,
                "--log-level", "WARNING"] + (["--allowed-hosts", self.allowed_hosts] if self.allowed_hosts else [])

    def start(self, *, wait: bool = True) -> Replica:
        self._write_config()
        with self.log.open("a") as log:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=log, env=server_env())
        if wait:
            wait_for_port(self.port, self.process, timeout_s=60)
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def replica_config(downstream_url: str | None = None, *, extra: str = "", named_calls: bool = False) -> str:
    """A config for test replicas: quick takeover, a short wait for a held id, the downstream MCP server
    (``named_calls``: every call to it carries an ``X-Caller`` header naming the replica's process,
    :attr:`Replica.caller`, which :func:`work_calls` reports)."""
    text = "[workflows]\ntakeover_interval_s = 0.3\nreplica_wait_s = 1.0\n"
    if downstream_url:
        text += f'\n[mcp_servers.down]\nurl = "{downstream_url}"\n'
        if named_calls:
            text += f'headers = {{ "X-Caller" = "{CALLER}" }}\n'
    return text + extra


async def call(url: str, tool: str, timeout_s: float = 30, **arguments: Any) -> dict:
    """One tool call through a fresh sessionless client; fails on a tool error."""
    with anyio.fail_after(timeout_s):
        async with Client(url) as client:
            result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def _work_report(downstream_url: str, tool: str, run: str) -> dict[str, list]:
    with anyio.fail_after(30):
        async with Client(downstream_url) as client:
            result = await client.call_tool(tool, {"run": run})
    return json.loads(result.content[0].text)


async def work_log(downstream_url: str, run: str) -> dict[str, list[float]]:
    """When each `work` step of ``run`` started, per step (the downstream server's log)."""
    return await _work_report(downstream_url, "work_log", run)


async def work_calls(downstream_url: str, run: str) -> dict[str, list[tuple[float, str]]]:
    """Every `work` call of ``run``, per step: (start time, the calling :attr:`Replica.caller`) in call order (the
    caller is empty unless the replica's config has ``named_calls``)."""
    calls = await _work_report(downstream_url, "work_calls", run)
    return {step: [(start, caller) for start, caller in executions] for step, executions in calls.items()}


def work_steps(run: str, count: int, seconds: dict[int, list[float]] | list[float] | None = None, *,
               prefix: str = "s") -> dict:
    """An inline definition of ``count`` chained `work` steps on the downstream server; step n sleeps
    ``seconds[n][k]`` on its k-th call (``seconds`` a list: the same for every step; default no sleep)."""
    steps = []
    for n in range(count):
        durations = seconds if isinstance(seconds, list) else (seconds or {}).get(n, [0.0])
        step = {"id": f"{prefix}{n}", "kind": "tool",
                "with": {"server": "down", "tool": "work",
                         "arguments": {"run": run, "step": f"{prefix}{n}", "text": str(n), "seconds": durations}}}
        if n:
            step["depends_on"] = [f"{prefix}{n - 1}"]
        steps.append(step)
    return {"name": "chain", "steps": steps,
            "outputs": {"last": f"{{{{ steps.{prefix}{count - 1}.output.text }}}}"}}


def nginx_block(replicas: list[Replica]) -> str:
    """The README's nginx configuration (the inside of ``http {}``) for ``replicas``: sessionless requests round
    robin over every replica; a handshake-era session goes to the replica its ``Mcp-Session-Id`` names."""
    groups = "\n".join(f"  upstream mcp_{r.id} {{ server 127.0.0.1:{r.port}; }}" for r in replicas)
    routes = "\n".join(f"    {r.id} mcp_{r.id};" for r in replicas)
    servers = "\n".join(f"    server 127.0.0.1:{r.port};" for r in replicas)
    return f"""
  log_format upstreams '$upstream_addr $status $http_mcp_session_id';
  map $http_mcp_session_id $mcp_replica {{
    "~^(?<replica>[A-Za-z0-9][A-Za-z0-9_.-]*)-[0-9a-f]{{32}}$" $replica;
    default "";
  }}
  map $mcp_replica $mcp_upstream {{
{routes}
    default mcp_any;
  }}
  upstream mcp_any {{
{servers}
  }}
{groups}
  server {{
    listen 127.0.0.1:{{port}};
    access_log {{folder}}/upstreams.log upstreams;
    location /mcp {{
      proxy_pass http://$mcp_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_read_timeout 1h;
    }}
  }}"""
