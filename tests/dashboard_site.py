"""A server for the dashboard tests: HTTP with auth, a user and an admin key, recorded calls through a failing
and a working provider (so an incident opens), a saved workflow with an approval step, an agent from the
configuration and one registered twice (version 2); and the helpers that log in, read CSRF tokens and start runs
that wait for approval."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

from server.simulator import Upstream
from tests.conftest import provider_entry
from tests.secure_serving import CREATED_KEYS, ServerProcess, make_key, mcp_client, running_server, write_toml
from tests.services import wait_until

SESSION_SECRET = "dashboard-session-secret-" + secrets.token_hex(20)
CREATED_KEYS.append(SESSION_SECRET)  # swept like the keys: it must reach no log line, file or page
GATED = {"name": "gated", "steps": [
    {"id": "draft", "kind": "orchestrate", "with": {"prompt": "draft the notes"}},
    {"id": "review", "kind": "orchestrate", "with": {"prompt": "review the notes"}},
    {"id": "gate", "kind": "approval", "depends_on": ["draft", "review"], "with": {"message": "Publish?"}},
    {"id": "publish", "kind": "orchestrate", "depends_on": ["gate"], "with": {"prompt": "publish"}}],
    "outputs": {"published": "{{ steps.publish.output.text }}"}}
REFRESH_S = 2
CONFIGURED_AGENT = {"description": "Reviews release notes", "capabilities": ["review"], "providers": ["steady"]}
REGISTERED_AGENT = {"description": "Summarises runs and incidents", "capabilities": ["summary"]}
OPEN_CLIENTS: list[httpx2.Client] = []  # closed after each test (close_clients)


@dataclass
class Site:
    base: str
    user: str
    admin: str
    config: Path
    database: Path
    server: ServerProcess

    @property
    def mcp(self) -> str:
        return self.base + "/mcp"


@contextmanager
def dashboard_site(tmp: Path) -> Iterator[Site]:
    """The running server, seeded; the environment is isolated like the tests' (``tests/conftest.py``)."""
    with Upstream() as upstream:
        config = write_toml(
            tmp / "config.toml",
            [provider_entry(upstream, "flaky", model="fail-503", priority=1),
             provider_entry(upstream, "steady", model="gpt-sim", priority=2, input_cost_per_mtok=3.0,
                            output_cost_per_mtok=15.0)],
            auth={"enabled": True, "key_cache_s": 0},
            alerts={"error_rate": 0.5, "interval_s": 1, "min_calls": 1, "window": "15m"},
            dashboard={"refresh_s": REFRESH_S}, agents__reviewer=CONFIGURED_AGENT)
        database = tmp / "state.db"
        user, admin = make_key(config, database, "alice"), make_key(config, database, "ops", "admin")
        env = {"HOME": str(tmp / "home"), "XDG_DATA_HOME": str(tmp / "data"), "XDG_CACHE_HOME": str(tmp / "cache"),
               "AI_ORCHESTRATION_SESSION_SECRET": SESSION_SECRET}
        with running_server(config, database, tmp / "server.log", env=env) as server:
            site = Site(f"http://127.0.0.1:{server.port}", user, admin, config, database, server)
            for index in range(6):
                call(site, user, "orchestrate", prompt=f"release note {index}")
            call(site, admin, "save_workflow", definition=GATED)
            first = call(site, admin, "register_agent", name="summarizer",
                         agent={**REGISTERED_AGENT, "description": "Summarises runs"})
            second = call(site, admin, "register_agent", name="summarizer", agent=REGISTERED_AGENT)
            assert (first["version"], second["version"]) == (1, 2), (first, second)
            wait_until(lambda: call(site, admin, "monitor_operations", window="15m")["incidents"], 30,
                       "an incident for the failing provider", interval_s=0.2)
            yield site


async def _call(url: str, key: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    with anyio.fail_after(60):
        async with mcp_client(url, key, mode="auto") as client:
            result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def call(site: Site, key: str, tool: str, **arguments: Any) -> dict[str, Any]:
    """One MCP tool call over ``/mcp`` with ``key``; its structured result."""
    return anyio.run(_call, site.mcp, key, tool, arguments)


def waiting_run(site: Site, key: str | None = None) -> str:
    """Start ``gated`` as ``key`` (default the user) and return its id once it waits for approval."""
    key = key or site.user
    run_id = call(site, key, "run_workflow", workflow="gated", wait=False)["run_id"]
    wait_until(lambda: call(site, key, "workflow_run", run_id=run_id)["status"] == "waiting", 30,
               f"approval wait in {run_id}", interval_s=0.2)
    return run_id


def run_status(site: Site, run_id: str) -> str:
    return call(site, site.admin, "workflow_run", run_id=run_id)["status"]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html) or re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def browser_client(site: Site) -> httpx2.Client:
    """A cookie-keeping client that sends the Origin a browser on this site sends (closed by :func:`close_clients`)."""
    client = httpx2.Client(base_url=site.base, headers={"Origin": site.base}, follow_redirects=False, timeout=30)
    OPEN_CLIENTS.append(client)
    return client


def close_clients() -> None:
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


def log_in(site: Site, key: str) -> httpx2.Client:
    client = browser_client(site)
    form = client.get("/dashboard/login")
    reply = client.post("/dashboard/login", data={"key": key, "csrf": csrf_of(form.text), "next": "/dashboard"})
    assert reply.status_code == 303 and reply.headers["location"] == "/dashboard", reply.text
    return client
