"""Load over Streamable HTTP: 50 concurrent clients calling `orchestrate` for 60 s, side by side with the same
load on a minimal `MCPServer` hello-world tool, in one run.

    python bench/http_load.py [--clients 50] [--duration 60] [--warmup 10] [--workers 5] [--no-auth]

Ours: the server as a subprocess (`--transport http`) with authentication on (an API key made with
`keys create`, the shared-server case), one provider on a zero-latency simulated upstream (its own process),
call records going to SQLite. Baseline: `MCPServer` with one `hello(name) -> str` tool, run with
`run_streamable_http_async` in its own process, no auth. A third server shows the floor for any MCP tool that
makes a completion: `MCPServer` with one tool that calls the openai SDK directly, same upstream, no auth,
no pool, no records. Clients are real MCP clients (handshake era, as hosts use today), spread over
`--workers` processes so the load generator is not the bottleneck; each client calls in a loop, one call at a
time. A warm-up at full load precedes each measured window. Printed per server: calls, throughput (calls/s),
p50/p99 latency, errors, the server's CPU per call (user + system from /proc, over the measured window) and
the upstream's; our throughput as a fraction of the baseline's (goal ≥ 0.7) and of the direct-SDK floor's;
our server's RSS after warm-up and after the run (goal: within 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} not ready")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- processes ---------------------------------------------------------------------------------------------------

def serve_hello(port: int) -> None:
    import anyio
    from mcp.server import MCPServer

    mcp = MCPServer("hello")

    @mcp.tool(description="Say hello.")
    async def hello(name: str = "world") -> str:
        return f"hello {name}"

    import logging

    logging.getLogger().setLevel(logging.WARNING)
    anyio.run(lambda: mcp.run_streamable_http_async(host="127.0.0.1", port=port))


def serve_direct_sdk(port: int, base_url: str) -> None:
    """The floor for an MCP tool that makes one completion: `MCPServer` with one tool that calls the openai SDK
    directly (no pool, auth, records or guardrails), same upstream."""
    import anyio
    from mcp.server import MCPServer
    from openai import AsyncOpenAI

    mcp = MCPServer("direct-sdk")
    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    @mcp.tool(description="One completion through the openai SDK.")
    async def orchestrate(prompt: str) -> str:
        completion = await client.chat.completions.create(
            model="gpt-sim", messages=[{"role": "user", "content": prompt}])
        return completion.choices[0].message.content or ""

    import logging

    logging.getLogger().setLevel(logging.WARNING)
    anyio.run(lambda: mcp.run_streamable_http_async(host="127.0.0.1", port=port))


def worker(url: str, tool: str, clients: int, duration_s: float, token: str) -> None:
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    arguments = {"prompt": "hello"} if tool == "orchestrate" else {"name": "bench"}
    latencies: list[float] = []
    errors = 0

    async def one_client(deadline: float) -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    try:
                        result = await client.call_tool(tool, arguments)
                        ok = not result.is_error
                    except Exception:  # noqa: BLE001 - counted, the load goes on
                        ok = False
                    if ok:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        errors += 1

    async def main() -> None:
        deadline = time.monotonic() + duration_s
        async with anyio.create_task_group() as group:
            for _ in range(clients):
                group.start_soon(one_client, deadline)

    anyio.run(main)
    print(json.dumps({"latencies_ms": latencies, "errors": errors}))


# -- the run -----------------------------------------------------------------------------------------------------

def load(url: str, tool: str, clients: int, workers: int, duration_s: float, token: str) -> dict:
    per = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", url, tool, str(n), str(duration_s), token],
                              stdout=subprocess.PIPE, text=True, cwd=REPO) for n in per if n]
    latencies: list[float] = []
    errors = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=duration_s + 120)
        data = json.loads(out.strip().splitlines()[-1])
        latencies += data["latencies_ms"]
        errors += data["errors"]
    latencies.sort()
    return {"calls": len(latencies), "errors": errors, "throughput": len(latencies) / duration_s,
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")}


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="http-load-"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "server", "simulate-upstream", "--port", str(up_port),
                                 "--log-level", "WARNING"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    upstream.stdout.readline()
    config = tmp / "config.toml"
    config.write_text(
        f'[auth]\nenabled = {"false" if args.no_auth else "true"}\n\n'
        "[limits]\nrequests_per_minute = 10000000\nmax_concurrent_calls = 10000\n\n"
        f'[[providers]]\nname = "sim"\nkind = "openai"\nmodel = "gpt-sim"\n'
        f'base_url = "http://127.0.0.1:{up_port}/v1"\nmax_concurrency = 1000\n')
    database = tmp / "state.db"
    token = ""
    if not args.no_auth:
        token = subprocess.run([sys.executable, "-m", "server", "--config", str(config), "--database", str(database),
                                "keys", "create", "bench"], env=env, cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
    ours_port, hello_port, direct_port = free_port(), free_port(), free_port()
    ours = subprocess.Popen([sys.executable, "-m", "server", "--transport", "http", "--port", str(ours_port),
                             "--config", str(config), "--database", str(database), "--log-level", "WARNING"],
                            env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    hello = subprocess.Popen([sys.executable, __file__, "--serve-hello", str(hello_port)], env=env, cwd=REPO,
                             stderr=subprocess.DEVNULL)
    direct = subprocess.Popen([sys.executable, __file__, "--serve-direct-sdk", str(direct_port),
                               f"http://127.0.0.1:{up_port}/v1"], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        for port, proc in ((ours_port, ours), (hello_port, hello), (direct_port, direct)):
            wait_port(port, proc)
        rows = {}
        for name, server, port, tool, key in (
                ("hello-world MCPServer", hello, hello_port, "hello", ""),
                ("MCPServer tool -> openai SDK", direct, direct_port, "orchestrate", ""),
                (f"ours: orchestrate (auth {'off' if args.no_auth else 'on'})", ours, ours_port, "orchestrate", token)):
            url = f"http://127.0.0.1:{port}/mcp"
            load(url, tool, args.clients, args.workers, args.warmup, key)
            if server is ours:
                warm_rss = rss_mb(ours.pid)
            cpu_before = (cpu_s(server.pid), cpu_s(upstream.pid))
            rows[name] = row = load(url, tool, args.clients, args.workers, args.duration, key)
            calls = max(row["calls"], 1)
            row["server_cpu_ms"] = (cpu_s(server.pid) - cpu_before[0]) * 1000 / calls
            row["upstream_cpu_ms"] = (cpu_s(upstream.pid) - cpu_before[1]) * 1000 / calls
            if server is ours:
                after_rss = rss_mb(ours.pid)
        print(f"{args.clients} clients, {args.duration:g} s measured after {args.warmup:g} s warm-up, "
              f"{args.workers} client processes, zero-latency upstream")
        print(f"{'server':<36} {'calls':>8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
              f"{'server CPU ms/call':>19} {'upstream CPU ms/call':>21}")
        for name, r in rows.items():
            print(f"{name:<36} {r['calls']:>8} {r['throughput']:>9.1f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
                  f"{r['errors']:>7} {r['server_cpu_ms']:>19.2f} {r['upstream_cpu_ms']:>21.2f}")
        hello_row, direct_row, ours_row = rows.values()
        print(f"throughput ratio ours/hello-world: {ours_row['throughput'] / hello_row['throughput']:.2f} "
              f"(goal >= 0.70); ours/direct SDK tool: {ours_row['throughput'] / direct_row['throughput']:.2f}")
        print(f"server RSS after warm-up {warm_rss:.1f} MB, after the run {after_rss:.1f} MB "
              f"({(after_rss - warm_rss) / warm_rss * 100:+.1f}%; goal within 10%)")
    finally:
        for proc in (ours, hello, direct, upstream):
            proc.terminate()
            proc.wait(20)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-hello":
        serve_hello(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-direct-sdk":
        serve_direct_sdk(int(sys.argv[2]), sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6] if len(sys.argv) > 6 else "")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--no-auth", action="store_true", help="run our server without authentication")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
