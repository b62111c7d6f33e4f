"""Simple mode's wire-protocol providers beyond the shared contract: they send what the SDK providers send."""

from __future__ import annotations

import json

import httpx2
import pytest

from server.config import ProviderConfig
from server.errors import ContextWindowExceeded, MalformedReply, RateLimited
from server.pool.providers import CompletionRequest, Message, build_provider, build_wire_provider
from server.pool.providers.anthropic_wire import AnthropicWireProvider
from server.pool.providers.openai_wire import OpenAIWireProvider
from server.simulator import Upstream
from tests.conftest import provider_entry

pytestmark = pytest.mark.anyio
KEY = "sk-canary-wire-0123456789abcdef"


def config(upstream: Upstream | None, kind: str, **extra) -> ProviderConfig:
    entry = provider_entry(upstream, "p", kind=kind, model="m", **extra) if upstream else {
        "name": "p", "kind": kind, "model": "m", **extra}
    return ProviderConfig.model_validate(entry)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("request_", [
    CompletionRequest(messages=(Message("user", "hi"),)),
    CompletionRequest(messages=(Message("user", "a"), Message("assistant", "b"), Message("user", "c")),
                      system="sys", max_tokens=7, temperature=0.5),
    CompletionRequest(messages=(Message("user", "json please"),), system="s", response_format="json"),
], ids=["plain", "history", "json"])
async def test_the_request_body_equals_the_sdk_providers(upstream: Upstream, kind: str,
                                                         request_: CompletionRequest) -> None:
    bodies = []
    for factory in (build_provider, build_wire_provider):
        provider = factory(config(upstream, kind, api_key=KEY))
        try:
            await provider.complete(request_)
        finally:
            await provider.aclose()
        bodies.append(upstream.requests[-1].body)
    assert bodies[0] == bodies[1]


async def test_a_provider_without_a_key_sends_no_credential_header() -> None:
    seen: list[httpx2.Request] = []

    def reply(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"content": [{"type": "text", "text": "ok"}], "model": "m",
                                          "usage": {"input_tokens": 1, "output_tokens": 1}})

    provider = AnthropicWireProvider(config(None, "anthropic", base_url="http://127.0.0.1:9"),
                                     transport=httpx2.MockTransport(reply))
    completion = await provider.complete(CompletionRequest(messages=(Message("user", "x"),)))
    await provider.aclose()
    assert completion.text == "ok"
    assert "x-api-key" not in seen[0].headers and "authorization" not in seen[0].headers
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    assert str(seen[0].url) == "http://127.0.0.1:9/v1/messages"


@pytest.mark.parametrize(("status", "body", "headers", "error_type"), [
    (429, {"error": {"message": f"slow down, key {KEY}"}}, {"retry-after-ms": "1500"}, RateLimited),
    (400, {"error": {"message": "This model's maximum context length is 8192 tokens"}}, {}, ContextWindowExceeded),
])
async def test_error_replies_keep_the_upstream_message_without_secrets(
        status: int, body: dict, headers: dict, error_type: type) -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(status, json=body, headers=headers))
    provider = OpenAIWireProvider(config(None, "openai", api_key=KEY), transport=transport)
    with pytest.raises(error_type) as info:
        await provider.complete(CompletionRequest(messages=(Message("user", "x"),)))
    await provider.aclose()
    assert KEY not in str(info.value)
    assert info.value.status_code == status
    if "retry-after-ms" in headers:
        assert info.value.retry_after_s == pytest.approx(1.5)


@pytest.mark.parametrize("payload", [[1, 2], {"choices": []}, {"choices": [{"message": {"content": None}}]}])
async def test_replies_without_text_are_malformed(payload: object) -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=json.dumps(payload).encode()))
    provider = OpenAIWireProvider(config(None, "openai"), transport=transport)
    with pytest.raises(MalformedReply):
        await provider.complete(CompletionRequest(messages=(Message("user", "x"),)))
    await provider.aclose()
