"""The LiteLLM half of bench/pool.py: `Router.acompletion` in-process, run by the pinned LiteLLM venv's python.

    <litellm venv>/bin/python bench/litellm_router.py CONFIG_JSON OUT_JSON

Not imported by the project (its venv has no project code). Setups, as ours in bench/pool.py: 1 deployment;
10 model groups with ``fallbacks=[{"sim-1": ["sim-2", …, "sim-10"]}]``; the same with the first group's model
``fail-503``; one model group of 10 deployments with ``order`` 1..10 (LiteLLM's priority order), ok and
failing-first. All with ``num_retries=0``; cooldowns disabled in the failing setups (as our breaker is held
open-proof there). Each measured call is paired with its direct openai SDK baseline in the same process, the
pair's order alternating round by round, the setups in a fresh seeded order each round; the upstream's request log is returned for checking.
"""

import asyncio
import json
import random
import sys
import time
import urllib.request
from collections import Counter

cfg = json.loads(sys.argv[1])
base, url, calls, warmup = cfg["openai_base_url"], cfg["upstream_url"], cfg["calls"], cfg["warmup"]
DIRECT, FAIL, HEADER = cfg["direct_model"], cfg["fail_model"], cfg["direct_header"]

started_import = time.perf_counter()
import litellm  # noqa: E402,F401
import openai  # noqa: E402
from litellm import Router  # noqa: E402

import_s = time.perf_counter() - started_import


def deployment(group, model, **extra):
    return {"model_name": group,
            "litellm_params": {"model": "openai/" + model, "api_base": base, "api_key": "unused", **extra}}


def groups(prefix, first=None):
    """10 model groups sim-1..sim-10, one deployment each, sim-1 falling back to sim-2..sim-10 in order."""
    names = ["sim-%d" % k for k in range(1, 11)]
    model_list = [deployment(names[k - 1], first if k == 1 and first else "%s-m%d" % (prefix, k))
                  for k in range(1, 11)]
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
    "fallback order": (Router(**ordered("lofb", FAIL), num_retries=0, disable_cooldowns=True), "pool", "lofb-m2",
                       True),
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


def base_key(name):
    return ("direct pair " if SETUPS[name][3] else "direct ") + name


async def main():
    names = list(SETUPS)
    results = {key: [] for name in names for key in (base_key(name), name)}

    async def one_round(index, record):
        # A fresh seeded order each round, as ours in bench/pool.py: no setup always follows the same one.
        for name in random.Random(index).sample(names, len(names)):
            baseline = direct_pair if SETUPS[name][3] else direct
            if index % 2 == 0:  # the pair's order alternates too: neither side always runs on warm pages
                base_ms, ours_ms = await baseline(), await routed(name)
            else:
                ours_ms, base_ms = await routed(name), await baseline()
            if record:
                results[base_key(name)].append(base_ms)
                results[name].append(ours_ms)

    for index in range(warmup):
        await one_round(index, False)
    http("/_sim/reset", b"{}")
    for index in range(calls):
        await one_round(index, True)
    seen = http("/_sim/requests")
    counts = Counter("%s|%s" % (r["model"], r["outcome"]) for r in seen if r["headers"].get("x-bench") != "direct")
    await direct_client.close()
    return {"series": results, "counts": dict(counts), "import_s": import_s}


out = asyncio.run(main())
with open(sys.argv[2], "w") as handle:
    json.dump(out, handle)
