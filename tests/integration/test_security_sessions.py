"""Handshake-era Streamable HTTP sessions are limited per key, through a real server process: one user key that
opens sessions and never closes them exhausts only its own allowance."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import httpx2
import pytest

from server.simulator import Upstream
from tests.conftest import provider_entry
from tests.pinger import pinging
from tests.secure_serving import MCP_HEADERS, initialize_body, make_key, mcp_client, running_server, write_toml
from tests.services import until

pytestmark = pytest.mark.anyio
QUIET_PINGS = 25


async def open_session(http: httpx2.AsyncClient, url: str, key: str) -> tuple[httpx2.Response, float]:
    """One raw ``initialize`` POST that never gets a DELETE; returns the reply and how long it took (s)."""
    started = time.perf_counter()
    reply = await http.post(url, content=json.dumps(initialize_body()),
                            headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"})
    await reply.aread()
    return reply, time.perf_counter() - started


async def test_one_key_flooding_sessions_exhausts_only_its_own_allowance(tmp_path: Path, upstream: Upstream) -> None:
    # 200 opening requests from one key against a table of 60: without a per-key allowance the flood takes all
    # 60 places and every other key (the admin's included) gets 503 until the flood's sessions idle out.
    per_key, table, flood = 8, 60, 200
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True}, workflows={"runtime": "memory"},  # no DBOS launch mid-test
                        limits={"max_sessions_per_key": per_key, "max_sessions": table, "session_idle_s": 600,
                                "requests_per_minute": 100_000, "max_concurrent_calls": 64})
    database = tmp_path / "s.db"
    flooder, other = make_key(config, database, "flooder"), make_key(config, database, "other")
    admin, watcher = make_key(config, database, "ops", role="admin"), make_key(config, database, "watcher")
    with running_server(config, database, tmp_path / "server.log") as server:
        with anyio.fail_after(120):
            async with mcp_client(server.url, watcher) as client:  # warm: the first call's imports are done
                assert not (await client.call_tool("orchestrate", {"prompt": "warm up"})).is_error
            async with pinging(server.url, watcher) as pings, httpx2.AsyncClient(timeout=30) as http:
                await pings.wait_for(QUIET_PINGS)  # bounded by fail_after
                quiet, flood_from = max(pings.latencies), len(pings.latencies)
                outcomes: list[tuple[httpx2.Response, float]] = []

                async def burst(count: int) -> None:
                    for _ in range(count):
                        outcomes.append(await open_session(http, server.url, flooder))

                async with anyio.create_task_group() as group:
                    for _ in range(4):  # four connections flooding at once
                        group.start_soon(burst, flood // 4)
                opened = [r for r, _ in outcomes if r.status_code == 200]
                refused = [(r, s) for r, s in outcomes if r.status_code != 200]
                assert len(opened) == per_key and all(r.headers.get("mcp-session-id") for r in opened)
                assert {r.status_code for r, _ in refused} == {429}
                assert max(s for _, s in refused) < 1.0  # a clear refusal at once
                first = refused[0][0]
                assert "too many open sessions for this key (limit 8)" in first.json()["error"]["message"]
                assert int(first.headers["retry-after"]) >= 1
                for key in (other, admin):  # other keys, the admin's too, still get sessions and answers
                    async with mcp_client(server.url, key) as client:
                        answered = await client.call_tool("orchestrate", {"prompt": "still here?"})
                        assert not answered.is_error, answered.content[0].text
                # Closing a session frees its slot for the same key.
                session_id = opened[0].headers["mcp-session-id"]
                deleted = await http.delete(server.url, headers={**MCP_HEADERS, "Authorization": f"Bearer {flooder}",
                                                                 "Mcp-Session-Id": session_id,
                                                                 "Mcp-Protocol-Version": "2025-11-25"})
                assert deleted.status_code == 200
                again, _ = await open_session(http, server.url, flooder)
                assert again.status_code == 200
                still, _ = await open_session(http, server.url, flooder)
                assert still.status_code == 429
            flooded = pings.latencies[flood_from:]
            # Under 250 ms (the quiet pings before the flood take a few ms); a flood that blocked the event loop or
            # made each opening request slow (200 of them) would hold pings for seconds.
            assert flooded and max(flooded) < 0.25, \
                f"slowest ping {max(flooded) * 1000:.0f} ms of {len(flooded)} (quiet: {quiet * 1000:.0f} ms)"


async def test_an_idle_session_frees_its_slot_after_the_idle_timeout(tmp_path: Path, upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True}, limits={"max_sessions_per_key": 2, "session_idle_s": 1})
    database = tmp_path / "s.db"
    key = make_key(config, database, "idler")
    with running_server(config, database, tmp_path / "server.log") as server:
        async with httpx2.AsyncClient(timeout=30) as http:
            with anyio.fail_after(30):
                first = [(await open_session(http, server.url, key))[0] for _ in range(3)]
                assert [r.status_code for r in first] == [200, 200, 429]
                idle_since = time.monotonic()

                async def slot_freed() -> bool:
                    return (await open_session(http, server.url, key))[0].status_code == 200

                await until(slot_freed, 30, "a slot freed by the idle timeout", interval_s=0.1)
                assert time.monotonic() - idle_since >= 1.0  # not before the idle timeout
                gone = await http.post(server.url, content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
                                       headers={**MCP_HEADERS, "Authorization": f"Bearer {key}",
                                                "Mcp-Session-Id": first[0].headers["mcp-session-id"],
                                                "Mcp-Protocol-Version": "2025-11-25"})
                assert gone.status_code == 404  # the SDK closed the idle session itself too
