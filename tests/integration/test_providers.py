"""The provider contract: every Provider implementation, against the local upstream over real HTTP.

Simple mode's wire-protocol providers (``*-wire``) pass the same suite as the SDK providers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from server.config import ProviderConfig
from server.errors import (
    AuthenticationFailed,
    BadRequest,
    ContentRefused,
    MalformedReply,
    NotFound,
    ProviderConnectionError,
    ProviderTimeout,
    RateLimited,
    ServerError,
)
from server.pool.providers import CompletionRequest, Message, Provider, build_provider, build_wire_provider
from server.simulator import Behaviour, Upstream
from tests.conftest import provider_entry

pytestmark = pytest.mark.anyio

# name -> (kind, factory): the implementations that must honour the contract.
PROVIDERS: dict[str, tuple[str, Callable[[ProviderConfig], Provider]]] = {
    "openai-sdk": ("openai", build_provider),
    "anthropic-sdk": ("anthropic", build_provider),
    "openai-wire": ("openai", build_wire_provider),
    "anthropic-wire": ("anthropic", build_wire_provider),
}
CANARY_KEY = "sk-canary-provider-0123456789abcdef"


@pytest.fixture(params=sorted(PROVIDERS))
async def provider(request: pytest.FixtureRequest, upstream: Upstream) -> AsyncIterator[Provider]:
    kind, factory = PROVIDERS[request.param]
    config = ProviderConfig.model_validate(
        provider_entry(upstream, "p", kind=kind, model="contract-model", api_key=CANARY_KEY)
    )
    instance = factory(config)
    try:
        yield instance
    finally:
        await instance.aclose()


def ask(text: str = "hello contract", **kwargs) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),), **kwargs)


async def test_answers_with_text_model_and_usage(provider: Provider, upstream: Upstream) -> None:
    completion = await provider.complete(ask("say hello", system="be brief", max_tokens=50, temperature=0.2))
    assert completion.text == "[contract-model] say hello"
    assert completion.model == "contract-model"
    assert completion.usage.input_tokens == 4  # "say hello" + "be brief"
    assert completion.usage.output_tokens == 3
    sent = upstream.requests[-1]
    # Anthropic's Messages API (SDK 2.x) has no temperature; OpenAI's has.
    assert sent.body.get("temperature") == (0.2 if sent.wire == "openai" else None)
    assert sent.headers.get("authorization", sent.headers.get("x-api-key")) == "<redacted>"


async def test_conversation_history_is_sent_in_order(provider: Provider, upstream: Upstream) -> None:
    request = CompletionRequest(messages=(Message("user", "one"), Message("assistant", "two"), Message("user", "three")))
    completion = await provider.complete(request)
    assert completion.text.endswith("three")
    roles = [m["role"] for m in upstream.requests[-1].body["messages"] if m["role"] != "system"]
    assert roles == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("behaviour", "error_type", "status"),
    [
        (Behaviour(status=500), ServerError, 500),
        (Behaviour(status=503), ServerError, 503),
        (Behaviour(status=429, retry_after_s=7), RateLimited, 429),
        (Behaviour(status=529), RateLimited, 529),
        (Behaviour(status=401), AuthenticationFailed, 401),
        (Behaviour(status=400), BadRequest, 400),
        (Behaviour(status=422), BadRequest, 422),
        (Behaviour(status=404, error_message="The model `x` does not exist"), NotFound, 404),
        (Behaviour(status=400, error_message="Your request was rejected by our safety system "
                   "(content_policy_violation)"), ContentRefused, 400),
        (Behaviour(malformed=True), MalformedReply, None),
        (Behaviour(drop=True), ProviderConnectionError, None),
    ],
)
async def test_failures_become_typed_errors(
    provider: Provider, upstream: Upstream, behaviour: Behaviour, error_type: type, status: int | None
) -> None:
    upstream.script("contract-model", behaviour)
    with pytest.raises(error_type) as info:
        await provider.complete(ask())
    assert info.value.provider == "p"
    assert info.value.status_code == status
    assert CANARY_KEY not in str(info.value)
    if behaviour.retry_after_s is not None:
        assert info.value.retry_after_s == pytest.approx(7)


async def test_slow_reply_past_the_timeout_is_a_timeout(provider: Provider, upstream: Upstream) -> None:
    upstream.script("contract-model", Behaviour(latency_s=2.0))
    with pytest.raises(ProviderTimeout):
        await provider.complete(ask(timeout_s=0.2))


async def test_sdk_retries_are_off(provider: Provider, upstream: Upstream) -> None:
    upstream.script("contract-model", Behaviour(status=503), Behaviour(status=503))
    with pytest.raises(ServerError):
        await provider.complete(ask())
    assert len(upstream.requests) == 1


async def test_client_is_created_once_and_reused(provider: Provider, upstream: Upstream) -> None:
    await provider.complete(ask())
    client = provider._client  # the SDK (or httpx2) client, built on first use
    await provider.complete(ask())
    assert provider._client is client


async def test_aclose_is_idempotent(provider: Provider) -> None:
    await provider.complete(ask())
    await provider.aclose()
    await provider.aclose()
