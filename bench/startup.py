"""What a user feels at start-up: process start to ``tools/list``, to the first answer, and the first call made
a few seconds after connecting — ours and the baselines side by side, interleaved, in one run.

    python bench/startup.py [--runs 20] [--delay-s 3] [--also LABEL=CHECKOUT ...]

Servers, all over stdio, each start a fresh process:

- ``hello``: a one-tool ``MCPServer`` (``bench/hello_server.py``), the floor for ``tools/list``;
- ``hello+sdk``: a one-tool ``MCPServer`` whose tool asks a model through the official SDKs, both imported and
  their clients built at start as a straightforward server would (``bench/hello_sdk_server.py``);
- ``ours``: ``python -m server`` (full mode) with two providers on the simulated upstream: ``gpt`` (kind
  openai) and ``claude`` (kind anthropic), and a data directory a first start has filled; ``simple``: the same
  with ``--simple`` (``tools/list`` only);
- ``--also LABEL=CHECKOUT``: ``ours`` from another checkout of this project (for example main, or a branch
  without one piece of start-up machinery), measured in the same rounds.

Each round runs, in an order that rotates from round to round (so drift on the machine hits all alike):

1. start -> ``tools/list`` reply: ``initialize``, ``notifications/initialized`` and ``tools/list`` are written at
   once, as a client that does not wait would;
2. start -> first answer, per provider kind: the same three messages and a ``tools/call`` (``ask`` for the
   baseline, ``orchestrate`` with ``providers=[gpt]`` or ``[claude]`` for ours), all written at once;
3. the first call made ``--delay-s`` seconds after the ``initialize`` reply (a person asks a few seconds after
   the client connected): the call's own round trip, per provider kind.

The upstream (``server/simulator.py``, zero latency) runs in its own process. Printed: the load average before
and after, the versions compared, medians with p10-p90, the server's CPU time (user + system) at the reply (a
figure a busy machine disturbs far less than wall time), and the ratios the first-answer issue sets as targets:
first answer <= 1.2x hello+sdk per kind; ``tools/list`` <= 1.3x hello and <= 1.0x hello+sdk; the delayed
first call within 50 ms of hello+sdk's (on a quiet machine: load average below 1).
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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KINDS = ("openai", "anthropic")
HANDSHAKE = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]
CALL_ID = 3


@dataclass
class Server:
    """How to start one server and what to call on it."""

    label: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    call: dict[str, dict] | None = None
    """Per provider kind, the ``tools/call`` params that make one completion (``None``: tools/list only)."""


@dataclass
class Samples:
    tools_list_ms: list[float] = field(default_factory=list)
    tools_list_cpu_ms: list[float] = field(default_factory=list)
    first_answer_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    first_answer_cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    delayed_call_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    overhead_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})


def cpu_ms(pid: int) -> float:
    """The process's CPU time so far (user + system, all threads), from ``/proc/<pid>/stat`` (Linux; 10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def session(server: Server, kind: str | None = None, delay_s: float = 0.0) -> tuple[float, float | None, dict | None,
                                                                                   float, float | None]:
    """Start ``server`` once: (ms to the tools/list reply, ms to the call's reply or None, the call's result, the
    server's CPU ms at the tools/list reply, its CPU ms at the call's reply or None).

    With ``kind`` and no delay the call is written with the handshake (its time counts from the spawn); with a
    delay it is written ``delay_s`` after the ``initialize`` reply (its time counts from then).
    """
    call = None if kind is None or server.call is None else {
        "jsonrpc": "2.0", "id": CALL_ID, "method": "tools/call", "params": server.call[kind]}
    started = time.perf_counter()
    process = subprocess.Popen(server.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=server.env, cwd=server.cwd, text=True, bufsize=1)
    assert process.stdin is not None and process.stdout is not None
    try:
        messages = HANDSHAKE + ([call] if call is not None and delay_s == 0 else [])
        process.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
        process.stdin.flush()
        tools_list_ms = answer_ms = list_cpu = answer_cpu = None
        result = None
        call_sent = started
        while True:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{server.label} closed stdout early")
            reply = json.loads(line)
            now = time.perf_counter()
            if reply.get("id") == 1 and call is not None and delay_s > 0:
                time.sleep(max(0.0, delay_s - (time.perf_counter() - now)))
                call_sent = time.perf_counter()
                process.stdin.write(json.dumps(call) + "\n")
                process.stdin.flush()
            elif reply.get("id") == 2:
                tools_list_ms, list_cpu = (now - started) * 1000, cpu_ms(process.pid)
                if call is None:
                    break
            elif reply.get("id") == CALL_ID:
                answer_ms, answer_cpu = (now - call_sent) * 1000, cpu_ms(process.pid)
                result = reply.get("result") or {}
                if result.get("isError") or "error" in reply:
                    raise RuntimeError(f"{server.label}: the call failed: {reply}")
                if tools_list_ms is not None:
                    break
        process.stdin.close()
        process.wait(30)
        assert tools_list_ms is not None and list_cpu is not None
        return tools_list_ms, answer_ms, result, list_cpu, answer_cpu
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdin, process.stdout):
            if not stream.closed:
                stream.close()


def servers(folder: Path, upstream: Any, also: list[tuple[str, Path]]) -> list[Server]:
    openai_url, anthropic_url = upstream.openai_base_url, upstream.url
    config = folder / "config.toml"
    config.write_text(f'[[providers]]\nname = "gpt"\nkind = "openai"\nmodel = "gpt-sim"\nbase_url = "{openai_url}"\n'
                      f'priority = 1\n\n[[providers]]\nname = "claude"\nkind = "anthropic"\nmodel = "claude-sim"\n'
                      f'base_url = "{anthropic_url}"\npriority = 2\n')
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "XDG_DATA_HOME": str(folder),
                "XDG_CACHE_HOME": str(folder / "cache")}
    ask = {kind: {"name": "ask", "arguments": {"prompt": "hi", "kind": kind}} for kind in KINDS}
    orchestrate = {kind: {"name": "orchestrate", "arguments": {"prompt": "hi", "providers": [name]}}
                   for kind, name in (("openai", "gpt"), ("anthropic", "claude"))}
    found = [
        Server("hello", [sys.executable, str(REPO / "bench" / "hello_server.py")], base_env, REPO),
        Server("hello+sdk", [sys.executable, str(REPO / "bench" / "hello_sdk_server.py")],
               {**base_env, "HELLO_OPENAI_BASE_URL": openai_url, "HELLO_ANTHROPIC_BASE_URL": anthropic_url}, REPO,
               ask),
    ]
    for label, checkout in [("ours", REPO), *also]:
        data = folder / label
        data.mkdir()
        env = {**base_env, "PYTHONPATH": str(checkout), "XDG_DATA_HOME": str(data),
               "XDG_CACHE_HOME": str(data / "cache")}
        ours = [sys.executable, "-m", "server", "--config", str(config), "--log-level", "WARNING"]
        found.append(Server(label, ours, env, checkout, orchestrate))
        if label == "ours":
            found.append(Server("simple", [*ours, "--simple"], env, checkout))
    return found


def measure(servers_: list[Server], runs: int, delay_s: float) -> dict[str, Samples]:
    samples = {s.label: Samples() for s in servers_}
    for server in servers_:  # one discarded start each: bytecode and caches written, data directories filled
        session(server, KINDS[0] if server.call else None)
    jobs = [(s, None, 0.0) for s in servers_ if s.call is None]
    jobs += [(s, kind, 0.0) for s in servers_ if s.call for kind in KINDS]
    jobs += [(s, kind, delay_s) for s in servers_ if s.call for kind in KINDS] if delay_s > 0 else []
    for round_ in range(runs):
        shift = round_ % len(jobs)
        for server, kind, delay in jobs[shift:] + jobs[:shift]:
            tools_list_ms, answer_ms, result, list_cpu, answer_cpu = session(server, kind, delay)
            got = samples[server.label]
            if delay == 0:
                got.tools_list_ms.append(tools_list_ms)
                got.tools_list_cpu_ms.append(list_cpu)
            if kind is None or answer_ms is None:
                continue
            (got.delayed_call_ms if delay else got.first_answer_ms)[kind].append(answer_ms)
            if not delay and answer_cpu is not None:
                got.first_answer_cpu_ms[kind].append(answer_cpu)
            overhead = (result or {}).get("structuredContent", {}).get("overhead_ms")
            if overhead is not None and delay == 0:
                got.overhead_ms[kind].append(overhead)
        print(f"  round {round_ + 1}/{runs} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    return samples


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    p10, p90 = ordered[int(0.1 * (len(ordered) - 1))], ordered[int(0.9 * (len(ordered) - 1))]
    return f"{statistics.median(ordered):8.1f} ({p10:.0f}-{p90:.0f})"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(samples: dict[str, Samples], runs: int, delay_s: float, load_before: tuple[float, ...]) -> None:
    ours_labels = [label for label, s in samples.items() if s.first_answer_ms["openai"] and label != "hello+sdk"]
    hello = statistics.median(samples["hello"].tools_list_ms)
    with_sdk = statistics.median(samples["hello+sdk"].tools_list_ms)
    print(f"\nstart -> tools/list reply, ms: median (p10-p90) of {runs} starts"
          f"{' (x2: one per provider kind)' if samples['hello+sdk'].first_answer_ms['openai'] else ''}")
    for label, got in samples.items():
        median = statistics.median(got.tools_list_ms)
        target = ""
        if label in ours_labels:
            target = (f"  target <= 1.3x hello and <= 1.0x hello+sdk: "
                      f"{verdict(median <= 1.3 * hello and median <= with_sdk)}")
        print(f"  {label:<10} {spread(got.tools_list_ms)}  x hello {median / hello:5.2f}  "
              f"x hello+sdk {median / with_sdk:5.2f}  CPU {statistics.median(got.tools_list_cpu_ms):6.0f} ms{target}")
    for kind in KINDS:
        base = statistics.median(samples["hello+sdk"].first_answer_ms[kind])
        print(f"\nstart -> first answer through the {kind}-kind provider, ms (the call written with the handshake)")
        print(f"  {'hello+sdk':<10} {spread(samples['hello+sdk'].first_answer_ms[kind])}  "
              f"CPU {statistics.median(samples['hello+sdk'].first_answer_cpu_ms[kind]):6.0f} ms")
        for label in ours_labels:
            got = samples[label]
            median = statistics.median(got.first_answer_ms[kind])
            overhead = statistics.median(got.overhead_ms[kind]) if got.overhead_ms[kind] else float("nan")
            print(f"  {label:<10} {spread(got.first_answer_ms[kind])}  x hello+sdk {median / base:5.2f}  "
                  f"CPU {statistics.median(got.first_answer_cpu_ms[kind]):6.0f} ms  (overhead_ms reported: "
                  f"{overhead:.1f})  target <= 1.2x: {verdict(median <= 1.2 * base)}")
    if delay_s > 0:
        for kind in KINDS:
            base = statistics.median(samples["hello+sdk"].delayed_call_ms[kind])
            print(f"\nfirst call {delay_s:g} s after connecting, {kind}-kind provider, ms (the call's round trip)")
            print(f"  {'hello+sdk':<10} {spread(samples['hello+sdk'].delayed_call_ms[kind])}")
            for label in ours_labels:
                median = statistics.median(samples[label].delayed_call_ms[kind])
                print(f"  {label:<10} {spread(samples[label].delayed_call_ms[kind])}  {median - base:+7.1f} ms  "
                      f"target within 50 ms: {verdict(median - base <= 50)}")
    load_after = os.getloadavg()
    print(f"\nload average before: {' '.join(f'{v:.2f}' for v in load_before)}; after: "
          f"{' '.join(f'{v:.2f}' for v in load_after)} (1, 5, 15 min; {os.cpu_count()} CPUs)"
          f"{'' if max(load_before[0], load_after[0]) < 1 else ' -- not a quiet machine: ratios are noisy'}")


def versions() -> str:
    sys.path.insert(0, str(REPO))
    from server import __version__

    packages = ", ".join(f"{name} {metadata.version(name)}" for name in ("mcp", "openai", "anthropic", "pydantic"))
    return f"ai-orchestration-mcp {__version__}; Python {sys.version.split()[0]}; {packages}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--delay-s", type=float, default=3.0, help="when the delayed first call is made (0: none)")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=CHECKOUT",
                        help="also measure the server of another checkout of this project, in the same rounds")
    args = parser.parse_args()
    also = [(label, Path(path).resolve()) for label, _, path in (item.partition("=") for item in args.also)]
    load_before = os.getloadavg()
    print(f"versions: {versions()}")
    print(f"load average at the start: {' '.join(f'{v:.2f}' for v in load_before)}")
    sys.path.insert(0, str(REPO / "bench"))
    from overhead import external_upstream  # the simulator in its own process

    with tempfile.TemporaryDirectory(prefix="startup-bench-") as folder, external_upstream() as upstream:
        samples = measure(servers(Path(folder), upstream, also), args.runs, args.delay_s)
    report(samples, args.runs, args.delay_s, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
