"""The collector settings of a serving process (server/gc_tuning.py): start-up state and lazily imported SDKs
are frozen out of collections, young-generation thresholds raised. The CPU it saves is measured by
bench/http_load.py; these tests pin the mechanism."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import anyio
import pytest

from server.config import ProviderConfig
from server.pool.providers import build_provider
from tests.serving import server_env


def test_tune_for_serving_raises_thresholds_and_freezes_what_is_alive() -> None:
    script = ("import gc, json\nimport server.app.assembly\nfrom server.app.gc_tuning import tune_for_serving\n"
              "before = gc.get_freeze_count()\ntune_for_serving()\n"
              "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=server_env()).stdout
    before, after, thresholds = json.loads(out)
    assert before == 0
    assert after > 10_000  # the imported server modules and their objects, now out of the collector's way
    assert thresholds == [10_000, 20, 20]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_preparing_an_sdk_provider_freezes_the_sdk_modules(kind: str) -> None:
    provider = build_provider(ProviderConfig(name="p", kind=kind, model="m", base_url="http://127.0.0.1:9"))
    gc.unfreeze()
    try:
        anyio.run(provider.prepare)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
        anyio.run(provider.aclose)
