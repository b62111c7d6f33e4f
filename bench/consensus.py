"""Wall time of `consensus` over five providers next to the same five calls made directly, in one run.

    python bench/consensus.py [--calls 50]

Upstream: the simulator in its own process, scripted so that models `m50`, `m100`, `m150`, `m200`, `m250`
answer after 50, 100, 150, 200 and 250 ms. Five providers (kind openai), one per model.

Baseline: the five calls made directly and concurrently with the `openai` SDK (one `AsyncOpenAI` client,
`asyncio.gather`), wall time from the first request to the last answer; and, for the early-stop case, the
direct latency of the third-fastest model's call (`m150`) alone, measured in the same rounds.

Ours: the `consensus` tool through the in-memory MCP client with a real SQLite store, `method="vote"`,
`choices=["Paris", "Lyon"]`:
  - all must answer: every model says Paris and `threshold=1.0`, so the outcome is settled only by the last
    answer. Target: wall time at most 1.05x the direct concurrent wall time.
  - early stop: the three fastest say Paris and the two slowest Lyon, `threshold=0.6`; once three agree the
    two slow calls cannot overturn the outcome and are cancelled. Target: wall time at most the third-fastest
    latency + 10 ms.
Rounds interleave the series (direct, ours, direct-third, ours-early …) so drift hits them alike. Every
result is checked (status, answer, agreement, early_stop), and in the early-stop series the upstream's log
must show the two slow calls ending with the client closing the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, preamble, write_figures  # noqa: E402
from overhead import external_upstream, pct  # noqa: E402  (also puts the repo on sys.path)

from mcp import Client  # noqa: E402

from server.app.assembly import build_server, open_store  # noqa: E402
from server.config import Config  # noqa: E402

LATENCIES_MS = (50, 100, 150, 200, 250)
MODELS = [f"m{ms}" for ms in LATENCIES_MS]
WARMUP_ROUNDS = 3


def post(url: str, body: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def script(upstream_url: str, answers: dict[str, str]) -> None:
    post(upstream_url + "/_sim/reset", {})
    for model, ms in zip(MODELS, LATENCIES_MS, strict=True):
        post(upstream_url + "/_sim/script", {"model": model, "repeat": True,
                                             "behaviours": [{"latency_s": ms / 1000, "text": answers[model]}]})


def outcomes(upstream_url: str) -> Counter:
    with urllib.request.urlopen(upstream_url + "/_sim/requests", timeout=30) as reply:
        return Counter((r["model"], r["outcome"]) for r in json.loads(reply.read()))


async def measure(calls: int, tmp: Path) -> list[Figure]:
    import openai

    with external_upstream() as upstream:
        config = Config.model_validate({
            "providers": [{"name": model, "kind": "openai", "model": model, "base_url": upstream.openai_base_url}
                          for model in MODELS],
        })
        direct_client = openai.AsyncOpenAI(base_url=upstream.openai_base_url, api_key="unused", max_retries=0)

        async def direct_one(model: str) -> None:
            await direct_client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=16)

        third_of_five: list[float] = []

        async def direct_all() -> float:
            started = time.perf_counter()
            done: list[float] = []

            async def one(model: str) -> None:
                await direct_one(model)
                done.append((time.perf_counter() - started) * 1000)

            await asyncio.gather(*(one(m) for m in MODELS))
            third_of_five.append(done[2])
            return (time.perf_counter() - started) * 1000

        async def direct_third() -> float:
            started = time.perf_counter()
            await direct_one(MODELS[2])
            return (time.perf_counter() - started) * 1000

        server = build_server(config, store_factory=lambda: open_store(tmp / "bench.db"))
        async with Client(server) as client:
            async def ours(threshold: float, expect_early: bool) -> float:
                started = time.perf_counter()
                result = await client.call_tool("consensus", {
                    "prompt": "Capital of France?", "providers": MODELS, "method": "vote",
                    "choices": ["Paris", "Lyon"], "threshold": threshold, "max_tokens": 16})
                elapsed = (time.perf_counter() - started) * 1000
                out = result.structured_content
                assert not result.is_error, result.content[0].text
                assert (out["status"], out["answer"], out["early_stop"]) == ("consensus", "Paris", expect_early), out
                return elapsed

            series: dict[str, list[float]] = {k: [] for k in ("direct_all", "ours_all", "direct_third", "ours_early")}
            series["third_of_five"] = third_of_five
            for phase, answers in (("all", dict.fromkeys(MODELS, "Paris")),
                                   ("early", {m: "Paris" if i < 3 else "Lyon" for i, m in enumerate(MODELS)})):
                script(upstream.url, answers)
                for round_ in range(WARMUP_ROUNDS + calls):
                    if phase == "all":
                        pair = (("direct_all", direct_all), ("ours_all", lambda: ours(1.0, False)))
                    else:
                        pair = (("direct_third", direct_third), ("ours_early", lambda: ours(0.6, True)))
                    for name, run in (pair if round_ % 2 == 0 else pair[::-1]):
                        value = await run()
                        if round_ >= WARMUP_ROUNDS:
                            series[name].append(value)
                        elif name == "direct_all":
                            third_of_five.pop()
                if phase == "early":
                    await anyio.sleep(0.5)  # let the upstream finish logging the cancelled calls
                    seen = outcomes(upstream.url)
                    cancelled = seen[("m200", "client_closed")] + seen[("m250", "client_closed")]
                    assert cancelled >= 2 * calls, f"slow calls were not cancelled: {seen}"
        await direct_client.close()

    print(f"consensus over 5 providers answering in {', '.join(map(str, LATENCIES_MS))} ms; "
          f"{calls} calls per series, wall ms")
    print(f"{'series':<52} {'p50':>8} {'p95':>8}")
    for name, label in (("direct_all", "direct: 5 concurrent calls, all answers"),
                        ("ours_all", "consensus: all must answer (threshold 1.0)"),
                        ("direct_third", "direct: the third-fastest call (150 ms) alone"),
                        ("third_of_five", "direct: third answer of the 5 concurrent calls"),
                        ("ours_early", "consensus: threshold 0.6, three fastest agree")):
        print(f"{label:<52} {pct(series[name], 50):8.1f} {pct(series[name], 95):8.1f}")
    for q in (50, 95):
        ratio = pct(series["ours_all"], q) / pct(series["direct_all"], q)
        margins = [pct(series["ours_early"], q) - pct(series[k], q) for k in ("direct_third", "third_of_five")]
        print(f"p{q}: all-answer ratio {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}); "
              f"early stop minus third-fastest: {margins[0]:+.1f} ms alone, {margins[1]:+.1f} ms in the five "
              f"(target <= +10: {'met' if margins[0] <= 10 else 'NOT met'} / {'met' if margins[1] <= 10 else 'NOT met'})")
    return [Figure("consensus", "all-answer wall time p50, ours / direct", pct(series["ours_all"], 50),
                   pct(series["direct_all"], 50), "ms", "<=", 1.05, on_ratio=True),
            Figure("consensus", "early stop after the lone third-fastest call, p50",
                   pct(series["ours_early"], 50) - pct(series["direct_third"], 50), pct(series["direct_third"], 50),
                   "ms", "<=", 10.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--json", help="write the headline figures here (for bench/run_all.py)")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    preamble("bench/consensus.py: consensus wall time beside the same calls made directly")
    with tempfile.TemporaryDirectory() as tmp:
        figures = anyio.run(measure, args.calls, Path(tmp))
    write_figures(args.json, figures)


if __name__ == "__main__":
    main()
