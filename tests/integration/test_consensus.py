"""`consensus` through the real SDKs over HTTP: early stop closes the outstanding requests' connections (the
upstream sees the client go away) and records them as cancelled. The methods, deadlines and the judge are tested
against fake providers in ``tests/unit/test_consensus.py``."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio


async def test_early_stop_closes_the_slow_providers_connections_and_records_them_as_cancelled(
    upstream: Upstream,
) -> None:
    store = MemoryStore()
    config = config_for(*(provider_entry(upstream, n, kind="openai" if i % 2 == 0 else "anthropic", model=n,
                                         priority=i) for i, n in enumerate("abcde")))
    # The fast answers take 0.3 s, so the slow requests are surely in flight when the outcome settles.
    for name in "abc":
        upstream.script(name, Behaviour(text="yes", latency_s=0.3))
    for name in "de":
        upstream.script(name, Behaviour(text="no", latency_s=5))
    with anyio.fail_after(15):  # a cold process imports both SDKs first (seconds on a busy machine)
        async with Client(build_server(config, store_factory=lambda: store)) as client:
            result = await client.call_tool("consensus", {"prompt": "?", "max_providers": 5, "method": "vote",
                                                          "threshold": 0.6})
    out = result.structured_content
    assert out["status"] == "consensus" and out["early_stop"] is True
    assert {r["provider"]: r["status"] for r in out["responses"]} == {
        "a": "ok", "b": "ok", "c": "ok", "d": "cancelled", "e": "cancelled"}
    finished = await anyio.to_thread.run_sync(upstream.wait_for_finished, 5)
    assert {r.model: r.outcome for r in finished if r.model in ("d", "e")} == {
        "d": "client_closed", "e": "client_closed"}
    cancelled = [r for r in store.calls.records if r.status == "cancelled"]
    assert {r.provider for r in cancelled} == {"d", "e"} and all(r.error_class == "cancelled" for r in cancelled)
