"""Added latency of the pool with 1 and 10 providers and on fallback, like with like beside LiteLLM's Router
(both called in-process, no MCP), and ours through an MCP round trip too, in one run.

    python bench/pool.py [--calls 500] [--rounds 4] [--skip-litellm] [--json OUT]

Upstream: the simulator in its own process (zero latency), shared by every process of the run. Every figure is
an added latency: a series minus its baseline of direct openai SDK calls to the same upstream, made in the same
process, paired call by call, the pair's order alternating from round to round. Each side's baseline is the SDK
request that side makes, so the figure is its own layers: ours the SDK's raw request with the reply's JSON read
(what our providers send, :func:`overhead.direct_chat`), LiteLLM the typed ``chat.completions.create`` (what
its Router calls).

The two sides run in alternating processes (``--rounds`` of each, in the order ours, LiteLLM, LiteLLM, ours, …),
each process doing ``--calls / --rounds`` measured rounds after 30 warm-up rounds, its setups in a fresh seeded
order each round (so no setup always follows the same one). Per-process samples are pooled per series.

Ours (a process of the project's environment, a SQLite store recording every attempt):
- in-process: ``ProviderPool.complete`` (policy, routing, fallback, recording; what ``orchestrate`` calls), the
  like-with-like peer of ``Router.acompletion``;
- through MCP: the ``orchestrate`` tool over the in-memory MCP client (adds the MCP round trip, the tool's
  argument validation, the conversation turn it stores and the result it returns);
with 1 provider; 10 providers (kind openai, priorities 1..10); 10 whose first (model ``fail-503``) always
answers 503, so each call makes two upstream requests (its baseline: two direct calls, a 503 then an ok). The
circuit breaker is set so that it never opens during the run.

LiteLLM (``bench/litellm_router.py`` in the venv of the ``[litellm]`` pins of
``bench/requirements-baselines.txt``): the same setups, plus one group of 10 deployments with ``order`` 1..10.

Correctness is checked, not assumed: every answer names the model that gave it, and the upstream's request log
(reset before each process's timed rounds) must show exactly the expected requests per model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH, Figure, alternate, baseline_python, preamble, versions, write_figures  # noqa: E402
from overhead import REPO, direct_chat, external_upstream, pct  # noqa: E402  (also puts the repo on sys.path)

WARMUP_ROUNDS = 30
DIRECT_MODEL = "direct-model"
DIRECT_HEADER = {"x-bench": "direct"}  # marks baseline requests in the upstream's log
FAIL_MODEL = "fail-503"
LABEL_WIDTH = 66
QS = (50, 95, 99)


# -- the upstream's request log -----------------------------------------------------------------------------

def upstream_reset(url: str) -> None:
    request = urllib.request.Request(url + "/_sim/reset", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def upstream_counts(url: str) -> Counter:
    """Completion requests seen since the last reset, not sent by a baseline: (model, outcome) -> count."""
    with urllib.request.urlopen(url + "/_sim/requests", timeout=30) as reply:
        seen = json.loads(reply.read())
    return Counter((r["model"], r["outcome"]) for r in seen if r["headers"].get("x-bench") != "direct")


def check_counts(who: str, counts: Counter, expected: Counter) -> None:
    if counts != expected:
        raise SystemExit(f"{who}: upstream requests differ from the expected ones\n"
                         f"  expected: {dict(sorted(expected.items()))}\n  seen:     {dict(sorted(counts.items()))}")


# -- ours, in a process of its own ----------------------------------------------------------------------------

def providers(prefix: str, first_model: str | None = None, count: int = 10) -> list[dict]:
    """``count`` openai providers p1..pN, priorities 1..N, models ``<prefix>-m<k>`` (the first maybe replaced)."""
    return [{"name": f"p{k}", "kind": "openai", "priority": k,
             "model": first_model if k == 1 and first_model else f"{prefix}-m{k}"}
            for k in range(1, count + 1)]


async def measure_ours(calls: int, base_url: str, upstream_url: str, tmp: Path) -> dict[str, list[float]]:
    import anyio
    import openai
    from mcp import Client
    from mcp.server import MCPServer

    from server.app.assembly import build_server, open_dependencies, open_store
    from server.config import Config
    from server.pool.providers import CompletionRequest, Message

    def config(members: list[dict], **routing) -> Config:
        return Config.model_validate({"providers": [{**m, "base_url": base_url} for m in members],
                                      "routing": routing})

    # The breaker counts failures over breaker_window_s and opens at breaker_min_calls: with a 1 s window and
    # 10,000 calls it never opens here, so every call goes through the failing provider first.
    never_open = {"breaker_min_calls": 10_000, "breaker_window_s": 1.0}
    # name -> (config, expected answering provider, expected model, attempts per call)
    setups = {}
    for side in ("o", "x"):  # o: in-process pool, x: orchestrate over MCP (distinct models in the upstream's log)
        setups[f"{side} 1"] = (config(providers(f"{side}1", count=1)), "p1", f"{side}1-m1", 1)
        setups[f"{side} 10"] = (config(providers(f"{side}10")), "p1", f"{side}10-m1", 1)
        setups[f"{side} fallback"] = (config(providers(f"{side}fb", first_model=FAIL_MODEL), **never_open),
                                      "p2", f"{side}fb-m2", 2)
    hello = MCPServer("hello")

    @hello.tool()
    async def echo(text: str) -> str:
        """Echo the text."""
        return text

    # MCPServer() set root logging to INFO; the pool logs every failed attempt at INFO (the CLI's --log-level).
    logging.getLogger().setLevel(logging.WARNING)
    direct_client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0,
                                       default_headers=DIRECT_HEADER)
    messages = [{"role": "user", "content": "ping"}]
    request = CompletionRequest(messages=(Message("user", "ping"),), max_tokens=16)

    async def direct() -> float:
        started = time.perf_counter()
        await direct_chat(direct_client, DIRECT_MODEL, messages, 16)
        return (time.perf_counter() - started) * 1000

    async def direct_pair() -> float:
        """A 503 (no SDK retry), then an ok call: what a fallback costs without any orchestration."""
        started = time.perf_counter()
        try:
            await direct_chat(direct_client, FAIL_MODEL, messages, 16)
        except openai.InternalServerError:
            pass
        else:
            raise AssertionError(f"{FAIL_MODEL} answered 200")
        await direct_chat(direct_client, DIRECT_MODEL, messages, 16)
        return (time.perf_counter() - started) * 1000

    def expect(name: str, provider: str | None, attempts: int, text: str) -> None:
        _, want_provider, model, want_attempts = setups[name]
        if (provider, attempts, text) != (want_provider, want_attempts, f"[{model}] ping"):
            raise AssertionError(f"setup {name}: expected {want_provider} after {want_attempts} attempt(s) with "
                                 f"[{model}] ping, got {provider} after {attempts}: {text!r}")

    async def in_process(pool, name: str) -> float:
        started = time.perf_counter()
        completion = await pool.complete(request)
        elapsed = (time.perf_counter() - started) * 1000
        expect(name, completion.provider, len(completion.attempts), completion.text)
        return elapsed

    async def over_mcp(client: Client, name: str) -> float:
        started = time.perf_counter()
        result = await client.call_tool("orchestrate", {"prompt": "ping", "max_tokens": 16})
        elapsed = (time.perf_counter() - started) * 1000
        assert not result.is_error, result.content
        content = result.structured_content
        expect(name, content["provider"], len(content["attempts"]), content["text"])
        return elapsed

    async def hello_call(client: Client) -> float:
        started = time.perf_counter()
        result = await client.call_tool("echo", {"text": "ping"})
        elapsed = (time.perf_counter() - started) * 1000
        assert not result.is_error, result.content
        return elapsed

    results: dict[str, list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        steps = []  # (baseline key, baseline, key, measured call)
        for name, (cfg, *_rest) in setups.items():
            store = (lambda name=name: open_store(tmp / f"{name.replace(' ', '-')}.db"))
            baseline, base_key = (direct_pair, "direct pair") if "fallback" in name else (direct, "direct")
            if name.startswith("o "):
                deps = await stack.enter_async_context(open_dependencies(cfg, store_factory=store))
                await deps.readiness.wait()  # loaded before the timed rounds, as after a server's first request
                call = (lambda pool=deps.pool, name=name: in_process(pool, name))
            else:
                client = await stack.enter_async_context(Client(build_server(cfg, store_factory=store)))
                call = (lambda client=client, name=name: over_mcp(client, name))
            steps.append((f"{base_key} {name}", baseline, name, call))
        hello_client = await stack.enter_async_context(Client(hello))
        steps.append((None, None, "hello", lambda: hello_call(hello_client)))
        for base_key, _, key, _ in steps:
            results[key] = []
            if base_key:
                results[base_key] = []

        async def one_round(index: int, record: bool) -> None:
            # A fresh seeded order each round: with a rotation, each setup would always follow the same one (and
            # whatever that one leaves behind, an MCP server's store writes, say, would always tax the same setup).
            for base_key, baseline, key, call in random.Random(index).sample(steps, len(steps)):
                pair = [(key, call)] + ([(base_key, baseline)] if baseline else [])
                for series, run in alternate(index, pair):  # the pair's order alternates round by round
                    ms = await run()
                    if record:
                        results[series].append(ms)

        for index in range(WARMUP_ROUNDS):  # imports, connections, code paths
            await one_round(index, record=False)
        await anyio.to_thread.run_sync(upstream_reset, upstream_url)
        for index in range(calls):
            await one_round(index, record=True)
        counts = await anyio.to_thread.run_sync(upstream_counts, upstream_url)
    await direct_client.close()
    expected = Counter({(model, "answered"): calls for _, _, model, _ in setups.values()})
    expected[(FAIL_MODEL, "error")] = 2 * calls
    check_counts("ours", counts, expected)
    return results


def child(cfg_json: str, out: str) -> None:
    import anyio

    cfg = json.loads(cfg_json)
    with tempfile.TemporaryDirectory() as folder:
        series = anyio.run(measure_ours, cfg["calls"], cfg["openai_base_url"], cfg["upstream_url"], Path(folder))
    Path(out).write_text(json.dumps({"series": series}))


# -- the run: alternating processes ----------------------------------------------------------------------------

def run_process(side: str, calls: int, upstream, tmp: Path, index: int) -> dict:
    cfg = {"openai_base_url": upstream.openai_base_url, "upstream_url": upstream.url, "calls": calls,
           "warmup": WARMUP_ROUNDS, "direct_model": DIRECT_MODEL, "fail_model": FAIL_MODEL,
           "direct_header": DIRECT_HEADER}
    out = tmp / f"{side}-{index}.json"
    env = {**os.environ}
    if side == "ours":
        command = [sys.executable, __file__, "--child", json.dumps(cfg), str(out)]
    else:
        command = [str(baseline_python("litellm")), str(BENCH / "litellm_router.py"), json.dumps(cfg), str(out)]
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network fetch of the price map
        env.pop("PYTHONPATH", None)
    started = time.perf_counter()
    # subprocess.run kills the child on timeout or on any exception (Ctrl-C included).
    done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=300 + calls * 2.0)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"the {side} process failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    result = json.loads(out.read_text())
    if side == "litellm":
        counts = Counter({tuple(key.split("|", 1)): n for key, n in result["counts"].items()})
        expected = Counter({(m, "answered"): calls for m in ("l1-m1", "l10-m1", "lfb-m2", "lo-m1", "lofb-m2")})
        expected[(FAIL_MODEL, "error")] = 2 * calls
        check_counts("LiteLLM", counts, expected)
    print(f"  process {index + 1}: {side:<7} {calls} rounds in {time.perf_counter() - started:5.1f} s"
          + (f" (LiteLLM import {result['import_s']:.1f} s)" if "import_s" in result else ""), flush=True)
    return result["series"]


def fmt_row(label: str, values: list[float]) -> str:
    return f"{label:<{LABEL_WIDTH}} " + " ".join(f"{v:8.3f}" for v in values)


def added(series: dict[str, list[float]], key: str, base_key: str) -> list[float]:
    return [pct(series[key], q) - pct(series[base_key], q) for q in QS]


def block(title: str, series: dict[str, list[float]], rows: list[tuple[str, str, str]]) -> dict[str, list[float]]:
    """Print baseline, measured and added rows for each (key, baseline key, label); return added per key."""
    print(f"\n{title}")
    print(f"{'milliseconds':<{LABEL_WIDTH}} {'p50':>8} {'p95':>8} {'p99':>8}")
    out = {}
    for key, base_key, label in rows:
        base_label = "two direct calls, 503 then ok (baseline)" if "pair" in base_key else "direct openai SDK call (baseline)"
        print(fmt_row(base_label, [pct(series[base_key], q) for q in QS]))
        print(fmt_row(label, [pct(series[key], q) for q in QS]))
        out[key] = added(series, key, base_key)
        print(fmt_row("  = ADDED LATENCY", out[key]))
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="measured calls per series, over all processes")
    parser.add_argument("--rounds", type=int, default=4, help="processes per side, alternating")
    parser.add_argument("--skip-litellm", action="store_true", help="measure ours only")
    parser.add_argument("--json", help="write the headline figures here (for bench/run_all.py)")
    args = parser.parse_args()
    if args.calls < args.rounds or args.rounds < 1:
        parser.error("--rounds must be at least 1 and --calls at least --rounds")
    litellm = None if args.skip_litellm else baseline_python("litellm")
    preamble("bench/pool.py: the pool in-process beside LiteLLM's Router in-process, and over MCP",
             {} if litellm is None else {"LiteLLM side": litellm})
    per_process = args.calls // args.rounds
    sides = ["ours"] if litellm is None else ["ours", "litellm"]
    pooled: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    with tempfile.TemporaryDirectory() as folder, external_upstream() as upstream:
        index = 0
        for round_ in range(args.rounds):
            for side in alternate(round_, sides):
                for key, values in run_process(side, per_process, upstream, Path(folder), index).items():
                    pooled[side].setdefault(key, []).extend(values)
                index += 1
    print(f"\n{per_process * args.rounds} calls per series ({args.rounds} alternating processes per side, "
          f"{WARMUP_ROUNDS} warm-up rounds each); zero-latency simulator in its own process; milliseconds")
    ours = pooled["ours"]
    labels = {"1": "1 provider", "10": "10 providers (priorities 1..10)",
              "fallback": "fallback: 10 providers, p1 answers 503 -> p2"}
    base_of = {"1": "direct", "10": "direct", "fallback": "direct pair"}
    ours_in = block("OURS, in-process: ProviderPool.complete (no MCP)", ours,
                    [(f"o {k}", f"{base_of[k]} o {k}", f"pool.complete, {v}") for k, v in labels.items()])
    ours_mcp = block("OURS, through MCP: orchestrate via the in-memory MCP client", ours,
                     [(f"x {k}", f"{base_of[k]} x {k}", f"orchestrate, {v}") for k, v in labels.items()])
    print(fmt_row("hello-world MCP tool, in memory (the MCP round trip alone)", [pct(ours["hello"], q) for q in QS]))
    theirs: dict[str, list[float]] = {}
    if litellm is not None:
        v = versions(litellm)
        theirs = block(f"LITELLM, in-process: Router.acompletion (litellm {v.get('litellm')}, openai {v.get('openai')})",
                       pooled["litellm"],
                       [("1", "direct 1", "Router, 1 deployment"),
                        ("10", "direct 10", "Router, 10 groups + fallbacks list"),
                        ("fallback", "direct pair fallback", "Router, fallback: 10 groups, sim-1 503 -> sim-2"),
                        ("10 order", "direct 10 order", "Router, 10 deployments in 1 group, order 1..10"),
                        ("fallback order", "direct pair fallback order", "Router, fallback: order group, 1 503 -> 2")])
    print("\nSUMMARY: added latency over a direct openai SDK call in the same process, ms, p50 (p95)")
    print(f"{'setup':<40} {'ours in-process':>16} {'LiteLLM':>16} {'ours/LiteLLM':>13} {'ours via MCP':>16}")
    figures = []
    for key, label in labels.items():
        mine, mcp = ours_in[f"o {key}"], ours_mcp[f"x {key}"]
        line = f"{label.split(' (')[0]:<40} {mine[0]:7.3f} ({mine[1]:6.3f})"
        if theirs:
            ratio = mine[0] / theirs[key][0] if theirs[key][0] > 0 else float("nan")
            line += f" {theirs[key][0]:7.3f} ({theirs[key][1]:6.3f}) {ratio:13.2f}"
            figures.append(Figure("pool", f"added p50 in-process, {label.split(' (')[0]}, vs LiteLLM Router",
                                  mine[0], theirs[key][0], "ms", "<=", 0.25, on_ratio=True))
        else:
            line += f" {'':>16} {'':>13}"
        print(line + f" {mcp[0]:7.3f} ({mcp[1]:6.3f})")
    r10 = ours_in["o 10"][0] / ours_in["o 1"][0] if ours_in["o 1"][0] > 0 else float("nan")
    print(f"\nours in-process: 10-provider / 1-provider added latency at p50 = {r10:.2f} (target <= 1.5)")
    figures.append(Figure("pool", "added p50 through MCP, 1 provider", ours_mcp["x 1"][0], None, "ms", "<=", 1.0))
    write_figures(args.json, figures)


if __name__ == "__main__":
    main()
