"""monitor_operations through MCP (grouping, metrics, the chart) and the `metrics` command."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest
from mcp import Client

from server.app.assembly import build_server
from server.operations.charts import HEIGHT_PX, WIDTH_PX
from server.app.cli import main
from server.simulator import Upstream
from server.store import CallRecord
from server.store.memory import MemoryStore
from server.store.sqlite import SQLiteStore
from tests.conftest import config_for, provider_entry



def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.anyio
async def test_monitor_operations_groups_picks_metrics_and_draws_a_png(upstream: Upstream) -> None:
    config = config_for(provider_entry(upstream, "primary", model="gpt-sim"))
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        for _ in range(3):
            assert not (await client.call_tool("orchestrate", {"prompt": "hi"})).is_error
        result = await client.call_tool("monitor_operations", {"window": "15m", "include_chart": True})
        assert not result.is_error
        out = result.structured_content
        (group,) = out["groups"]
        assert (group["key"], group["calls"], out["totals"]["calls"], out["step_s"]) == ("primary", 3, 3, 15)
        assert out["percentiles"] == "exact" and sum(p["calls"] for p in group["series"]) == 3
        assert out["providers"][0]["name"] == "primary" and out["providers"][0]["circuit"] == "closed"
        image = next(c for c in result.content if c.type == "image")
        assert image.mime_type == "image/png"
        assert png_size(base64.b64decode(image.data)) == (WIDTH_PX, HEIGHT_PX) == (800, 400)
        by_tool = (await client.call_tool("monitor_operations", {"group_by": "tool", "metrics": ["cost"]}))
        (tool_group,) = by_tool.structured_content["groups"]
        assert tool_group["key"] == "orchestrate" and "latency_p95_ms" not in tool_group  # not asked for
        assert tool_group["cost_usd"] == 0.0 and len(by_tool.content) == 1
        by_workflow = await client.call_tool("monitor_operations", {"group_by": "workflow"})
        assert [g["key"] for g in by_workflow.structured_content["groups"]] == [""]
        # Validation errors name the argument (what was given is clipped, and secrets are redacted).
        for arguments, message in (({"metrics": ["speed"]}, "metrics[0]"), ({"window": "1y"}, "window"),
                                   ({"group_by": "user"}, "group_by")):
            bad = await client.call_tool("monitor_operations", arguments)
            assert bad.is_error and message in bad.content[0].text


def test_metrics_command_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    now = time.time()
    for i in range(4):
        store.calls.record_call(CallRecord(ts=now - 60 - i, call_id=str(i), tool="orchestrate", provider="alpha",
                                     model="m", status="error" if i == 0 else "ok", latency_ms=100.0 * (i + 1),
                                     input_tokens=10, output_tokens=20, cost_usd=0.01))
    store.close()
    assert main(["metrics", "--window", "1h", "--database", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("window 1h by provider (percentiles: exact)")
    assert lines[1].split()[:4] == ["group", "calls", "errors", "err%"]
    alpha = lines[3].split()
    assert alpha[:4] == ["alpha", "4", "1", "25.0"] and alpha[4] == "250.0"
    assert lines[4].split()[:2] == ["all", "4"]
    assert main(["metrics", "--window", "forever", "--database", str(path)]) == 2
    assert "window" in capsys.readouterr().err
