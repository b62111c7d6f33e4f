"""Helpers for security tests: a server subprocess over HTTP with auth, keys made through the CLI, an
authenticated MCP client, a local JWKS server, and the canary every secret-hygiene check looks for."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import _toml as toml_value
from tests.serving import SERVER_COMMAND, free_port, server_env, wait_for_port

# A recognisable secret planted as a provider key and inside presented tokens; after the whole run it must
# appear in no log line, database row or tool result (tests/conftest.py::canary_sweep).
CANARY = "sk-canary-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"
# Every API key the tests create, for the same sweep.
CREATED_KEYS: list[str] = []


def write_toml(path: Path, providers: list[dict], **tables: dict) -> Path:
    """A config file with ``[[providers]]`` and any ``[table]`` (one level of sub-tables as dotted names)."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table.replace('__', '.')}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for entry in providers:
        lines.append("[[providers]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def make_key(config: Path, database: Path, name: str, role: str = "user") -> str:
    out = subprocess.run([*SERVER_COMMAND, "--config", str(config), "--database", str(database), "keys", "create",
                          name, "--role", role], env=server_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    CREATED_KEYS.append(key)
    return key


def keys_cli(config: Path, database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER_COMMAND, "--config", str(config), "--database", str(database), "keys", *args],
                          env=server_env(), capture_output=True, text=True, timeout=60)


class ServerProcess:
    """``ai-orchestration-mcp --transport http`` as a subprocess; stderr goes to ``log`` (swept for secrets)."""

    def __init__(self, config: Path, database: Path, log: Path, *, host: str = "127.0.0.1",
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log = log
        self._handle = log.open("w")
        self.process = subprocess.Popen(
            [*SERVER_COMMAND, "--transport", "http", "--host", host, "--port", str(self.port), "--config",
             str(config), "--database", str(database), *extra],
            stdout=subprocess.DEVNULL, stderr=self._handle, env={**server_env(), **(env or {})})
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._handle.close()


@contextmanager
def running_server(*args: Any, **kwargs: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(*args, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def mcp_client(url: str, token: str | None, *, mode: str = "legacy") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


def initialize_body() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}}


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class JwksServer:
    """A JWKS endpoint on loopback with an RSA key (``kid`` ``test-key``), and a signer for tokens under it.

    Args:
        extra_keys: more JWKs to publish (e.g. an EC key, to name with a token's ``kid``).
    """

    def __init__(self, extra_keys: tuple[dict[str, Any], ...] = ()) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._jwt = jwt
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        public.update({"kid": "test-key", "use": "sig", "alg": "RS256"})
        body = json.dumps({"keys": [public, *extra_keys]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, *, kid: str = "test-key", **claims: Any) -> str:
        return self._jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": kid})
