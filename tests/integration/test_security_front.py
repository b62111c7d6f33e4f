"""The HTTP front under hostile or verbose conditions, through a real server process: every JWT verification
error is a 401 (never a 500 with a traceback), and `--log-level DEBUG` logs no request or SSE body."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import anyio
import pytest

from server.simulator import Upstream
from tests.conftest import provider_entry
from tests.integration.test_security_http import AUDIENCE, ISSUER, jwt_claims, post
from tests.secure_serving import CANARY, JwksServer, make_key, mcp_client, running_server, write_toml


def ec_jwk(kid: str) -> dict:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    return {**public, "kid": kid, "use": "sig", "alg": "ES256"}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_every_jwt_verification_error_is_a_401_that_carries_no_secret(tmp_path: Path, upstream: Upstream) -> None:
    with JwksServer(extra_keys=(ec_jwk("ec-key"), {"kty": "oct", "k": "c2VjcmV0LWtleQ", "kid": "oct-key"})) as jwks:
        config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim",
                                                                 api_key_env="CANARY_PROVIDER_KEY")],
                            auth={"enabled": True},
                            auth__jwt={"jwks_url": jwks.url, "issuer": ISSUER, "audience": AUDIENCE})
        database = tmp_path / "s.db"
        make_key(config, database, "someone")  # so the server has a key and serves
        now = int(time.time())
        # The canary rides in the claims (a token's payload is readable by anyone): no refusal may quote it.
        claims = jwt_claims(sub=CANARY, note=CANARY)
        header_claims = b64({"iss": ISSUER, "aud": AUDIENCE, "sub": CANARY, "exp": now + 600})
        hostile = {
            "kid names an EC key": jwks.token(kid="ec-key", **claims),
            "kid names a symmetric key": jwks.token(kid="oct-key", **claims),
            "unknown kid": jwks.token(kid="nobody", **claims),
            "expired": jwks.token(**{**claims, "exp": now - 60}),
            "wrong audience": jwks.token(**{**claims, "aud": "https://elsewhere.example/mcp"}),
            "alg none": f"{b64({'alg': 'none', 'kid': 'test-key'})}.{header_claims}.",
            "header not JSON": f"{base64.urlsafe_b64encode(b'{nope').decode()}.{header_claims}.c2ln",
            "kid not a string": f"{b64({'alg': 'RS256', 'kid': {'$ne': 1}})}.{header_claims}.c2ln",
            "garbage": "a.b.c",
        }
        with running_server(config, database, tmp_path / "server.log",
                            env={"CANARY_PROVIDER_KEY": CANARY}) as server:
            for what, token in hostile.items():
                reply = post(server.url, token)
                assert reply.status_code == 401, (what, reply.status_code, reply.text[:200])
                assert 'error="invalid_token"' in reply.headers["www-authenticate"], what
                sent_back = reply.text + "\n" + "\n".join(f"{k}: {v}" for k, v in reply.headers.items())
                for secret in (token, header_claims, CANARY):
                    assert secret not in sent_back, (what, secret[:12])
                assert "Traceback" not in sent_back and "Error" not in reply.text, (what, reply.text[:200])
            assert post(server.url, jwks.token(**jwt_claims())).status_code == 200  # a good one still passes
            log = server.log.read_text()  # before shutdown, which logs on its own (issue 16.9)
    assert "Traceback" not in log and " 500 " not in log
    assert "refused a JWT: TypeError" in log  # the EC key's parser refused the RSA token: logged by class only
    assert CANARY not in log and header_claims not in log  # … never with the token or what it carries


@pytest.mark.anyio
async def test_debug_logging_logs_no_request_or_sse_body_nor_secret(tmp_path: Path, upstream: Upstream) -> None:
    planted = f"planted-prompt-{uuid.uuid4().hex}"  # the simulator's answer quotes it too
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim",
                                                             api_key_env="CANARY_PROVIDER_KEY")],
                        auth={"enabled": True})
    database = tmp_path / "s.db"
    key = make_key(config, database, "verbose")
    with running_server(config, database, tmp_path / "server.log", extra=("--log-level", "DEBUG"),
                        env={"CANARY_PROVIDER_KEY": CANARY}) as server:
        with anyio.fail_after(60):
            for mode in ("legacy", "auto"):  # SSE responses (handshake era) and the 2026-07-28 era
                async with mcp_client(server.url, key, mode=mode) as client:
                    answered = await client.call_tool("orchestrate", {"prompt": f"say {planted}"})
                    assert planted in answered.structured_content["text"]
                    await client.list_tools()
    log = server.log.read_text()
    assert " DEBUG " in log  # the server did log at DEBUG …
    assert "POST /mcp" in log  # … the requests themselves included (access lines) …
    assert planted not in log  # … and no prompt or answer, in any request, response or SSE chunk
    secret_part = key.split("_", 2)[-1]  # the API key's secret part (its prefix names it, and may be logged)
    for secret in (key, secret_part, CANARY, "Bearer "):
        assert secret not in log, secret[:12]  # no header, no key, no provider key
