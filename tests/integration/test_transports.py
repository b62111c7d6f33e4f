"""The server as a real process: stdio, Streamable HTTP and SSE; Host/Origin checks; shutdown flushes records."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client

from server.simulator import Behaviour, Upstream
from tests.serving import SERVER_COMMAND, RawStdioSession, free_port, server_env, wait_for_port


def count_calls(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM calls").fetchone()[0]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_subprocess_serves_orchestrate(
    config_file: Path, tmp_path: Path, upstream: Upstream, mode: str
) -> None:
    upstream.script("gpt-sim", Behaviour(status=429, retry_after_s=1))
    params = StdioServerParameters(
        command=SERVER_COMMAND[0], args=[*SERVER_COMMAND[1:], "--config", str(config_file),
                                         "--database", str(tmp_path / "s.db")], env=server_env())
    with anyio.fail_after(60):
        async with Client(params, mode=mode) as client:
            assert {"orchestrate", "monitor_operations"} <= {t.name for t in (await client.list_tools()).tools}
            out = (await client.call_tool("orchestrate", {"prompt": "over stdio"})).structured_content
            assert out["text"] == "[claude-sim] over stdio"
            assert [a.get("error_class") for a in out["attempts"]] == ["rate_limited", None]
    assert count_calls(tmp_path / "s.db") == 2


@pytest.mark.parametrize("how", ["stdin-closed", "sigterm", "sigint"])
def test_records_queued_at_shutdown_are_in_the_database(config_file: Path, tmp_path: Path, how: str) -> None:
    database = tmp_path / "shutdown.db"
    session = RawStdioSession(["--config", str(config_file), "--database", str(database)])
    try:
        session.initialize()
        calls = 60
        ids = [session.send("tools/call", {"name": "orchestrate", "arguments": {"prompt": f"n{i}"}})
               for i in range(calls)]
        replies = [session.receive() for _ in ids]
        assert all(not r["result"].get("isError") for r in replies)
        if how != "stdin-closed":
            session.process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        code = session.close()
    finally:
        if session.process.poll() is None:
            session.process.kill()
    assert code == 0
    assert count_calls(database) == calls


@pytest.fixture
def http_server(config_file: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    transport = getattr(request, "param", "http")
    port = free_port()
    process = subprocess.Popen(
        [*SERVER_COMMAND, "--transport", transport, "--port", str(port), "--config", str(config_file),
         "--database", str(tmp_path / "h.db"), "--allowed-hosts", "mcp.example.test"],
        env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        finally:
            if process.poll() is None:
                process.kill()
            process.stdout.close()
            process.stderr.close()
    assert process.returncode == 0


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_serves_orchestrate(http_server: int, mode: str) -> None:
    with anyio.fail_after(30):
        async with Client(f"http://127.0.0.1:{http_server}/mcp", mode=mode) as client:
            out = (await client.call_tool("orchestrate", {"prompt": "over http"})).structured_content
            assert out["text"] == "[gpt-sim] over http"
            monitor = (await client.call_tool("monitor_operations", {})).structured_content
            assert monitor["groups"][0]["calls"] >= 1


@pytest.mark.anyio
@pytest.mark.parametrize("http_server", ["sse"], indirect=True)
async def test_sse_serves_orchestrate(http_server: int) -> None:
    with anyio.fail_after(30):
        async with Client(sse_client(f"http://127.0.0.1:{http_server}/sse"), mode="legacy") as client:
            out = (await client.call_tool("orchestrate", {"prompt": "over sse"})).structured_content
            assert out["text"] == "[gpt-sim] over sse"


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "evil.example"}, 421),
        ({"origin": "http://evil.example"}, 403),
        ({"host": "mcp.example.test"}, 200),  # named with --allowed-hosts
        ({}, 200),
    ],
)
def test_http_validates_host_and_origin(http_server: int, headers: dict, status: int) -> None:
    response = httpx2.post(f"http://127.0.0.1:{http_server}/mcp", json=INITIALIZE,
                           headers={**ACCEPT, **headers}, timeout=10)
    assert response.status_code == status


@pytest.mark.parametrize("http_server", ["sse"], indirect=True)
def test_sse_validates_host(http_server: int) -> None:
    response = httpx2.get(f"http://127.0.0.1:{http_server}/sse", headers={"host": "evil.example"}, timeout=10)
    assert response.status_code == 421


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com"])
def test_non_loopback_bind_is_refused_with_authentication_off(host: str, tmp_path: Path) -> None:
    config = tmp_path / "noauth.toml"
    config.write_text("[auth]\nenabled = false\n")
    out = subprocess.run([*SERVER_COMMAND, "--transport", "http", "--host", host, "--config", str(config),
                          "--database", str(tmp_path / "x.db")], env=server_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "a non-loopback address needs authentication" in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("transport", ["http", "sse"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_http_and_sse_cleanly_with_a_stream_open(
        config_file: Path, tmp_path: Path, transport: str, signum: signal.Signals) -> None:
    """SIGTERM or Ctrl-C with a client connected: exit 0, the open stream ended cleanly, nothing at ERROR."""
    port = free_port()
    process = subprocess.Popen(
        [*SERVER_COMMAND, "--transport", transport, "--port", str(port), "--config", str(config_file),
         "--database", str(tmp_path / "s.db")], env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        wait_for_port(port, process)
        base = f"http://127.0.0.1:{port}"
        with httpx2.Client(timeout=30) as client:
            if transport == "sse":
                request = client.build_request("GET", f"{base}/sse", headers={"accept": "text/event-stream"})
            else:
                request = client.build_request("POST", f"{base}/mcp", json=INITIALIZE, headers=ACCEPT)
                session = client.send(request).headers["mcp-session-id"]  # then its standalone event stream:
                request = client.build_request("GET", f"{base}/mcp", headers={
                    "accept": "text/event-stream", "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})
            with client.stream(request.method, request.url, headers=request.headers) as stream:
                assert stream.status_code == 200
                process.send_signal(signum)
                for _ in stream.iter_raw():  # ends (cleanly) when the server ends the stream
                    pass
        assert process.wait(30) == 0
        errors = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stdout.close()
        process.stderr.close()
    assert " ERROR " not in errors and "Traceback" not in errors and "CancelledError" not in errors, errors
    assert "shutting down" in errors
