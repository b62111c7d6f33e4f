"""Added latency of `orchestrate` over a direct SDK call to the same local upstream, side by side in one run.

    python bench/overhead.py [--calls 500]

Baseline: `openai.AsyncOpenAI(...).chat.completions.create` against the simulator (zero latency).
Ours: the `orchestrate` tool through the in-memory MCP client, and over stdio to a server subprocess, both
with the same provider pointed at the same upstream and call records going to a real SQLite store.
Calls are interleaved (direct, ours, direct, ours …) so drift on the machine hits both alike, one client
at a time (a connected stdio client's reader tasks would otherwise tax the in-memory figures).
Added latency = ours − direct, per percentile. Also printed: a hello-world MCPServer tool round trip
(in memory), to show how much of the figure is the MCP round trip itself, and the median `overhead_ms`.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from mcp.server import MCPServer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.app.assembly import build_server, open_store  # noqa: E402
from server.config import Config  # noqa: E402


class _External:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.openai_base_url = self.url + "/v1"


@contextlib.contextmanager
def external_upstream() -> Iterator[_External]:
    """The simulator in its own process, as a real upstream would be: its work does not share our GIL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "server", "simulate-upstream", "--port", str(port),
                                "--log-level", "WARNING"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()  # the one line with the URLs: it is listening
        yield _External(port)
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(name: str, values: list[float]) -> str:
    return f"{name:<44} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {pct(values, 99):8.3f}"


async def measure(calls: int, tmp: Path) -> None:
    import openai

    with external_upstream() as upstream:
        config = Config.model_validate({"providers": [
            {"name": "sim", "kind": "openai", "model": "bench-model", "base_url": upstream.openai_base_url}]})
        direct_client = openai.AsyncOpenAI(base_url=upstream.openai_base_url, api_key="unused", max_retries=0)

        async def direct() -> float:
            started = time.perf_counter()
            await direct_client.chat.completions.create(
                model="bench-model", messages=[{"role": "user", "content": "ping"}], max_tokens=16)
            return (time.perf_counter() - started) * 1000

        hello = MCPServer("hello")

        @hello.tool()
        async def echo(text: str) -> str:
            """Echo the text."""
            return text

        config_file = tmp / "bench.toml"
        config_file.write_text(f'[[providers]]\nname = "sim"\nkind = "openai"\nmodel = "bench-model"\n'
                               f'base_url = "{upstream.openai_base_url}"\n')
        stdio = StdioServerParameters(command=sys.executable, args=[
            "-m", "server", "--config", str(config_file), "--database", str(tmp / "stdio.db"), "--log-level", "ERROR"],
            cwd=str(REPO))

        server = build_server(config, store_factory=lambda: open_store(tmp / "memory.db"))
        results: dict[str, list[float]] = {}
        overhead_ms: list[float] = []

        async def tool(client: Client, name: str, args: dict) -> float:
            started = time.perf_counter()
            result = await client.call_tool(name, args)
            elapsed = (time.perf_counter() - started) * 1000
            assert not result.is_error, result.content
            if name == "orchestrate" and client.protocol_version != "2025-11-25":
                overhead_ms.append(result.structured_content["overhead_ms"])
            return elapsed

        async def phase(label: str, client: Client, name: str, args: dict) -> None:
            """Interleave direct calls with tool calls; one phase at a time, so clients do not compete."""
            for _ in range(30):  # warm-up: imports, connections, code paths
                await direct()
                await tool(client, name, args)
            overhead_ms.clear()
            baseline, ours = results.setdefault(f"direct ({label})", []), results.setdefault(label, [])
            for _ in range(calls):
                baseline.append(await direct())
                ours.append(await tool(client, name, args))

        ask = {"prompt": "ping", "max_tokens": 16}
        async with Client(hello) as hello_client:
            await phase("hello", hello_client, "echo", {"text": "ping"})
        async with Client(stdio, mode="legacy") as remote:
            await phase("stdio", remote, "orchestrate", ask)
        async with Client(server) as memory:
            await phase("memory", memory, "orchestrate", ask)
        await direct_client.close()

    print(f"\n{calls} calls each, zero-latency local upstream; milliseconds")
    print(f"{'':<44} {'p50':>8} {'p95':>8} {'p99':>8}")
    names = {"memory": "orchestrate, in-memory MCP client", "stdio": "orchestrate, stdio MCP client",
             "hello": "hello-world MCP tool, in memory (reference)"}
    for key, label in names.items():
        baseline = results[f"direct ({key})"]
        print(row(f"direct openai SDK call (baseline for {key})", baseline))
        print(row(label, results[key]))
        if key != "hello":
            added = [pct(results[key], q) - pct(baseline, q) for q in (50, 95, 99)]
            print(f"{'  added latency':<44} {added[0]:8.3f} {added[1]:8.3f} {added[2]:8.3f}")
    print(f"median overhead_ms reported by orchestrate (in memory): {statistics.median(overhead_ms):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        anyio.run(measure, args.calls, Path(folder))


if __name__ == "__main__":
    main()
