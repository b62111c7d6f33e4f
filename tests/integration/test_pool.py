"""The pool through the real SDKs over HTTP to the local upstream: a provider-specific failure of the first
provider (the openai SDK) moves the call to the second (the anthropic SDK), as the upstream sees it. The pool's
logic itself is tested against fake providers in ``tests/unit/test_pool.py``."""

from __future__ import annotations

import random

import anyio
import pytest

from server.pool.pool import ProviderPool
from server.pool.providers import CompletionRequest, Message, build_provider
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio
REQUEST = CompletionRequest(messages=(Message("user", "hi there"),))


@pytest.mark.parametrize(
    ("behaviour", "error_class"),
    [
        (Behaviour(status=404, error_message="The model `m1` does not exist"), "not_found"),
        (Behaviour(status=500), "server_error"),
        (Behaviour(status=429, retry_after_s=30), "rate_limited"),
        (Behaviour(latency_s=3.0), "timeout"),
        (Behaviour(malformed=True), "malformed_reply"),
        (Behaviour(drop=True), "connection"),
        (Behaviour(status=401), "authentication"),
        (Behaviour(finish_reason="content_filter"), "content_refused"),
    ],
)
async def test_a_failing_provider_falls_back_through_the_sdks(upstream: Upstream, behaviour: Behaviour,
                                                             error_class: str) -> None:
    store = MemoryStore()
    config = config_for(provider_entry(upstream, "first", kind="openai", model="m1", priority=1, timeout_s=0.5),
                        provider_entry(upstream, "second", kind="anthropic", model="m2", priority=2))
    pool = ProviderPool([(p, build_provider(p)) for p in config.providers], store.calls, config=config,
                        rng=random.Random(0))
    upstream.script("m1", behaviour)
    try:
        with anyio.fail_after(10):
            result = await pool.complete(REQUEST)
    finally:
        await pool.aclose()
    assert result.provider == "second" and result.text == "[m2] hi there"
    assert [(a.provider, a.status, a.error_class) for a in result.attempts] == [
        ("first", "error", error_class), ("second", "ok", None)]
    assert [(r.wire, r.model) for r in upstream.requests] == [("openai", "m1"), ("anthropic", "m2")]
    assert [(r.provider, r.status, r.error_class) for r in store.calls.records] == [
        ("first", "error", error_class), ("second", "ok", None)]
