"""Authenticated HTTP as a real server process: every auth outcome, roles, ownership, limits, Host/Origin
before authentication, tokens never forwarded upstream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import httpx2
import pytest

from server.simulator import Behaviour, Upstream
from tests.conftest import provider_entry
from tests.secure_serving import (CANARY, MCP_HEADERS, JwksServer, initialize_body, keys_cli, make_key, mcp_client,
                                  running_server, write_toml)

AUDIENCE = "http://127.0.0.1/mcp-test"
ISSUER = "https://issuer.test/"


def post(url: str, token: str | None = None, *, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> httpx2.Response:
    sent = {**MCP_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    return httpx2.post(url, content=body if body is not None else json.dumps(initialize_body()), headers=sent,
                       timeout=30)


def expired_key(database: Path) -> str:
    """A key whose expiry passed an hour ago (made through the library with a clock in the past)."""
    from server.security.keys import create_key
    from server.store.sqlite import SQLiteStore
    from tests.secure_serving import CREATED_KEYS

    async def make() -> str:
        store = SQLiteStore(database)
        try:
            created = await create_key(store.keys, "old", "user", expires_in_s=60, clock=lambda: time.time() - 3600)
        finally:
            await store.aclose()
        return created.key

    key = anyio.run(make)
    CREATED_KEYS.append(key)
    return key


@pytest.fixture
def jwks() -> JwksServer:
    with JwksServer() as server:
        yield server


def jwt_claims(**overrides: object) -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 600, "iat": now, "scope": "mcp", **overrides}


def test_every_authentication_outcome(tmp_path: Path, upstream: Upstream, jwks: JwksServer) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True, "key_cache_s": 0},
                        auth__jwt={"jwks_url": jwks.url, "issuer": ISSUER, "audience": AUDIENCE,
                                   "required_scopes": ["mcp"], "admin_scope": "mcp:admin"})
    database = tmp_path / "s.db"
    user = make_key(config, database, "u1")
    revoked = make_key(config, database, "gone")
    revoked_id = revoked.split("_")[1]
    assert keys_cli(config, database, "revoke", revoked_id).returncode == 0
    old = expired_key(database)
    listing = keys_cli(config, database, "list").stdout
    assert "revoked" in listing and "expired" in listing and user not in listing

    with running_server(config, database, tmp_path / "server.log") as server:
        missing = post(server.url)
        assert missing.status_code == 401
        challenge = missing.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
        assert "resource_metadata=" in challenge
        for token in ("aiom_000000000000_" + "A" * 43, CANARY, "not-a-key", revoked, old,
                      jwks.token(**jwt_claims(aud="https://other.example/mcp")),  # wrong audience
                      jwks.token(**jwt_claims(exp=int(time.time()) - 600)),       # expired
                      jwks.token(**jwt_claims(iss="https://evil.test/"))):        # wrong issuer
            reply = post(server.url, token)
            assert reply.status_code == 401, (token[:12], reply.status_code)
            assert CANARY not in reply.text and token not in reply.text
        scopeless = post(server.url, jwks.token(**jwt_claims(scope="profile")))
        assert scopeless.status_code == 403
        assert 'error="insufficient_scope"' in scopeless.headers["www-authenticate"]
        assert post(server.url, user).status_code == 200
        assert post(server.url, jwks.token(**jwt_claims())).status_code == 200
        metadata = httpx2.get(f"http://127.0.0.1:{server.port}/.well-known/oauth-protected-resource/mcp-test")
        assert metadata.status_code == 200 and metadata.json()["resource"] == AUDIENCE
    log = server.log.read_text()
    assert "refused API key" in log and "refused a JWT: wrong audience" in log


@pytest.mark.anyio
async def test_roles_ownership_and_tokens_not_forwarded(tmp_path: Path, upstream: Upstream, jwks: JwksServer) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True},
                        auth__jwt={"jwks_url": jwks.url, "issuer": ISSUER, "audience": AUDIENCE,
                                   "admin_scope": "mcp:admin"})
    database = tmp_path / "s.db"
    alice, bob = make_key(config, database, "alice"), make_key(config, database, "bob")
    admin = make_key(config, database, "ops", role="admin")
    admin_jwt = jwks.token(**jwt_claims(sub="root", scope="mcp mcp:admin"))
    pattern = {"name": "sec-test", "template": "Say {{ x }}", "description": "a test pattern"}
    with running_server(config, database, tmp_path / "server.log") as server:
        with anyio.fail_after(60):
            async with mcp_client(server.url, alice) as client:
                refused = await client.call_tool("register_pattern", pattern)
                assert refused.is_error and "needs role admin" in refused.content[0].text
                first = (await client.call_tool("orchestrate", {"prompt": "remember 42"})).structured_content
                cid = first["continuation_id"]
                again = await client.call_tool("orchestrate", {"prompt": "and?", "continuation_id": cid})
                assert not again.is_error
            async with mcp_client(server.url, bob, mode="auto") as client:
                stolen = await client.call_tool("orchestrate", {"prompt": "what was it?", "continuation_id": cid})
                assert stolen.is_error and "unknown continuation_id" in stolen.content[0].text
            for token in (admin, admin_jwt):
                async with mcp_client(server.url, token) as client:
                    stored = await client.call_tool("register_pattern", pattern)
                    assert not stored.is_error, stored.content[0].text
                    continued = await client.call_tool("orchestrate", {"prompt": "admin", "continuation_id": cid})
                    assert not continued.is_error  # admins see every conversation
    sent = json.dumps([[r.headers, r.body] for r in upstream.requests], default=str)
    for token in (alice, bob, admin, admin_jwt):
        assert token not in sent  # client tokens never reach a provider
        assert not token.startswith("aiom_") or token.split("_", 2)[-1] not in sent


@pytest.mark.anyio
async def test_limits_body_rate_concurrency_tokens_cost(tmp_path: Path, upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim",
                                                             output_cost_per_mtok=100.0)],
                        auth={"enabled": True},
                        limits={"max_body_bytes": 4096, "requests_per_minute": 20, "max_concurrent_calls": 2,
                                "max_tokens_per_call": 200, "max_cost_usd_per_call": 0.001})
    database = tmp_path / "s.db"
    caller, flooder = make_key(config, database, "caller"), make_key(config, database, "flood")
    with running_server(config, database, tmp_path / "server.log") as server:
        too_big = post(server.url, caller, body=b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"'
                       + b"a" * 8000 + b'"}}')
        assert too_big.status_code == 413
        statuses = [post(server.url, flooder) for _ in range(26)]
        codes = [r.status_code for r in statuses]
        assert codes[:20] == [200] * 20 and 429 in codes[20:]
        limited = statuses[codes.index(429)]
        assert int(limited.headers["retry-after"]) >= 1
        upstream.script("gpt-sim", Behaviour(latency_s=3.0), repeat=True)
        with anyio.fail_after(60):
            async with mcp_client(server.url, caller) as client:
                over_tokens = await client.call_tool("orchestrate", {"prompt": "x", "max_tokens": 500})
                assert over_tokens.is_error and "ceiling of 200" in over_tokens.content[0].text
                over_cost = await client.call_tool("orchestrate", {"prompt": "x", "max_tokens": 20})
                assert over_cost.is_error and "could cost up to $0.0020" in over_cost.content[0].text
                assert upstream.requests == []  # refused before any provider was called
                async with anyio.create_task_group() as group:
                    for _ in range(2):  # two calls in flight: the key's limit
                        group.start_soon(client.call_tool, "orchestrate", {"prompt": "slow", "max_tokens": 5})
                    await anyio.to_thread.run_sync(upstream.wait_for_requests, 2, 30.0)
                    busy = await anyio.to_thread.run_sync(lambda: post(server.url, caller))
                    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"


@pytest.mark.anyio
async def test_a_call_at_the_concurrency_limit_frees_its_slot_with_its_reply(tmp_path: Path,
                                                                              upstream: Upstream) -> None:
    # One call at a time allowed: a client that sends each call as soon as it has the previous reply must never
    # be refused, even while the server is still closing the previous response's stream.
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True}, limits={"max_concurrent_calls": 1, "requests_per_minute": 100_000})
    database = tmp_path / "s.db"
    key = make_key(config, database, "sequential")
    with running_server(config, database, tmp_path / "server.log") as server:
        with anyio.fail_after(60):
            async with mcp_client(server.url, key) as client:
                results = [await client.call_tool("orchestrate", {"prompt": f"call {i}"}) for i in range(40)]
    assert [r.is_error for r in results] == [False] * 40


def test_foreign_host_or_origin_refused_before_authentication(tmp_path: Path, upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")])
    database = tmp_path / "s.db"
    key = make_key(config, database, "k")
    # Non-loopback bind: auth is on by default there (and required). Clients still connect over loopback.
    with running_server(config, database, tmp_path / "server.log", host="0.0.0.0",
                        extra=("--allowed-hosts", "mcp.example.com")) as server:
        port = server.port
        for token in (None, "aiom_000000000000_" + "B" * 43, key):
            foreign_host = post(server.url, token, headers={"Host": f"evil.example:{port}"})
            assert foreign_host.status_code == 421, foreign_host.text
            foreign_origin = post(server.url, token, headers={"Origin": "http://evil.example"})
            assert foreign_origin.status_code == 403 and "Origin" in foreign_origin.text
            assert "www-authenticate" not in foreign_origin.headers
        log_before = server.log.read_text()
        assert "refused API key" not in log_before and "refused an API key" not in log_before
        named = post(server.url, None, headers={"Host": "mcp.example.com"})
        assert named.status_code == 401  # an allowed name reaches authentication
        assert post(server.url, key, headers={"Host": "mcp.example.com"}).status_code == 200
        assert post(server.url, "aiom_000000000000_" + "C" * 43).status_code == 401
    log = server.log.read_text()
    assert "refused an API key: unknown" in log and "no API key exists" not in log


def test_sse_transport_is_authenticated_too(tmp_path: Path, upstream: Upstream) -> None:
    from tests.secure_serving import ServerProcess

    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True})
    database = tmp_path / "s.db"
    key = make_key(config, database, "sse")
    server = ServerProcess(config, database, tmp_path / "server.log", extra=("--transport", "sse"))
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx2.get(f"{base}/sse", timeout=10).status_code == 401
        assert httpx2.post(f"{base}/messages/?session_id=x", json={}, timeout=10).status_code == 401
        assert httpx2.get(f"{base}/sse", headers={"Host": "evil.example"}, timeout=10).status_code == 421
        with httpx2.stream("GET", f"{base}/sse", headers={"Authorization": f"Bearer {key}"}, timeout=10) as stream:
            assert stream.status_code == 200
            assert next(stream.iter_lines()).startswith("event: endpoint")
    finally:
        server.stop()
