"""Load over Streamable HTTP: concurrent MCP clients calling `orchestrate` on our server, beside the same load
on two baseline servers, in alternating windows, in one run.

    python bench/http_load.py [--clients 50] [--duration 30] [--windows 2] [--warmup 5] [--workers 5] [--no-auth]
                              [--json OUT]

Ours: the server as a subprocess (`--transport http`) with authentication on (an API key made with
`keys create`, the shared-server case), one provider on a zero-latency simulated upstream (its own process),
call records going to SQLite. Baselines, run by the venv of the ``[servers]`` pins of
``bench/requirements-baselines.txt``: a hello-world ``MCPServer`` with one ``hello(name) -> str`` tool, and the
floor for any MCP tool that makes a completion: ``MCPServer`` with one tool that calls the openai SDK directly
(same upstream; no auth, pool, records or guardrails) with the typed ``chat.completions.create``, as such a tool
is usually written. A second floor makes the request our providers make (the SDK's raw request, the reply's JSON
read; ``server/pool/providers/_sdk_base.py``): our CPU per call above it is what our own layers cost, printed
beside the goal's figure.

Like with like: every server runs uvicorn with the same settings (``ws="none"``, log level WARNING, so no
server writes an access-log line: ours silences ``uvicorn.access`` at WARNING, the baselines' uvicorn logs at
warning), and its stderr goes to the same sink. The servers are measured in ``--windows`` rounds of windows
whose order rotates from round to round (A-B-C, B-C-A, …), each window after a ``--warmup`` at full load, so
drift on the machine hits all alike. With at least 4 cores the servers are pinned (``taskset``) to the first
half of the cores and the load generator and the upstream to the others; with fewer, nothing is pinned and
each server's own CPU per call (user + system from /proc over its windows) is the primary figure, since
throughput then measures the machine's sharing as much as the server.

Clients are real MCP clients (handshake era, as hosts use today), spread over ``--workers`` processes; each
calls in a loop, one call at a time. Printed per server: calls, throughput, p50/p99 latency, errors, server and
upstream CPU per call; our throughput as a fraction of the floor's (goal >= 0.7) and our CPU per call above the
floor's (goal <= 1.0 ms); our server's RSS after its first warm-up and after the run (goal: within 10%), with
its anonymous and file-backed parts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import Figure, alternate, baseline_python, load_average, preamble, write_figures  # noqa: E402



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


def rss_mb(pid: int) -> dict[str, float]:
    """The process's resident memory in MB: ``VmRSS`` (the figure with the goal), and its anonymous (heap) and
    file-backed parts (``RssAnon``, ``RssFile``: pages of mapped files, such as the SQLite database that the
    store reads memory-mapped, which grow with the file and which the kernel can drop)."""
    fields = {"VmRSS:": "total", "RssAnon:": "anon", "RssFile:": "file"}
    found = {name: float("nan") for name in fields.values()}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line else ""
        if key in fields:
            found[fields[key]] = int(line.split()[1]) / 1024
    return found


# -- processes ---------------------------------------------------------------------------------------------------
def serve_hello(port: int) -> None:
    import anyio
    from mcp.server import MCPServer

    mcp = MCPServer("hello")

    @mcp.tool(description="Say hello.")
    async def hello(name: str = "world") -> str:
        return f"hello {name}"

    anyio.run(serve_uvicorn, mcp, port)


def serve_direct_sdk(port: int, base_url: str, raw: bool = False) -> None:
    """The floor for an MCP tool that makes one completion: `MCPServer` with one tool that calls the openai SDK
    directly (no pool, auth, records or guardrails), same upstream; ``raw``: with the SDK's raw request, as our
    providers make it, instead of the typed ``chat.completions.create``."""
    import json

    import anyio
    import httpx2
    from mcp.server import MCPServer
    from openai import AsyncOpenAI

    mcp = MCPServer("direct-sdk")
    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    @mcp.tool(description="One completion through the openai SDK.")
    async def orchestrate(prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        if raw:
            response = await client.post("/chat/completions", cast_to=httpx2.Response,
                                         body={"model": "gpt-sim", "messages": messages})
            return json.loads(response.content)["choices"][0]["message"]["content"] or ""
        completion = await client.chat.completions.create(model="gpt-sim", messages=messages)
        return completion.choices[0].message.content or ""

    anyio.run(serve_uvicorn, mcp, port)


async def serve_uvicorn(mcp: object, port: int) -> None:
    """Serve ``mcp``'s Streamable HTTP app with the uvicorn settings our server uses (server/app/transports.py),
    at log level WARNING (no access-log lines), as ours runs with ``--log-level WARNING``."""
    import logging

    import uvicorn

    logging.basicConfig(level=logging.WARNING)
    config = uvicorn.Config(mcp.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=port,
                            log_level="warning", ws="none")
    await uvicorn.Server(config).serve()


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

def load(url: str, tool: str, clients: int, workers: int, duration_s: float, token: str,
         pin: list[str] | None = None) -> dict:
    """``clients`` MCP clients over ``workers`` processes calling ``tool`` for ``duration_s``; ``pin``: a
    ``taskset`` prefix for the worker processes."""
    per = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
    procs = [subprocess.Popen([*(pin or []), sys.executable, __file__, "--worker", url, tool, str(n),
                               str(duration_s), token], stdout=subprocess.PIPE, text=True, cwd=REPO)
             for n in per if n]
    latencies: list[float] = []
    errors = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=duration_s + 120)
        data = json.loads(out.strip().splitlines()[-1])
        latencies += data["latencies_ms"]
        errors += data["errors"]
    latencies.sort()
    return {"calls": len(latencies), "errors": errors, "throughput": len(latencies) / duration_s,
            "latencies": latencies, "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")}


def core_split() -> tuple[list[str], list[str]]:
    """``taskset`` prefixes for the servers and for the load (generator and upstream): halves of the cores when
    there are at least 4, else none (the figures then lean on CPU per call)."""
    cores = os.cpu_count() or 1
    if cores < 4 or not shutil.which("taskset"):
        return [], []
    half = cores // 2
    return ["taskset", "-c", f"0-{half - 1}"], ["taskset", "-c", f"{half}-{cores - 1}"]


def run(args: argparse.Namespace) -> None:
    baselines = baseline_python("servers")
    preamble("bench/http_load.py: Streamable HTTP under load, alternating windows", {"baseline servers": baselines},
             in_process=False)
    server_pin, load_pin = core_split()
    print("cores: " + (f"servers on {server_pin[-1]}, load generator and upstream on {load_pin[-1]}" if server_pin
                       else f"{os.cpu_count()}, shared (not pinned): server CPU per call is the primary figure"))
    tmp = Path(tempfile.mkdtemp(prefix="http-load-"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    up_port = free_port()
    upstream = subprocess.Popen([*load_pin, sys.executable, "-m", "server", "simulate-upstream", "--port",
                                 str(up_port), "--log-level", "WARNING"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                text=True)
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
    ours_port, hello_port, direct_port, raw_port = free_port(), free_port(), free_port(), free_port()
    ours = subprocess.Popen([*server_pin, sys.executable, "-m", "server", "--transport", "http", "--port",
                             str(ours_port), "--config", str(config), "--database", str(database), "--log-level",
                             "WARNING"], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    hello = subprocess.Popen([*server_pin, str(baselines), __file__, "--serve-hello", str(hello_port)], env=base_env,
                             cwd=tmp, stderr=subprocess.DEVNULL)
    direct = subprocess.Popen([*server_pin, str(baselines), __file__, "--serve-direct-sdk", str(direct_port),
                               f"http://127.0.0.1:{up_port}/v1"], env=base_env, cwd=tmp, stderr=subprocess.DEVNULL)
    raw = subprocess.Popen([*server_pin, str(baselines), __file__, "--serve-direct-sdk", str(raw_port),
                            f"http://127.0.0.1:{up_port}/v1", "raw"], env=base_env, cwd=tmp, stderr=subprocess.DEVNULL)
    servers = [("hello-world MCPServer", hello, hello_port, "hello", ""),
               ("MCPServer tool -> openai SDK", direct, direct_port, "orchestrate", ""),
               ("MCPServer tool -> SDK raw request", raw, raw_port, "orchestrate", ""),
               (f"ours: orchestrate (auth {'off' if args.no_auth else 'on'})", ours, ours_port, "orchestrate", token)]
    rows = {name: {"calls": 0, "errors": 0, "latencies": [], "seconds": 0.0, "server_cpu_s": 0.0,
                   "upstream_cpu_s": 0.0} for name, *_ in servers}
    warm_rss = None
    try:
        for port, proc in ((ours_port, ours), (hello_port, hello), (direct_port, direct), (raw_port, raw)):
            wait_port(port, proc)
        for window in range(args.windows):
            order = alternate(window, servers)
            print(f"window round {window + 1}/{args.windows}: {' -> '.join(n.split(':')[0] for n, *_ in order)} "
                  f"(load {load_average()})", file=sys.stderr, flush=True)
            for name, server, port, tool, key in order:
                url = f"http://127.0.0.1:{port}/mcp"
                load(url, tool, args.clients, args.workers, args.warmup, key, load_pin)
                if server is ours and warm_rss is None:
                    warm_rss = rss_mb(ours.pid)
                cpu_before = (cpu_s(server.pid), cpu_s(upstream.pid))
                got = load(url, tool, args.clients, args.workers, args.duration, key, load_pin)
                row = rows[name]
                row["server_cpu_s"] += cpu_s(server.pid) - cpu_before[0]
                row["upstream_cpu_s"] += cpu_s(upstream.pid) - cpu_before[1]
                for field in ("calls", "errors", "latencies"):
                    row[field] += got[field]
                row["seconds"] += args.duration
        after_rss = rss_mb(ours.pid)
        report(args, rows, warm_rss, after_rss)
    finally:
        for proc in (ours, hello, direct, raw, upstream):
            proc.terminate()
            proc.wait(20)


def report(args: argparse.Namespace, rows: dict[str, dict], warm_rss: dict[str, float],
           after_rss: dict[str, float]) -> None:
    print(f"\n{args.clients} clients, {args.windows} windows of {args.duration:g} s per server (each after "
          f"{args.warmup:g} s warm-up, order rotating), {args.workers} client processes, zero-latency upstream; "
          f"load average after: {load_average()}")
    print(f"{'server':<36} {'calls':>8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'server CPU ms/call':>19} {'upstream CPU ms/call':>21}")
    for name, r in rows.items():
        calls, lat = max(r["calls"], 1), sorted(r["latencies"])
        r["throughput"] = r["calls"] / r["seconds"]
        r["server_cpu_ms"] = r["server_cpu_s"] * 1000 / calls
        r["upstream_cpu_ms"] = r["upstream_cpu_s"] * 1000 / calls
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
        print(f"{name:<36} {r['calls']:>8} {r['throughput']:>9.1f} {p50:>8.2f} {p99:>8.2f} {r['errors']:>7} "
              f"{r['server_cpu_ms']:>19.2f} {r['upstream_cpu_ms']:>21.2f}")
    hello_row, direct_row, raw_row, ours_row = rows.values()
    print(f"throughput ratio ours/direct-SDK floor: {ours_row['throughput'] / direct_row['throughput']:.2f} "
          f"(goal >= 0.70); ours/hello-world: {ours_row['throughput'] / hello_row['throughput']:.2f}")
    above = ours_row["server_cpu_ms"] - direct_row["server_cpu_ms"]
    print(f"our server CPU per call above the floor's: {above:.2f} ms (goal <= 1.0 ms; primary on a shared machine)")
    print(f"our server CPU per call above the raw-request floor's (our own layers): "
          f"{ours_row['server_cpu_ms'] - raw_row['server_cpu_ms']:.2f} ms")
    growth = (after_rss["total"] - warm_rss["total"]) / warm_rss["total"] * 100
    print(f"server RSS after warm-up {warm_rss['total']:.1f} MB, after the run {after_rss['total']:.1f} MB "
          f"({growth:+.1f}%; goal within 10%); of which anonymous {warm_rss['anon']:.1f} -> {after_rss['anon']:.1f} "
          f"MB, file-backed {warm_rss['file']:.1f} -> {after_rss['file']:.1f} MB")
    write_figures(args.json, [
        Figure("http_load", "throughput, ours / direct-SDK floor", ours_row["throughput"], direct_row["throughput"],
               "calls/s", ">=", 0.7, on_ratio=True),
        Figure("http_load", "server CPU per call above the floor's", above, direct_row["server_cpu_ms"], "ms",
               "<=", 1.0),
        Figure("http_load", "server RSS growth over the run", growth, None, "%", "<=", 10.0)])
    if any(r["errors"] for r in rows.values()):
        raise SystemExit("calls failed during the load: the figures above are not comparable")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-hello":
        serve_hello(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-direct-sdk":
        serve_direct_sdk(int(sys.argv[2]), sys.argv[3], raw=sys.argv[4:] == ["raw"])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6] if len(sys.argv) > 6 else "")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per measured window")
    parser.add_argument("--windows", type=int, default=2, help="windows per server, order rotating")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before each window")
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--no-auth", action="store_true", help="run our server without authentication")
    parser.add_argument("--json", help="write the headline figures here (for bench/run_all.py)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
