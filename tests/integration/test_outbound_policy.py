"""The outbound address policy on every hop: provider clients (both SDKs, both wire providers) follow no redirect
to a refused address, names are re-resolved and re-checked per request, downstream URL servers are re-checked on
each connection. A loopback recorder on 127.0.0.2 stands in for the refused address (``deny_addresses``), and
must never be reached."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.config import McpServerConfig, ProviderConfig
from server.errors import ProviderError
from server.pool.providers import CompletionRequest, Message, build_provider, build_wire_provider
from server.security.addresses import AddressPolicy
from server.simulator import Upstream
from tests.secure_serving import make_key, mcp_client, running_server, write_toml

pytestmark = pytest.mark.anyio
REFUSED = "127.0.0.2"
DENY = (f"{REFUSED}/32",)
FACTORIES = {"openai-sdk": ("openai", build_provider), "anthropic-sdk": ("anthropic", build_provider),
             "openai-wire": ("openai", build_wire_provider), "anthropic-wire": ("anthropic", build_wire_provider)}
REQUEST = CompletionRequest(messages=(Message("user", "hello"),), timeout_s=10)


@pytest.fixture
def recorder() -> Iterator[Upstream]:
    """Stands in for the refused address: any request it records is a hole in the policy."""
    with Upstream(host=REFUSED) as up:
        yield up


class Redirector:
    """An allowed upstream (127.0.0.1) answering every request with ``status`` and ``Location: target``."""

    def __init__(self, status: int, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _redirect(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps({"error": {"message": "moved"}}).encode()
                self.send_response(status)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _redirect  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def provider_config(kind: str, base_url: str) -> ProviderConfig:
    return ProviderConfig.model_validate({"name": "p", "kind": kind, "model": "m", "base_url": base_url,
                                          "api_key": "sk-test-redirect-0123456789"})


@pytest.mark.parametrize("status", [303, 307])
@pytest.mark.parametrize("factory", FACTORIES)
async def test_provider_clients_follow_no_redirect_to_a_refused_address(recorder: Upstream, status: int,
                                                                         factory: str) -> None:
    kind, build = FACTORIES[factory]
    target = recorder.openai_base_url if kind == "openai" else recorder.url
    redirector = Redirector(status, target.removesuffix("/v1"))
    try:
        base = redirector.url + ("/v1" if kind == "openai" else "")
        provider = build(provider_config(kind, base), policy=AddressPolicy(deny=DENY))
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.complete(REQUEST)
        finally:
            await provider.aclose()
    finally:
        redirector.close()
    assert f"HTTP {status}" in str(caught.value)  # the redirect reached the pool as the provider's error
    assert recorder.requests == []


class FlippingResolver:
    """Resolves every name to ``first`` until :meth:`flip`, then to ``then`` (a DNS rebinding)."""

    def __init__(self, first: str, then: str) -> None:
        self.address, self._then, self.lookups = first, then, 0

    def flip(self) -> None:
        self.address = self._then

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list:
        self.lookups += 1
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (self.address, port or 0))]


@pytest.mark.parametrize("then", [REFUSED, "64:ff9b::a9fe:a9fe", "::ffff:169.254.169.254"])
@pytest.mark.parametrize("factory", FACTORIES)
async def test_a_name_is_re_resolved_and_re_checked_for_each_request(upstream: Upstream, factory: str,
                                                                     then: str) -> None:
    kind, build = FACTORIES[factory]
    port = int(upstream.url.rsplit(":", 1)[1])
    with Upstream(host=REFUSED, port=port) as recorder:  # same port: only the address differs
        resolver = FlippingResolver("127.0.0.1", then)
        policy = AddressPolicy(deny=DENY, resolve=resolver)
        base = f"http://upstream.test:{port}" + ("/v1" if kind == "openai" else "")
        policy.check_url_resolved(base)  # what start-up checks: the name resolves to an allowed address
        provider = build(provider_config(kind, base), policy=policy)
        try:
            assert (await provider.complete(REQUEST)).text  # through a connection to 127.0.0.1
            resolver.flip()
            with pytest.raises(ProviderError):
                await provider.complete(REQUEST)  # the same name now resolves to a refused address
        finally:
            await provider.aclose()
        assert recorder.requests == [] and len(upstream.requests) == 1
        assert resolver.lookups >= 3  # start-up, then once per request


async def test_a_downstream_url_server_is_re_checked_on_each_connection(downstream_url: str) -> None:
    from server.workflows.downstream import DownstreamServers
    from server.workflows.steps import StepFailed

    port = int(downstream_url.split(":")[2].split("/")[0])
    with Upstream(host=REFUSED, port=port) as recorder:
        resolver = FlippingResolver("127.0.0.1", REFUSED)
        servers = DownstreamServers({"remote": McpServerConfig(url=f"http://localhost:{port}/mcp")},  # a Host it takes
                                    policy=AddressPolicy(deny=DENY, resolve=resolver))
        async with anyio.create_task_group() as group:
            group.start_soon(servers.serve)
            with anyio.fail_after(30):
                answered = await servers.call("remote", "echo", {"text": "hi"}, 10)
                assert answered["text"] == "hi"
                resolver.flip()
                with pytest.raises(StepFailed) as during:  # the open session's next request is refused
                    await servers.call("remote", "echo", {"text": "again"}, 10)
                with pytest.raises(StepFailed) as reconnect:  # and so is the reconnection
                    await servers.call("remote", "echo", {"text": "again"}, 10)
            group.cancel_scope.cancel()
        assert during.value.error_class == "connection"
        assert reconnect.value.error_class == "address_refused" and "deny_addresses" in str(reconnect.value)
        assert recorder.requests == []


async def test_the_server_refuses_a_redirect_to_a_denied_address(tmp_path: Path, recorder: Upstream) -> None:
    redirector = Redirector(307, recorder.openai_base_url.removesuffix("/v1"))
    try:
        config = write_toml(tmp_path / "c.toml", [{"name": "moved", "kind": "openai", "model": "m",
                                                   "base_url": redirector.url + "/v1"}],
                            auth={"enabled": True}, network={"deny_addresses": list(DENY)})
        database = tmp_path / "s.db"
        key = make_key(config, database, "redirected")
        with running_server(config, database, tmp_path / "server.log") as server, anyio.fail_after(60):
            async with mcp_client(server.url, key) as client:
                result = await client.call_tool("orchestrate", {"prompt": "hello"})
        assert result.is_error and "HTTP 307" in result.content[0].text
    finally:
        redirector.close()
    assert recorder.requests == []
