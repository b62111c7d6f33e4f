"""Added latency of `orchestrate` with 1 and 10 providers and on fallback, next to LiteLLM's Router, in one run.

    python bench/pool.py [--calls 500] [--skip-litellm]

Upstream: the simulator in its own process (zero latency), as in bench/overhead.py. Every figure is an
added latency: a series minus its baseline of direct `openai` SDK calls to the same upstream, made in the
same process, interleaved call by call (baseline, measured, baseline, measured …).

Ours (this process, the project's environment): `orchestrate` through the in-memory MCP client, with
  - 1 provider;
  - 10 providers (kind openai, priorities 1..10, different names and models), so candidate selection
    runs over 10;
  - 10 providers whose first (priority 1, model `fail-503`) always answers 503: each call makes two
    upstream requests; its baseline is two sequential direct calls (a 503 with max_retries=0, then an ok).
    The circuit breaker is set so it never opens during the run (otherwise it would skip the failing
    provider after 5 calls and the fallback path would no longer be measured).
The setups are interleaved round by round too (each round starting one setup later), so drift on the machine
and whatever one call leaves behind hit them alike.

LiteLLM (a subprocess of its own venv, `<repo>/.cache/bench-litellm`, created on first use from PyPI):
`Router.acompletion` with the same setups — 1 deployment; 10 model groups with
`fallbacks=[{"sim-1": ["sim-2", …, "sim-10"]}]`; the same with the first group's model `fail-503` — all with
`num_retries=0`, cooldowns disabled for the failing setups (as our breaker is). Also one model group of 10
deployments with `order` 1..10 (LiteLLM's priority order, with order fallbacks), ok and failing-first.

Correctness is checked, not assumed: every call's answer says which provider/model answered, and the
upstream's own request log (reset before the timed rounds) must show exactly the expected requests per
model: one per call for the answering model and, in the fallback setups, one 503 per call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import REPO, external_upstream, pct  # noqa: E402  (also puts the repo on sys.path)

from mcp import Client  # noqa: E402
from mcp.server import MCPServer  # noqa: E402

from server.app.assembly import build_server, open_store  # noqa: E402
from server.config import Config  # noqa: E402

WARMUP_ROUNDS = 30
DIRECT_MODEL = "direct-model"
DIRECT_HEADER = {"x-bench": "direct"}  # marks baseline requests in the upstream's log
FAIL_MODEL = "fail-503"
LITELLM_VENV = REPO / ".cache" / "bench-litellm"
LABEL_WIDTH = 62


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


def check_counts(who: str, counts: Counter, expected: Counter) -> list[str]:
    """Lines describing the upstream's log; raises if it differs from what the setups should have sent."""
    if counts != expected:
        raise SystemExit(f"{who}: upstream requests differ from the expected ones\n"
                         f"  expected: {dict(sorted(expected.items()))}\n  seen:     {dict(sorted(counts.items()))}")
    return [f"  {model:<16} {outcome:<9} {n:6d}" for (model, outcome), n in sorted(counts.items())]


# -- ours ---------------------------------------------------------------------------------------------------

def providers(prefix: str, first_model: str | None = None, count: int = 10) -> list[dict]:
    """``count`` openai providers p1..pN, priorities 1..N, models ``<prefix>-m<k>`` (the first maybe replaced)."""
    return [{"name": f"p{k}", "kind": "openai", "priority": k,
             "model": first_model if k == 1 and first_model else f"{prefix}-m{k}"}
            for k in range(1, count + 1)]


async def measure_ours(calls: int, upstream, tmp: Path) -> tuple[dict[str, list[float]], list[str]]:
    import openai

    base_url = upstream.openai_base_url

    def config(members: list[dict], **routing) -> Config:
        return Config.model_validate({"providers": [{**m, "base_url": base_url} for m in members],
                                      "routing": routing})

    # name -> (config, expected answering provider, expected model, upstream requests per call)
    setups = {
        "1": (config(providers("o1", count=1)), "p1", "o1-m1", 1),
        "10": (config(providers("o10")), "p1", "o10-m1", 1),
        # The breaker counts failures over breaker_window_s and opens at breaker_min_calls: with a 1 s window
        # and 10,000 calls it never opens here, so every call goes through the failing provider first.
        "fallback": (config(providers("ofb", first_model=FAIL_MODEL), breaker_min_calls=10_000,
                            breaker_window_s=1.0), "p2", "ofb-m2", 2),
    }
    servers = {name: build_server(cfg, store_factory=lambda name=name: open_store(tmp / f"ours-{name}.db"))
               for name, (cfg, *_rest) in setups.items()}
    hello = MCPServer("hello")

    @hello.tool()
    async def echo(text: str) -> str:
        """Echo the text."""
        return text

    # MCPServer() set root logging to INFO; the pool logs every failed attempt at INFO (the CLI's --log-level).
    logging.getLogger().setLevel(logging.WARNING)

    direct_client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0,
                                       default_headers=DIRECT_HEADER)
    ask = {"prompt": "ping", "max_tokens": 16}

    async def direct() -> float:
        started = time.perf_counter()
        await direct_client.chat.completions.create(
            model=DIRECT_MODEL, messages=[{"role": "user", "content": "ping"}], max_tokens=16)
        return (time.perf_counter() - started) * 1000

    async def direct_pair() -> float:
        """A 503 (no SDK retry), then an ok call: what a fallback costs without any orchestration."""
        started = time.perf_counter()
        try:
            await direct_client.chat.completions.create(
                model=FAIL_MODEL, messages=[{"role": "user", "content": "ping"}], max_tokens=16)
        except openai.InternalServerError:
            pass
        else:
            raise AssertionError(f"{FAIL_MODEL} answered 200")
        await direct_client.chat.completions.create(
            model=DIRECT_MODEL, messages=[{"role": "user", "content": "ping"}], max_tokens=16)
        return (time.perf_counter() - started) * 1000

    async def orchestrate(client: Client, name: str) -> float:
        started = time.perf_counter()
        result = await client.call_tool("orchestrate", ask)
        elapsed = (time.perf_counter() - started) * 1000
        assert not result.is_error, result.content
        _, provider, model, attempts = setups[name]
        content = result.structured_content
        if content["provider"] != provider or len(content["attempts"]) != attempts or content["text"] != f"[{model}] ping":
            raise AssertionError(f"setup {name}: expected {provider} after {attempts} attempt(s), got "
                                 f"{content['provider']} after {content['attempts']}")
        return elapsed

    async def hello_call(client: Client) -> float:
        started = time.perf_counter()
        result = await client.call_tool("echo", {"text": "ping"})
        elapsed = (time.perf_counter() - started) * 1000
        assert not result.is_error, result.content
        return elapsed

    results: dict[str, list[float]] = {key: [] for key in (
        "direct 1", "1", "direct 10", "10", "direct pair", "fallback", "hello")}
    async with contextlib.AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(Client(server)) for name, server in servers.items()}
        hello_client = await stack.enter_async_context(Client(hello))

        # (baseline key, baseline, key, measured call); each round starts one step later than the previous one,
        # so whatever a call leaves behind (the store's writer thread, say) lands before every setup alike.
        steps = [("direct 1", direct, "1", lambda: orchestrate(clients["1"], "1")),
                 ("direct 10", direct, "10", lambda: orchestrate(clients["10"], "10")),
                 ("direct pair", direct_pair, "fallback", lambda: orchestrate(clients["fallback"], "fallback")),
                 (None, None, "hello", lambda: hello_call(hello_client))]

        async def one_round(index: int, record: bool) -> None:
            shift = index % len(steps)
            for base_key, baseline, key, call in steps[shift:] + steps[:shift]:
                base_ms = await baseline() if baseline is not None else None
                ms = await call()
                if record:
                    results[key].append(ms)
                    if base_key is not None:
                        results[base_key].append(base_ms)

        for index in range(WARMUP_ROUNDS):  # imports, connections, code paths
            await one_round(index, record=False)
        await anyio.to_thread.run_sync(upstream_reset, upstream.url)
        for index in range(calls):
            await one_round(index, record=True)
        counts = await anyio.to_thread.run_sync(upstream_counts, upstream.url)
    await direct_client.close()

    expected = Counter({("o1-m1", "answered"): calls, ("o10-m1", "answered"): calls,
                        (FAIL_MODEL, "error"): calls, ("ofb-m2", "answered"): calls})
    return results, check_counts("ours", counts, expected)


# -- LiteLLM, in its own venv --------------------------------------------------------------------------------

LITELLM_SCRIPT = r'''
import asyncio, json, sys, time, urllib.request
from collections import Counter
from importlib.metadata import version

cfg = json.loads(sys.argv[1])
base, url, calls, warmup = cfg["openai_base_url"], cfg["upstream_url"], cfg["calls"], cfg["warmup"]
DIRECT, FAIL, HEADER = cfg["direct_model"], cfg["fail_model"], cfg["direct_header"]

started_import = time.perf_counter()
import litellm, openai
from litellm import Router
import_s = time.perf_counter() - started_import


def deployment(group, model, **extra):
    return {"model_name": group,
            "litellm_params": {"model": "openai/" + model, "api_base": base, "api_key": "unused", **extra}}


def groups(prefix, first=None):
    """10 model groups sim-1..sim-10, one deployment each, sim-1 falling back to sim-2..sim-10 in order."""
    names = ["sim-%d" % k for k in range(1, 11)]
    model_list = [deployment(names[k - 1], first if k == 1 and first else "%s-m%d" % (prefix, k)) for k in range(1, 11)]
    return dict(model_list=model_list, fallbacks=[{"sim-1": names[1:]}])


def ordered(prefix, first=None):
    """One model group of 10 deployments with order 1..10 (lowest order first, order fallbacks after)."""
    return dict(model_list=[deployment("pool", first if k == 1 and first else "%s-m%d" % (prefix, k), order=k)
                            for k in range(1, 11)])


# name -> (router, model group to call, model expected to answer, failing first)
SETUPS = {
    "1": (Router(model_list=[deployment("sim-1", "l1-m1")], num_retries=0), "sim-1", "l1-m1", False),
    "10": (Router(**groups("l10"), num_retries=0), "sim-1", "l10-m1", False),
    "fallback": (Router(**groups("lfb", FAIL), num_retries=0, disable_cooldowns=True), "sim-1", "lfb-m2", True),
    "10 order": (Router(**ordered("lo"), num_retries=0), "pool", "lo-m1", False),
    "fallback order": (Router(**ordered("lofb", FAIL), num_retries=0, disable_cooldowns=True), "pool", "lofb-m2", True),
}
MESSAGES = [{"role": "user", "content": "ping"}]
direct_client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0, default_headers=HEADER)


async def direct():
    started = time.perf_counter()
    await direct_client.chat.completions.create(model=DIRECT, messages=MESSAGES, max_tokens=16)
    return (time.perf_counter() - started) * 1000


async def direct_pair():
    started = time.perf_counter()
    try:
        await direct_client.chat.completions.create(model=FAIL, messages=MESSAGES, max_tokens=16)
    except openai.InternalServerError:
        pass
    else:
        raise AssertionError(FAIL + " answered 200")
    await direct_client.chat.completions.create(model=DIRECT, messages=MESSAGES, max_tokens=16)
    return (time.perf_counter() - started) * 1000


async def routed(name):
    router, group, model, _ = SETUPS[name]
    started = time.perf_counter()
    response = await router.acompletion(model=group, messages=MESSAGES, max_tokens=16)
    elapsed = (time.perf_counter() - started) * 1000
    text = response.choices[0].message.content
    if text != "[%s] ping" % model:
        raise AssertionError("setup %s: expected the answer of %s, got %r" % (name, model, text))
    return elapsed


def http(path, data=None):
    request = urllib.request.Request(url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


async def main():
    results = {}
    for name, (_, _, _, failing) in SETUPS.items():
        results["direct pair " + name if failing else "direct " + name] = []
        results[name] = []

    names = list(SETUPS)

    async def one_round(index, record):
        shift = index % len(names)  # each round starts one setup later: position effects hit all alike
        for name in names[shift:] + names[:shift]:
            failing = SETUPS[name][3]
            key = "direct pair " + name if failing else "direct " + name
            base_ms = await (direct_pair() if failing else direct())
            ours_ms = await routed(name)
            if record:
                results[key].append(base_ms)
                results[name].append(ours_ms)

    for index in range(warmup):
        await one_round(index, False)
    http("/_sim/reset", b"{}")
    for index in range(calls):
        await one_round(index, True)
    seen = http("/_sim/requests")
    counts = Counter("%s|%s" % (r["model"], r["outcome"]) for r in seen if r["headers"].get("x-bench") != "direct")
    await direct_client.close()
    return {"series": results, "counts": dict(counts), "import_s": import_s,
            "versions": {"litellm": version("litellm"),
                         "openai": openai.__version__, "python": sys.version.split()[0]}}


out = asyncio.run(main())
with open(sys.argv[2], "w") as handle:
    json.dump(out, handle)
'''


def litellm_python() -> Path:
    """The venv's python, creating the venv and installing litellm + openai from PyPI when missing."""
    python = LITELLM_VENV / "bin" / "python"
    ready = LITELLM_VENV / ".bench-ready"
    if python.exists() and ready.exists():
        return python
    print(f"creating {LITELLM_VENV} and installing litellm, openai from PyPI (first run only) …",
          file=sys.stderr, flush=True)
    if LITELLM_VENV.exists():
        shutil.rmtree(LITELLM_VENV)  # a half-made venv from an interrupted run
    LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
    for command, timeout_s in (([shutil.which("python3") or sys.executable, "-m", "venv", str(LITELLM_VENV)], 300),
                               ([str(python), "-m", "pip", "install", "-q", "litellm", "openai"], 1800)):
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    ready.write_text("litellm + openai installed\n")
    return python


def measure_litellm(calls: int, upstream, tmp: Path) -> dict:
    python = litellm_python()
    script, out = tmp / "litellm_bench.py", tmp / "litellm_results.json"
    script.write_text(LITELLM_SCRIPT)
    cfg = {"openai_base_url": upstream.openai_base_url, "upstream_url": upstream.url, "calls": calls,
           "warmup": WARMUP_ROUNDS, "direct_model": DIRECT_MODEL, "fail_model": FAIL_MODEL,
           "direct_header": DIRECT_HEADER}
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("PYTHONPATH", None)
    # subprocess.run kills the child on timeout or on any exception (Ctrl-C included).
    done = subprocess.run([str(python), str(script), json.dumps(cfg), str(out)], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=180 + calls * 1.0)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"the LiteLLM half failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    result = json.loads(out.read_text())
    counts = Counter({tuple(key.split("|", 1)): n for key, n in result["counts"].items()})
    expected = Counter({("l1-m1", "answered"): calls, ("l10-m1", "answered"): calls,
                        ("lfb-m2", "answered"): calls, ("lo-m1", "answered"): calls,
                        ("lofb-m2", "answered"): calls, (FAIL_MODEL, "error"): 2 * calls})
    result["count_lines"] = check_counts("LiteLLM", counts, expected)
    return result


# -- report -------------------------------------------------------------------------------------------------

QS = (50, 95, 99)


def fmt_row(label: str, values: list[float]) -> str:
    return f"{label:<{LABEL_WIDTH}} " + " ".join(f"{v:8.3f}" for v in values)


def added(measured: list[float], baseline: list[float]) -> list[float]:
    return [pct(measured, q) - pct(baseline, q) for q in QS]


def report_block(title: str, series: dict[str, list[float]], rows: list[tuple[str, str, str]]) -> dict[str, list[float]]:
    """Print baseline, measured and added rows for each (key, baseline key, label); return added per key."""
    print(f"\n{title}")
    print(f"{'milliseconds':<{LABEL_WIDTH}} {'p50':>8} {'p95':>8} {'p99':>8}")
    out = {}
    for key, base_key, label in rows:
        base_label = "two direct calls, 503 then ok (baseline)" if "pair" in base_key else "direct openai SDK call (baseline)"
        print(fmt_row(base_label, [pct(series[base_key], q) for q in QS]))
        print(fmt_row(label, [pct(series[key], q) for q in QS]))
        out[key] = added(series[key], series[base_key])
        print(fmt_row(f"  = ADDED LATENCY, {label.split(', ', 1)[1]}", out[key]))
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}" if b > 0 else "   n/a"


async def measure(calls: int, skip_litellm: bool, tmp: Path) -> None:
    import openai

    with external_upstream() as upstream:
        ours, our_counts = await measure_ours(calls, upstream, tmp)
        theirs = None if skip_litellm else measure_litellm(calls, upstream, tmp)

    print(f"\n{calls} calls per series after {WARMUP_ROUNDS} warm-up rounds; zero-latency simulator in its own "
          f"process; setups interleaved round by round; milliseconds")
    ours_added = report_block(
        f"OURS: orchestrate via the in-memory MCP client (python {sys.version.split()[0]}, openai {openai.__version__})",
        ours, [("1", "direct 1", "orchestrate, 1 provider"),
               ("10", "direct 10", "orchestrate, 10 providers (priorities 1..10)"),
               ("fallback", "direct pair", "orchestrate, fallback: 10 providers, p1 answers 503 -> p2")])
    print(fmt_row("hello-world MCP tool, in memory (the MCP round trip alone)", [pct(ours["hello"], q) for q in QS]))
    print("upstream requests during the timed rounds (baselines excluded):")
    print("\n".join(our_counts))

    theirs_added = {}
    if theirs is not None:
        v = theirs["versions"]
        theirs_added = report_block(
            f"LITELLM: Router.acompletion, own venv (litellm {v['litellm']}, openai {v['openai']}, python {v['python']}; "
            f"import took {theirs['import_s']:.1f} s)",
            theirs["series"],
            [("1", "direct 1", "LiteLLM Router, 1 deployment"),
             ("10", "direct 10", "LiteLLM Router, 10 groups + fallbacks list"),
             ("fallback", "direct pair fallback", "LiteLLM Router, fallback: 10 groups, sim-1 503 -> sim-2"),
             ("10 order", "direct 10 order", "LiteLLM Router, 10 deployments in 1 group, order 1..10"),
             ("fallback order", "direct pair fallback order", "LiteLLM Router, fallback: order group, order 1 503 -> 2")])
        print("upstream requests during the timed rounds (baselines excluded):")
        print("\n".join(theirs["count_lines"]))

    print("\nSUMMARY: added latency over a direct openai SDK call in the same process, ms (p50 / p95)")
    print(f"{'setup':<40} {'ours p50':>9} {'p95':>7}   {'LiteLLM p50':>11} {'p95':>7}   {'ours/LiteLLM p50':>16}")
    names = {"1": "1 provider", "10": "10 providers", "fallback": "10 providers, first fails (fallback)"}
    for key, label in names.items():
        line = f"{label:<40} {ours_added[key][0]:9.3f} {ours_added[key][1]:7.3f}"
        if key in theirs_added:
            line += f"   {theirs_added[key][0]:11.3f} {theirs_added[key][1]:7.3f}   {ratio(ours_added[key][0], theirs_added[key][0]):>16}"
        print(line)
    if theirs_added:
        for key, label in (("10 order", "LiteLLM 10 deployments, order 1..10"),
                           ("fallback order", "LiteLLM order group, first fails")):
            print(f"{label:<40} {'':>9} {'':>7}   {theirs_added[key][0]:11.3f} {theirs_added[key][1]:7.3f}")
    r50, r95 = ratio(ours_added["10"][0], ours_added["1"][0]), ratio(ours_added["10"][1], ours_added["1"][1])
    verdict = "meets" if ours_added["1"][0] > 0 and ours_added["10"][0] / ours_added["1"][0] <= 1.5 else "MISSES"
    print(f"\nours: 10-provider / 1-provider added latency = {r50.strip()} at p50, {r95.strip()} at p95 "
          f"(target <= 1.5 at p50: {verdict})")
    if theirs_added:
        print(f"LiteLLM: 10-deployment / 1-deployment added latency = "
              f"{ratio(theirs_added['10'][0], theirs_added['1'][0]).strip()} at p50 (groups), "
              f"{ratio(theirs_added['10 order'][0], theirs_added['1'][0]).strip()} at p50 (order group)")
    print("note: ours includes the MCP round trip (see the hello-world row); LiteLLM's is an in-process library call.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--skip-litellm", action="store_true", help="measure ours only")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    with tempfile.TemporaryDirectory() as folder:
        anyio.run(measure, args.calls, args.skip_litellm, Path(folder))


if __name__ == "__main__":
    main()
