"""What routing to an agent costs, beside a direct ``orchestrate`` in the same run.

    python bench/agents.py [--calls 200] [--json FILE]

One server (in-memory MCP client, SQLite store in a temporary folder, providers of kind ``openai`` through the
official SDK) against the local simulated upstream (``server/simulator.py``, loopback). Three kinds of call,
interleaved round by round (the order rotates, so no kind always runs first):

- **direct**: ``orchestrate(prompt=…)``, the baseline;
- **routed, cache hit**: ``orchestrate(prompt=…, agent="auto")`` with a prompt routed before (the decision comes
  from the cache: no routing call);
- **routed, uncached**: ``orchestrate(agent="auto")`` with a new prompt each time (one routing-model call, then
  the answer).

Figures: routing-model calls per uncached request, counted at the upstream (goal: at most 1); the routing latency
a cache hit reports (``agent.routing_latency_ms``, p50 and p99; goal: p99 under 1 ms); and the client-side
time of each kind, p50 and p99, with what a hit adds over the direct call (p50 minus p50; goal: under 1 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "bench"))

from harness import Figure, alternate, preamble, write_figures  # noqa: E402

from mcp import Client  # noqa: E402

from server.app.assembly import build_server, open_store  # noqa: E402
from server.config import Config  # noqa: E402
from server.simulator import Behaviour, Upstream  # noqa: E402


def config(upstream: Upstream) -> Config:
    base = upstream.openai_base_url
    return Config.model_validate({
        "providers": [{"name": "answers", "kind": "openai", "model": "answer-model", "base_url": base, "priority": 1},
                      {"name": "router", "kind": "openai", "model": "router-model", "base_url": base, "priority": 9}],
        "agents": {"general": {"description": "Answers general questions", "providers": ["answers"]},
                   "coder": {"description": "Writes code", "providers": ["answers"]}},
        "agent_routing": {"default": "general", "providers": ["router"]}})


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(calls: int, json_path: str | None) -> None:
    preamble("agents: routing to an agent beside a direct orchestrate")
    times: dict[str, list[float]] = {"direct": [], "hit": [], "miss": []}
    hit_routing_ms: list[float] = []
    with Upstream() as upstream, tempfile.TemporaryDirectory() as folder:
        upstream.script("router-model", Behaviour(text=json.dumps({"agent": "coder", "reason": "code"})), repeat=True)
        server = build_server(config(upstream), store_factory=lambda: open_store(Path(folder) / "state.db"))
        async with Client(server) as client:

            async def timed(kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
                started = time.perf_counter()
                result = await client.call_tool("orchestrate", arguments)
                elapsed = (time.perf_counter() - started) * 1000
                if result.is_error:
                    raise SystemExit(f"{kind} call failed: {result.content[0].text}")
                times[kind].append(elapsed)
                return result.structured_content

            await timed("hit", {"prompt": "warm up the cache", "agent": "auto"})  # warm-up, routed once
            await timed("direct", {"prompt": "warm up"})
            for series in times.values():
                series.clear()
            routed_before = len([r for r in upstream.requests if r.model == "router-model"])
            kinds = ["direct", "hit", "miss"]
            for i in range(calls):
                for kind in alternate(i, kinds):
                    if kind == "direct":
                        await timed(kind, {"prompt": "warm up"})
                    elif kind == "hit":
                        out = await timed(kind, {"prompt": "warm up the cache", "agent": "auto"})
                        assert out["agent"]["cached"], out["agent"]
                        hit_routing_ms.append(out["agent"]["routing_latency_ms"])
                    else:
                        out = await timed(kind, {"prompt": f"a new question {i}", "agent": "auto"})
                        assert out["agent"]["via"] == "model", out["agent"]
            routing_calls = len([r for r in upstream.requests if r.model == "router-model"]) - routed_before
    per_miss = routing_calls / calls
    print(f"\n{calls} calls of each kind; client-side time p50 / p99 (ms):")
    for kind, label in (("direct", "direct orchestrate"), ("hit", "routed, cache hit"), ("miss", "routed, uncached")):
        print(f"  {label:22} {statistics.median(times[kind]):8.2f} / {quantile(times[kind], 0.99):8.2f}")
    print(f"routing latency a cache hit reports, p50 / p99: {statistics.median(hit_routing_ms):.4f} / "
          f"{quantile(hit_routing_ms, 0.99):.4f} ms")
    print(f"routing-model calls per uncached request: {per_miss:.3f} ({routing_calls} for {calls} requests)")
    added_ms = statistics.median(times["hit"]) - statistics.median(times["direct"])
    print(f"added by routing on a cache hit (p50 routed hit - p50 direct): {added_ms:.3f} ms")
    write_figures(json_path, [
        Figure("agents", "routing-model calls per uncached request", per_miss, None, "calls", "<=", 1.0),
        Figure("agents", "cache-hit routing latency p99", quantile(hit_routing_ms, 0.99), None, "ms", "<=", 1.0),
        Figure("agents", "added by a cache hit over a direct orchestrate (p50)", added_ms,
               statistics.median(times["direct"]), "ms", "<=", 1.0),
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", help="write the figures here (bench/run_all.py)")
    args = parser.parse_args()
    anyio.run(main, args.calls, args.json)
