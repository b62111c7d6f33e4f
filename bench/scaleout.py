"""Scale-out on PostgreSQL, every figure beside its baseline in one run.

    python bench/scaleout.py [--clients 30] [--duration 20] [--warmup 5] [--workers 3] [--steps 200] [--runs 5]

1. ``orchestrate`` throughput over Streamable HTTP (the load of ``bench/http_load.py``: real MCP clients in
   ``--workers`` processes, each calling in a loop against a zero-latency simulated upstream, authentication off):
   one process on SQLite (the baseline), one replica on PostgreSQL, and three replicas on PostgreSQL behind
   Debian's nginx with the README's configuration. PostgreSQL is a throwaway cluster started here (as the tests
   start it, but with fsync and synchronous commits on, as in production). On a 2-core machine the three replicas, PostgreSQL, nginx, the upstream and the load generator
   share two cores: the figure says what the replicas cost, not what three machines would give.
2. Workflow steps per second on PostgreSQL: ``bench/workflows.py --system-database URL`` (plain DBOS steps
   against our interpreter, runs alternated, DBOS's system database in the same cluster).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from http_load import cpu_s, free_port, load, wait_port  # noqa: E402

from tests.services import Nginx, PostgresCluster, postgres_bindir  # noqa: E402
from tests.team import nginx_block  # noqa: E402


@dataclass
class Server:
    id: str
    port: int
    process: subprocess.Popen


def start(name: str, database: str, config: Path, env: dict[str, str], allowed: str = "") -> Server:
    port = free_port()
    command = [sys.executable, "-m", "server", "--transport", "http", "--port", str(port), "--config", str(config),
               "--database", database, "--log-level", "WARNING"]
    if database.startswith("postgresql://"):
        command += ["--replica-id", name]
    if allowed:
        command += ["--allowed-hosts", allowed]
    process = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    return Server(name, port, process)


def measure(label: str, url: str, servers: list[Server], args: argparse.Namespace) -> dict:
    load(url, "orchestrate", args.clients, args.workers, args.warmup, "")
    before = sum(cpu_s(s.process.pid) for s in servers)
    row = load(url, "orchestrate", args.clients, args.workers, args.duration, "")
    row["cpu_ms"] = (sum(cpu_s(s.process.pid) for s in servers) - before) * 1000 / max(row["calls"], 1)
    row["label"] = label
    return row


def run(args: argparse.Namespace) -> None:
    bindir = postgres_bindir()
    if bindir is None or not os.access("/usr/sbin/nginx", os.X_OK):
        raise SystemExit("needs PostgreSQL and nginx: bash scripts/install-services.sh (as root)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores: {os.cpu_count()}")
    tmp = Path(tempfile.mkdtemp(prefix="scaleout-"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cluster = PostgresCluster(bindir, durable=True).start()  # commits reach the disk, as in production
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "server", "simulate-upstream", "--port", str(up_port),
                                 "--log-level", "WARNING"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    upstream.stdout.readline()
    config = tmp / "config.toml"
    config.write_text("[auth]\nenabled = false\n\n[limits]\nrequests_per_minute = 10000000\n"
                      "max_concurrent_calls = 10000\n\n"
                      f'[[providers]]\nname = "sim"\nkind = "openai"\nmodel = "gpt-sim"\n'
                      f'base_url = "http://127.0.0.1:{up_port}/v1"\nmax_concurrency = 1000\n')
    rows = []
    running: list[Server] = []
    try:
        sqlite = start("sqlite", str(tmp / "state.db"), config, env)
        running.append(sqlite)
        wait_port(sqlite.port, sqlite.process)
        rows.append(measure("1 process, SQLite (baseline)", f"http://127.0.0.1:{sqlite.port}/mcp", [sqlite], args))
        sqlite.process.terminate()
        sqlite.process.wait(30)

        one = start("solo", cluster.database(), config, env)
        running.append(one)
        wait_port(one.port, one.process)
        rows.append(measure("1 replica, PostgreSQL", f"http://127.0.0.1:{one.port}/mcp", [one], args))
        one.process.terminate()
        one.process.wait(30)

        proxy_port = free_port()
        database = cluster.database()
        three = [start(f"r{n}", database, config, env, f"127.0.0.1:{proxy_port}") for n in range(3)]
        running += three
        for s in three:
            wait_port(s.port, s.process)
        proxy = Nginx(nginx_block(three), proxy_port).start()
        try:
            rows.append(measure("3 replicas, PostgreSQL, nginx", f"http://127.0.0.1:{proxy.port}/mcp", three, args))
        finally:
            proxy.stop()
        print(f"\norchestrate over HTTP: {args.clients} clients (handshake era), {args.duration:g} s after "
              f"{args.warmup:g} s warm-up, zero-latency upstream, auth off")
        print(f"{'':34}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'server CPU ms/call':>20}")
        for r in rows:
            print(f"{r['label']:34}{r['throughput']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['errors']:>8}"
                  f"{r['cpu_ms']:>20.2f}")
        base = rows[0]["throughput"]
        print("ratios to the SQLite process: " + ", ".join(f"{r['label']}: {r['throughput'] / base:.2f}x"
                                                          for r in rows[1:]))
    finally:
        for s in running:
            if s.process.poll() is None:
                s.process.terminate()
                s.process.wait(30)
        upstream.terminate()
        upstream.wait(20)
    try:
        print("\nworkflow steps on PostgreSQL:", flush=True)
        subprocess.run([sys.executable, str(REPO / "bench" / "workflows.py"), "--steps", str(args.steps), "--runs",
                        str(args.runs), "--system-database", cluster.database()], cwd=REPO, env=env, check=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    run(parser.parse_args())
