"""Pattern search and pattern reads with 10,000 patterns stored, through MCP and without it, in one run.

    python bench/knowledge.py [--patterns 10000] [--calls 1000]

Setup: a SQLite store (a file, WAL, as in full mode) holding the built-in library and generated patterns:
each drawn from one of ~400 topics, its description and a template of 100-500 words mixing the topic's words
with a Zipf-distributed vocabulary of generic instruction words (so a common word like "write" is in nearly
every template, a topic word in a few dozen), 1-4 variables, 1-3 tags; seeded, so every run stores the same
library. Then the server on that store, with two in-memory MCP clients connected at once: one in the
2026-07-28 era (the default) and one in the handshake era (what today's hosts speak).

Per iteration, interleaved (so drift and warm caches favour no series):
- the raw store search (`PatternStore.search_patterns`: the same SQL on the store's own thread, no registry, no
  MCP) — the baseline — then the `search_patterns` tool (limit 10) through each client;
- the raw store read (`PatternStore.get_pattern`) — the baseline — then reading `knowledge://patterns/{name}`
  through each client.
Queries cycle through eight kinds: one topic word, two, a generic word with a topic word, a sentence with
function words, a word half typed, one very common word (reported apart too), three topic words; every
fourth with a tag filter. Reads pick random names. Targets (issue 5): search p95 < 5 ms and resource read
p95 < 2 ms, in memory.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from mcp import Client

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "bench"))  # after the repo: bench/knowledge.py must not shadow the knowledge package

from harness import Figure, alternate, preamble, write_figures  # noqa: E402

from knowledge import PatternSpec  # noqa: E402
from knowledge.registry import search_terms  # noqa: E402
from server.app.assembly import build_server, open_dependencies, open_store  # noqa: E402
from server.config import Config  # noqa: E402

# A library of prompts looks like this: many patterns share the generic vocabulary of instructions (Zipf-like:
# a few words in most templates), while the words that say what a pattern is *about* are specific to a topic.
GENERIC = ("write answer list use include example step clear short format markdown output input text user task "
           "context question response explain describe keep make give provide check ensure follow rule section "
           "summary detail point item bullet table code file change issue problem solution result reason goal "
           "plan review test data value name type error case note first next last new current main key "
           "important simple specific concrete brief complete correct wrong missing add remove update compare "
           "group order rank score level high low good bad best worst risk impact cost time date version "
           "source reference link quote title heading paragraph sentence word tone style audience reader "
           "expert beginner team project product service system process method approach option decision "
           "criteria requirement constraint assumption question unknown open closed").split()
FILLER = "the a of to and in for with on as be is are this that it you your each any all or not".split()
TOPIC_WORDS = ("security threat model release notes database migration rollback incident postmortem kubernetes "
               "helm deploy terraform latency profile memory thread deadlock cache queue worker retry timeout "
               "encryption secret rotation audit privacy gdpr license compliance invoice budget forecast churn "
               "onboarding tutorial translate grammar changelog roadmap backlog sprint estimate interview hiring "
               "contract negotiation pricing marketing campaign newsletter seo accessibility frontend react "
               "android ios graphql grpc rest webhook oauth sso ldap firewall dns certificate tls proxy backup "
               "restore disaster recovery slo alert dashboard metric trace log etl warehouse dbt spark pandas "
               "regression forecasting classifier embedding fine-tuning evaluation benchmark dataset labeling "
               "annotation support ticket triage escalation refund shipping inventory supplier procurement "
               "legal clause policy risk register vendor assessment pentest vulnerability patch dependency "
               "upgrade python typescript rust golang java sql schema index query optimizer").split()


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    syllables = "ka lo mi ne ru ta vo shi pe dra kel mon tis gar ben ul os ix ar en".split()
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choices(syllables, k=rng.randint(2, 4))))
    return sorted(words)


def generate(count: int, seed: int = 5) -> tuple[list[PatternSpec], list[list[str]]]:
    """``count`` varied, valid pattern specs and the topics they were drawn from (deterministic for a seed)."""
    rng = random.Random(seed)
    domain = TOPIC_WORDS + _pseudo_words(rng, 1500)
    topics = [rng.sample(domain, rng.randint(3, 6)) for _ in range(max(1, count // 25))]
    zipf = [1 / (rank + 1) for rank in range(len(GENERIC))]

    def prose(topic: list[str], words: int, topical: float) -> str:
        out = []
        for _ in range(words):
            roll = rng.random()
            out.append(rng.choice(topic) if roll < topical else rng.choice(FILLER) if roll < topical + 0.25
                       else rng.choices(GENERIC, zipf)[0])
        return " ".join(out)

    specs = []
    for i in range(count):
        topic = rng.choice(topics)
        variables = [f"{rng.choice(GENERIC)}_{j}" for j in range(rng.randint(1, 4))]
        body = [prose(topic, rng.randint(25, 60), 0.12) + "." for _ in range(rng.randint(4, 8))]
        for j, variable in enumerate(variables):
            body.insert(min(j * 2 + 1, len(body)), f"{{{{ {variable} }}}}")
        name = "-".join(rng.sample(topic, min(2, len(topic))))
        specs.append(PatternSpec(
            name=f"{name}-{i:05d}"[-64:].strip("-"),
            description=prose(topic, rng.randint(8, 16), 0.35).capitalize() + ".",
            template="\n\n".join(body),
            metadata={"domain": rng.choice(TAGS), "tags": rng.sample(TAGS, rng.randint(1, 3))}))
    return specs, topics


TAGS = ("engineering security writing ops data ml product support legal finance design testing docs infra "
        "frontend backend mobile api review planning").split()


def queries(topics: list[list[str]], count: int, seed: int = 9) -> list[tuple[str, list[str]]]:
    """What callers search for: topic words, a topic word with a generic one, a sentence, a word half typed,
    a single very common word, some with a tag filter."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        topic = rng.choice(topics)
        kind = i % 8
        if kind == 0:
            query = rng.choice(topic)
        elif kind == 1:
            query = " ".join(rng.sample(topic, 2))
        elif kind == 2:
            query = f"{rng.choice(GENERIC[:30])} {rng.choice(topic)}"
        elif kind == 3:
            query = f"a pattern to {rng.choice(GENERIC[:30])} the {rng.choice(topic)} for {rng.choice(topic)}"
        elif kind == 4:
            query = rng.choice(topic)[:4]
        elif kind == 5:
            query = rng.choice(GENERIC[:10])  # one of the most common words: matches most of the library
        else:
            query = " ".join(rng.sample(topic, min(3, len(topic))))
        out.append((query, [rng.choice(TAGS)] if i % 4 == 3 else []))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(name: str, values: list[float]) -> str:
    return f"{name:<62} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {pct(values, 99):8.3f}"


async def search_mcp(client: Client, query: str, tags: list[str]) -> None:
    result = await client.call_tool("search_patterns", {"query": query, "tags": tags, "limit": 10})
    assert not result.is_error, result.content


async def read_mcp(client: Client, name: str) -> None:
    result = await client.read_resource(f"knowledge://patterns/{name}")
    assert name in result.contents[0].text


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def measure(patterns: int, calls: int, folder: Path) -> list[Figure]:
    path = folder / "knowledge.db"
    config = Config.model_validate({"providers": []})
    print(f"storing {patterns:,} patterns …", flush=True)
    started = time.perf_counter()
    async with open_dependencies(config, store_factory=lambda: open_store(path)) as deps:
        await deps.readiness.wait()  # the stored state, as a server loads it after its first request
        specs, topics = generate(patterns)
        for spec in specs:
            await deps.patterns.register(spec)
    stored_s = time.perf_counter() - started

    async with open_dependencies(config, store_factory=lambda: open_store(path)) as deps:
        await deps.readiness.wait()
        rng = random.Random(7)
        names = [p.name for p in await deps.patterns.all()]
        started = time.perf_counter()
        mcp = build_server(config, store_factory=lambda: deps.store, shared=deps)
        async with Client(mcp):
            start_ms = (time.perf_counter() - started) * 1000
        results: dict[str, list[float]] = {}
        async with Client(mcp) as modern, Client(mcp, mode="legacy") as legacy:
            clients = {c.protocol_version: c for c in (modern, legacy)}
            for phase, n, seed in (("warm-up", 200, 3), ("timed", calls, 9)):
                # Interleaved per query, the order rotating query by query (baseline first, then each era first
                # in turn), so drift and warm caches favour no series.
                for i, (query, tags) in enumerate(queries(topics, n, seed=seed)):
                    name = rng.choice(names)
                    searches = [("store search", lambda: deps.store.patterns.search_patterns(search_terms(query), tags, 10))]
                    searches += [(f"search_patterns {era}", lambda c=client: search_mcp(c, query, tags))
                                 for era, client in clients.items()]
                    reads = [("store read", lambda: deps.store.patterns.get_pattern(name))]
                    reads += [(f"resource read {era}", lambda c=client: read_mcp(c, name)) for era, client in clients.items()]
                    timings = {}
                    for key, call in alternate(i, searches) + alternate(i, reads):
                        timings[key] = await timed(call)
                    if phase == "timed":
                        for key, value in timings.items():
                            results.setdefault(key, []).append(value)
                            if i % 8 == 5 and "search" in key:
                                results.setdefault(f"{key}, one common word", []).append(value)
            eras = list(clients)

    print(f"\n{patterns:,} patterns in SQLite (stored in {stored_s:.1f} s; the server starts with them in "
          f"{start_ms:.0f} ms, prompts and resources included); {calls} calls per series, interleaved; milliseconds")
    print(f"{'':<62} {'p50':>8} {'p95':>8} {'p99':>8}")
    verdicts = []
    for baseline, ours, label, target in (
            ("store search", "search_patterns", "search_patterns tool", 5.0),
            ("store search, one common word", "search_patterns {era}, one common word",
             "  of which one-common-word queries (1 in 8)", None),
            ("store read", "resource read", "knowledge://patterns/{name} read", 2.0)):
        base = results[baseline]
        print(row(f"raw {baseline} (baseline: the store, no MCP)", base))
        for era in eras:
            key = ours.format(era=era) if "{era}" in ours else f"{ours} {era}"
            measured = results[key]
            print(row(f"{label}, MCP {era}", measured))
            added = [pct(measured, q) - pct(base, q) for q in (50, 95, 99)]
            print(f"{'  added by the MCP layer':<62} {added[0]:8.3f} {added[1]:8.3f} {added[2]:8.3f}")
            if target is not None:
                verdicts.append(f"{label} ({era}): p95 {pct(measured, 95):.2f} ms, target < {target:g} ms: "
                                f"{'met' if pct(measured, 95) < target else 'NOT MET'}")
    print("\n" + "\n".join(verdicts))
    return [Figure("knowledge", f"{label}, MCP {era}, p95", pct(results[f"{key} {era}"], 95), pct(results[base], 95),
                   "ms", "<=", target) for key, base, label, target in (
                ("search_patterns", "store search", "search_patterns", 5.0),
                ("resource read", "store read", "pattern resource read", 2.0)) for era in eras]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--json", help="write the headline figures here (for bench/run_all.py)")
    args = parser.parse_args()
    preamble("bench/knowledge.py: pattern search and reads through MCP beside the raw store")
    with tempfile.TemporaryDirectory() as folder:
        figures = anyio.run(measure, args.patterns, args.calls, Path(folder))
    write_figures(args.json, figures)


if __name__ == "__main__":
    main()
