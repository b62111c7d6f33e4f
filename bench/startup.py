"""Start-up time and idle memory: process start to the first ``tools/list`` reply, side by side in one run.

    python bench/startup.py [--runs 15]

Three servers over stdio, each started ``--runs`` times, interleaved (hello, simple, full, hello, …) so drift on
the machine hits all alike, after one discarded warm-up start each (bytecode caches written):

- ``hello``: a minimal ``MCPServer`` with one tool (``bench/hello_server.py``), the baseline;
- ``simple``: ``python -m server --simple`` (wire-protocol providers, the JSON state file);
- ``full``: ``python -m server`` (SDK providers, the SQLite database).

Ours get a config with two providers (never called) and a data directory that a first start has already
filled, so each measured start is a normal restart. The clock starts just before the process is spawned and
stops when the ``tools/list`` reply line arrives; ``initialize``, ``notifications/initialized`` and
``tools/list`` are written at once, as a client that does not wait would. Idle RSS is ``VmRSS`` from
``/proc/<pid>/status`` 0.5 s after that reply (Linux). Printed: median, p10 and p90 in milliseconds, the
median's ratio to hello's, the median CPU time of each process (user + system, from ``wait4``; a steadier
figure than wall time on a busy machine) and its ratio, and the median RSS in MB; targets: simple ≤ 1.15×, full ≤ 1.3×, RSS simple
< 80 MB, full < 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = """\
[[providers]]
name = "gpt"
kind = "openai"
model = "gpt-4o-mini"
base_url = "http://127.0.0.1:9/v1"

[[providers]]
name = "claude"
kind = "anthropic"
model = "claude-haiku-4-5"
base_url = "http://127.0.0.1:9"
"""
MESSAGES = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]
TARGETS = {"simple": (1.15, 80.0), "full": (1.3, 150.0)}


def start_once(command: list[str], env: dict[str, str]) -> tuple[float, float, int, float]:
    """(ms from spawn to the tools/list reply, idle RSS in MB, number of tools listed, CPU ms over the process's
    life: user + system, start-up to exit on stdin closed; less sensitive than wall time to a busy machine)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=env, cwd=REPO, text=True, bufsize=1)
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("".join(json.dumps(m) + "\n" for m in MESSAGES))
        process.stdin.flush()
        while True:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{command} closed stdout before answering tools/list")
            reply = json.loads(line)
            if reply.get("id") == 2:
                elapsed_ms = (time.perf_counter() - started) * 1000
                break
        time.sleep(0.5)  # idle
        rss_mb = _rss_mb(process.pid)
        process.stdin.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return elapsed_ms, rss_mb, len(reply["result"]["tools"]), (usage.ru_utime + usage.ru_stime) * 1000
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdin, process.stdout):
            if stream and not stream.closed:
                stream.close()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as folder:
        config = Path(folder) / "config.toml"
        config.write_text(CONFIG)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": folder, "XDG_DATA_HOME": folder,
               "PYTHONPATH": str(REPO)}
        commands = {
            "hello": [sys.executable, str(REPO / "bench" / "hello_server.py")],
            "simple": [sys.executable, "-m", "server", "--simple", "--config", str(config), "--log-level", "WARNING"],
            "full": [sys.executable, "-m", "server", "--config", str(config), "--log-level", "WARNING"],
        }
        first = {name: start_once(command, env) for name, command in commands.items()}  # warm-up, fills data dir
        times: dict[str, list[float]] = {name: [] for name in commands}
        rss: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                elapsed_ms, rss_mb, _, cpu_ms = start_once(command, env)
                times[name].append(elapsed_ms)
                rss[name].append(rss_mb)
                cpu[name].append(cpu_ms)
    base = statistics.median(times["hello"])
    base_cpu = statistics.median(cpu["hello"])
    print(f"process start -> first tools/list reply, {args.runs} starts each, interleaved "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print(f"{'server':<8} {'tools':>5} {'median ms':>10} {'p10':>8} {'p90':>8} {'× hello':>8} {'CPU ms':>7} "
          f"{'× hello':>8} {'RSS MB':>7}  target (wall time and RSS)")
    for name in commands:
        values = sorted(times[name])
        median = statistics.median(values)
        p10, p90 = values[int(0.1 * (len(values) - 1))], values[int(0.9 * (len(values) - 1))]
        ratio = median / base
        memory = statistics.median(rss[name])
        target = ""
        if name in TARGETS:
            max_ratio, max_rss = TARGETS[name]
            verdict = "met" if ratio <= max_ratio and memory < max_rss else "MISSED"
            target = f"≤{max_ratio}× and <{max_rss:.0f} MB: {verdict}"
        cpu_ms = statistics.median(cpu[name])
        print(f"{name:<8} {first[name][2]:>5} {median:>10.1f} {p10:>8.1f} {p90:>8.1f} {ratio:>8.2f} {cpu_ms:>7.0f} "
              f"{cpu_ms / base_cpu:>8.2f} {memory:>7.1f}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
