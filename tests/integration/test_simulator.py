"""The local wire-protocol upstream, driven by the official OpenAI and Anthropic SDKs over real loopback HTTP."""

from __future__ import annotations

import http.client
import json
import selectors
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import anyio
import openai
import pytest

from server.simulator import Behaviour, RecordedRequest, Upstream

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 5.0  # bound on every wait for the simulator; generous, never reached when things work
KEYS = {"openai": "sk-test-openai-key-123", "anthropic": "sk-ant-test-anthropic-key-123"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


@dataclass
class Wire:
    """One wire format driven through its official SDK: ``ask`` returns (text, input tokens, output tokens)."""

    name: str
    sdk: Any  # the SDK module, for its exception classes
    client: Any
    path: str

    async def ask(
        self, model: str, prompt: Any = "hi", *, system: str | None = None, **extra: Any
    ) -> tuple[str, int, int]:
        messages = [*extra.pop("history", []), {"role": "user", "content": prompt}]
        if self.name == "openai":
            if system:
                messages.insert(0, {"role": "system", "content": system})
            r = await self.client.chat.completions.create(model=model, messages=messages, **extra)
            return r.choices[0].message.content, r.usage.prompt_tokens, r.usage.completion_tokens
        if system:
            extra["system"] = system
        r = await self.client.messages.create(model=model, max_tokens=64, messages=messages, **extra)
        return r.content[0].text, r.usage.input_tokens, r.usage.output_tokens


@pytest.fixture(params=["openai", "anthropic"])
async def wire(request: pytest.FixtureRequest, up: Upstream) -> AsyncIterator[Wire]:
    if request.param == "openai":
        client: Any = openai.AsyncOpenAI(base_url=up.openai_base_url, api_key=KEYS["openai"], max_retries=0)
        yield Wire("openai", openai, client, "/v1/chat/completions")
    else:
        client = anthropic.AsyncAnthropic(base_url=up.url, api_key=KEYS["anthropic"], max_retries=0)
        yield Wire("anthropic", anthropic, client, "/v1/messages")
    await client.close()


def finished(up: Upstream, count: int = 1) -> list[RecordedRequest]:
    return up.wait_for_finished(count, timeout_s=WAIT_S)


def port(up: Upstream) -> int:
    return int(up.url.rsplit(":", 1)[1])


def post_on_one_connection(up: Upstream, path: str, bodies: list[bytes]) -> list[tuple[int, Any, socket.socket]]:
    """POST each body in turn over one http.client connection; return (status, JSON reply, socket used) each."""
    connection = http.client.HTTPConnection("127.0.0.1", port(up), timeout=WAIT_S)
    replies = []
    try:
        for body in bodies:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            assert int(response.headers["Content-Length"]) == len(data)
            replies.append((response.status, json.loads(data), connection.sock))
    finally:
        connection.close()
    return replies


def control(up: Upstream, path: str, payload: Any = None) -> Any:
    """Call a ``/_sim/*`` endpoint the way another process would: urllib, JSON in and out."""
    data = None if payload is None else json.dumps(payload).encode()
    with urllib.request.urlopen(urllib.request.Request(up.url + path, data=data), timeout=WAIT_S) as response:
        return json.loads(response.read())


@pytest.mark.anyio
async def test_default_reply_echoes_the_last_user_message_and_counts_words(wire: Wire, up: Upstream) -> None:
    history = [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "an answer here"}]
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "there world"}]

    text, input_tokens, output_tokens = await wire.ask("m1", parts, system="be brief", history=history)

    assert text == "[m1] hello there world"
    assert (input_tokens, output_tokens) == (2 + 2 + 3 + 3, 4)
    [seen] = up.requests
    assert (seen.path, seen.wire, seen.model, seen.outcome) == (wire.path, wire.name, "m1", "answered")
    assert seen.body["messages"][-1]["content"] == parts


@pytest.mark.anyio
async def test_scripted_behaviours_are_used_in_order_then_the_default_returns(wire: Wire, up: Upstream) -> None:
    up.script("m", Behaviour(text="one"), Behaviour(text="two words", input_tokens=7, output_tokens=9))

    assert [await wire.ask("m") for _ in range(3)] == [("one", 1, 1), ("two words", 7, 9), ("[m] hi", 1, 2)]


@pytest.mark.anyio
async def test_repeat_keeps_answering_with_the_last_behaviour(wire: Wire, up: Upstream) -> None:
    up.script("m", Behaviour(text="first"), Behaviour(text="again"), repeat=True)

    assert [(await wire.ask("m"))[0] for _ in range(4)] == ["first", "again", "again", "again"]


@pytest.mark.anyio
async def test_a_model_queue_wins_over_the_wildcard_which_wins_over_name_conventions(wire: Wire, up: Upstream) -> None:
    up.script(None, Behaviour(text="any"), repeat=True)
    up.script("own", Behaviour(text="mine"))

    replies = [(await wire.ask(model))[0] for model in ("own", "own", "other", "fail-500")]

    assert replies == ["mine", "any", "any", "any"]


@dataclass(frozen=True)
class Failure:
    behaviour: Behaviour
    model_name: str  # the model-name convention asking for the same behaviour
    error: Callable[[Any], type[BaseException]]  # SDK module -> the exception the SDK raises
    outcome: str
    anthropic_type: str | None = None  # the error.type of an Anthropic error body


FAILURES = {
    "429": Failure(
        Behaviour(status=429, retry_after_s=1), "fail-429", lambda sdk: sdk.RateLimitError, "error", "rate_limit_error"
    ),
    "401": Failure(
        Behaviour(status=401), "fail-401", lambda sdk: sdk.AuthenticationError, "error", "authentication_error"
    ),
    "500": Failure(Behaviour(status=500), "fail-500", lambda sdk: sdk.InternalServerError, "error", "api_error"),
    "529": Failure(Behaviour(status=529), "fail-529", lambda sdk: sdk.InternalServerError, "error", "overloaded_error"),
    # The SDKs parse a JSON content type with json.loads and let the decode error through.
    "malformed": Failure(Behaviour(malformed=True), "malformed", lambda sdk: json.JSONDecodeError, "malformed"),
    "drop": Failure(Behaviour(drop=True), "drop", lambda sdk: sdk.APIConnectionError, "dropped"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("via", ["script", "model name"])
@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
async def test_failures_surface_as_the_sdks_own_errors(wire: Wire, up: Upstream, case: Failure, via: str) -> None:
    model = case.model_name
    if via == "script":
        model = "m"
        up.script(model, case.behaviour)

    with pytest.raises(case.error(wire.sdk)) as raised:
        await wire.ask(model)

    if case.anthropic_type:
        error: Any = raised.value
        assert error.status_code == case.behaviour.status
        body = error.response.json()
        message = f"simulated HTTP {case.behaviour.status}"
        if wire.name == "anthropic":
            assert body == {"type": "error", "error": {"type": case.anthropic_type, "message": message}}
        else:
            assert body["error"]["message"] == message and set(body["error"]) == {"message", "type", "code"}
        assert error.response.headers.get("retry-after") == ("1" if case.behaviour.status == 429 else None)
    assert [r.outcome for r in finished(up)] == [case.outcome]


@pytest.mark.anyio
async def test_slow_model_name_answers_normally_after_the_delay(wire: Wire, up: Upstream) -> None:
    assert (await wire.ask("slow-30"))[0] == "[slow-30] hi"

    [seen] = finished(up)
    assert seen.finished_at is not None and seen.finished_at - seen.started_at >= 0.03


@pytest.mark.anyio
async def test_streaming_requests_are_refused_with_400(wire: Wire) -> None:
    with pytest.raises(wire.sdk.BadRequestError, match="streaming not supported by the simulator"):
        await wire.ask("m", stream=True)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/messages"])
def test_a_body_that_is_not_json_gets_400_in_the_wire_format(up: Upstream, path: str) -> None:
    [(status, reply, _)] = post_on_one_connection(up, path, [b"{not json"])

    assert (status, reply["error"]["type"]) == (400, "invalid_request_error")
    assert reply.get("type") == ("error" if path == "/messages" else None)  # Anthropic's envelope
    assert [r.outcome for r in finished(up)] == ["error"]


def test_connections_are_kept_alive_with_tcp_nodelay(up: Upstream) -> None:
    body = json.dumps({"model": "m", "messages": []}).encode()

    replies = post_on_one_connection(up, "/v1/messages", [body, body])

    assert [status for status, _, _ in replies] == [200, 200]
    assert replies[0][2] is replies[1][2]  # http.client opens a new socket when the server closed the last one
    assert [r.tcp_nodelay for r in finished(up, 2)] == [True, True]


@pytest.mark.anyio
async def test_credentials_are_redacted_in_recorded_headers(wire: Wire, up: Upstream) -> None:
    # Both SDKs send the key as "Authorization: Bearer"; Anthropic's documented header is x-api-key.
    await wire.ask("m", extra_headers={"X-Api-Key": KEYS[wire.name]})

    [seen] = up.requests
    assert seen.headers["authorization"] == seen.headers["x-api-key"] == "<redacted>"
    assert KEYS[wire.name] not in json.dumps(control(up, "/_sim/requests"))


@pytest.mark.anyio
async def test_the_control_endpoint_scripts_lists_and_resets_from_another_process(wire: Wire, up: Upstream) -> None:
    reply = control(up, "/_sim/script", {"model": "m", "behaviours": [{"status": 503, "retry_after_s": 2}]})
    assert reply == {"ok": True, "queued": 1}

    with pytest.raises(wire.sdk.InternalServerError) as raised:
        await wire.ask("m")
    assert raised.value.response.headers["retry-after"] == "2"
    assert [(r["model"], r["outcome"]) for r in control(up, "/_sim/requests")] == [("m", "error")]

    assert control(up, "/_sim/reset", {}) == {"ok": True}
    assert control(up, "/_sim/requests") == []
    with pytest.raises(urllib.error.HTTPError) as refused:
        control(up, "/_sim/script", {"model": "m", "behaviours": [{"status": "soon"}]})
    assert refused.value.code == 400
    refused.value.close()


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_a_client_leaving_during_latency_is_recorded_as_client_closed(wire: Wire, up: Upstream, how: str) -> None:
    up.script("m", Behaviour(latency_s=30))

    if how == "cancelled":  # what consensus early stop does to the calls it no longer needs
        with anyio.move_on_after(0.05) as scope:
            await wire.ask("m")
        assert scope.cancelled_caught
    else:
        with pytest.raises(wire.sdk.APITimeoutError):
            await wire.ask("m", timeout=0.05)

    # In a worker thread: the event loop has to run for the SDK's socket to actually close.
    assert [r.outcome for r in await anyio.to_thread.run_sync(finished, up)] == ["client_closed"]


def test_a_raw_socket_closing_during_latency_is_recorded_as_client_closed(up: Upstream) -> None:
    up.script(None, Behaviour(latency_s=30))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port(up)), timeout=WAIT_S) as client:
        client.sendall(head + body)

    assert [r.outcome for r in finished(up)] == ["client_closed"]


def test_stop_closes_idle_keep_alive_connections_and_is_idempotent(up: Upstream) -> None:
    body = json.dumps({"model": "m", "messages": []}).encode()
    head = f"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port(up)), timeout=WAIT_S) as client:
        client.sendall(head + body)
        finished(up)

        up.stop()
        up.stop()

        reply = b""
        while chunk := client.recv(65536):  # ends at the EOF that stop() causes; bounded by the socket timeout
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_only_loopback_addresses_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Upstream("0.0.0.0")
    with pytest.raises(RuntimeError, match="start"):
        Upstream().url  # noqa: B018 - the property is what is tested


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_serve_forever_runs_with_the_standard_library_alone_and_stops_on_sigterm() -> None:
    code = "import sys; from server.simulator import serve_forever; sys.exit(serve_forever('127.0.0.1', 0))"
    # -S leaves site-packages off sys.path: the simulator must import and run with nothing installed.
    command = [sys.executable, "-S", "-c", code]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
                assert selector.select(WAIT_S), "no base-URL line"
            line = proc.stdout.readline()  # type: ignore[union-attr]
            openai_url = line.split()[2]
            request = {"model": "m", "messages": [{"role": "user", "content": "ping"}]}
            urlopen = urllib.request.urlopen(openai_url + "/chat/completions", json.dumps(request).encode(), WAIT_S)
            with urlopen as response:
                assert json.loads(response.read())["choices"][0]["message"]["content"] == "[m] ping"
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=WAIT_S)
        finally:
            proc.kill()

    assert line.startswith("openai base_url: http://127.0.0.1:") and "anthropic base_url: http://127.0.0.1:" in line
    assert (proc.returncode, out, err) == (0, "", "")
