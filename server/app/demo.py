"""``ai-orchestration-mcp demo``: the main job end to end, with no API key.

Starts the simulated upstream on a free loopback port, writes a two-provider config whose first provider
always answers 503, launches the real server over stdio as a subprocess, and through a real MCP client
lists the tools, calls ``orchestrate`` (which falls back to the second provider) and ``monitor_operations``.
Everything printed here is command output (``# cli-output``); the server's own logs go to stderr.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

CONFIG = """\
[[providers]]
name = "flaky-openai"
kind = "openai"
model = "fail-503"            # the simulator answers 503 for this model name
base_url = "{openai_url}"
priority = 1

[[providers]]
name = "sim-claude"
kind = "anthropic"
model = "claude-sim"
base_url = "{anthropic_url}"
priority = 2
input_cost_per_mtok = 1.0
output_cost_per_mtok = 5.0
"""


def run_demo() -> int:
    """Run the demo; returns 0 when the fallback answer and the metrics came back as expected."""
    import anyio

    from server.simulator import Upstream

    with tempfile.TemporaryDirectory(prefix="ai-orchestration-demo-") as folder, Upstream() as upstream:
        config = Path(folder) / "config.toml"
        config.write_text(CONFIG.format(openai_url=upstream.openai_base_url, anthropic_url=upstream.url))
        return anyio.run(_session, config, Path(folder) / "state.db")


async def _session(config: Path, database: Path) -> int:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "server", "--config", str(config), "--database", str(database), "--log-level", "WARNING"],
    )
    out = sys.stdout
    async with Client(params, mode="legacy") as client:
        tools = (await client.list_tools()).tools
        print(f"tools: {', '.join(t.name for t in tools)}", file=out)  # cli-output
        result = await client.call_tool("orchestrate", {"prompt": "Say hello to the demo"})
        if result.is_error:
            print(f"orchestrate failed: {result.content[0].text}", file=out)  # cli-output
            return 1
        answer = result.structured_content
        print(f"\norchestrate answered: {answer['text']!r}", file=out)  # cli-output
        print(f"  provider={answer['provider']} model={answer['model']} "  # cli-output
              f"cost_usd={answer.get('cost_usd', 0)} latency_ms={answer.get('latency_ms')} "
              f"overhead_ms={answer.get('overhead_ms')}", file=out)
        for attempt in answer["attempts"]:  # compact results leave out empty fields (error_class on success)
            print(f"  attempt: {attempt['provider']:<14} {attempt['status']:<6} "  # cli-output
                  f"{attempt.get('error_class') or '':<13} {attempt.get('latency_ms', 0):.1f} ms", file=out)
        monitor = (await client.call_tool("monitor_operations", {"window": "15m"})).structured_content
        print("\nmonitor_operations (15m, by provider):", file=out)  # cli-output
        for group in monitor["groups"]:
            print(f"  {group['key']:<14} calls={group['calls']} errors={group.get('errors', 0)} "  # cli-output
                  f"p50={group.get('latency_p50_ms') or 0:.1f} ms cost_usd={group.get('cost_usd', 0)}", file=out)
        print("\nfull orchestrate result:\n" + json.dumps(answer, indent=2), file=out)  # cli-output
    return 0 if answer["provider"] == "sim-claude" and len(answer["attempts"]) == 2 else 1
