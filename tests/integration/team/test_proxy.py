"""Three replicas behind Debian's nginx with the README's configuration: sessionless (2026-07-28) calls are
spread round robin over every replica; a handshake-era session stays on the replica that opened it."""

from __future__ import annotations

import collections
from pathlib import Path

import anyio
import pytest
from mcp import Client

from server.simulator import Upstream
from tests.serving import free_port
from tests.team import Replica, nginx_block, replica_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def team(tmp_path: Path, postgres_url: str, upstream: Upstream, nginx):
    port = free_port()
    providers = (f'[[providers]]\nname = "primary"\nkind = "openai"\nmodel = "gpt-sim"\n'
                 f'base_url = "{upstream.openai_base_url}"\n')
    replicas = [Replica(tmp_path, postgres_url, f"r{n}", replica_config(extra=providers),
                        allowed_hosts=f"127.0.0.1:{port}") for n in range(3)]
    for r in replicas:
        r.start(wait=False)
    try:
        from tests.serving import wait_for_port

        for r in replicas:
            wait_for_port(r.port, r.process, timeout_s=60)
        proxy = nginx(nginx_block(replicas), port)
        yield replicas, proxy
    finally:
        for r in replicas:
            r.stop()


def upstream_counts(proxy) -> collections.Counter:
    lines = (Path(proxy.folder) / "upstreams.log").read_text().splitlines()
    return collections.Counter(line.split()[0] for line in lines)


async def test_sessionless_calls_spread_round_robin_over_three_replicas_without_errors(team) -> None:
    replicas, proxy = team
    url = f"http://127.0.0.1:{proxy.port}/mcp"
    errors = 0
    with anyio.fail_after(240):
        async with Client(url) as client:
            for n in range(200):
                result = await client.call_tool("orchestrate", {"prompt": f"call {n}"})
                errors += result.is_error
    counts = upstream_counts(proxy)
    assert errors == 0
    assert set(counts) == {f"127.0.0.1:{r.port}" for r in replicas}
    assert max(counts.values()) - min(counts.values()) <= 2, counts  # round robin: even shares


async def test_a_handshake_era_session_is_routed_to_its_replica(team) -> None:
    replicas, proxy = team
    url = f"http://127.0.0.1:{proxy.port}/mcp"
    with anyio.fail_after(120):
        async with Client(url, mode="legacy") as client:
            for n in range(12):
                result = await client.call_tool("orchestrate", {"prompt": f"session call {n}"})
                assert not result.is_error, result.content[0].text
    lines = (Path(proxy.folder) / "upstreams.log").read_text().splitlines()
    in_session = [line.split() for line in lines if len(line.split()) == 3 and line.split()[2] != "-"]
    owners = {addr for addr, _, _ in in_session}
    session_ids = {sid for _, _, sid in in_session}
    assert len(in_session) >= 12 and len(owners) == 1 and len(session_ids) == 1
    replica = next(r for r in replicas if owners == {f"127.0.0.1:{r.port}"})
    assert next(iter(session_ids)).startswith(f"{replica.id}-")


async def test_a_session_id_of_another_replica_is_refused_naming_its_replica(team) -> None:
    import httpx2

    replicas, _ = team
    other = f"{replicas[1].id}-{'a' * 32}"
    reply = httpx2.post(replicas[0].url, headers={"mcp-session-id": other, "content-type": "application/json",
                                                  "accept": "application/json, text/event-stream"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10)
    assert reply.status_code == 404
    assert f"belongs to replica '{replicas[1].id}'" in reply.json()["error"]["message"]
