"""MCP logging for the clients that use it: ``logging/setLevel`` and notable events as ``notifications/message``
(handshake era), through the in-memory client over fake providers; levels and redaction of the forwarding."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import LoggingMessageNotificationParams

from server.app.assembly import build_server
from server.app.protocol_logging import ProtocolLog, mcp_level
from server.store.memory import MemoryStore
from tests.fakes import fail, fake_config, fake_entry, fleet_for

pytestmark = pytest.mark.anyio


@pytest.mark.filterwarnings(  # the client's set_logging_level (SEP-2577 deprecates protocol logging)
    "ignore:The logging capability is deprecated:mcp.shared.exceptions.MCPDeprecationWarning")
async def test_a_fallback_reaches_a_client_that_set_a_level_and_not_one_that_did_not(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.pool")  # the server's default level (--log-level INFO)
    config = fake_config(fake_entry("alpha", model="a", priority=1), fake_entry("beta", model="b", priority=2))
    fleet = fleet_for(config)
    fleet["alpha"].script(fail("server_error"))
    heard: list[LoggingMessageNotificationParams] = []
    silent: list[LoggingMessageNotificationParams] = []
    arrived = anyio.Event()

    async def listen(params: LoggingMessageNotificationParams) -> None:
        heard.append(params)
        arrived.set()

    async def never(params: LoggingMessageNotificationParams) -> None:
        silent.append(params)

    mcp = build_server(config, store_factory=MemoryStore, provider_factory=fleet)
    async with Client(mcp, mode="legacy", logging_callback=listen) as client, \
            Client(mcp, mode="legacy", logging_callback=never) as other:
        assert client.server_capabilities.logging is not None  # declared
        await client.set_logging_level("info")
        result = await other.call_tool("orchestrate", {"prompt": "hello"})
        assert not result.is_error and result.structured_content["provider"] == "beta"
        with anyio.fail_after(10):
            await arrived.wait()
    (fallback,) = [p for p in heard if p.logger == "server.pool.fallback"]
    assert fallback.level == "info" and "provider alpha failed (server_error)" in fallback.data
    assert silent == []


class FakeConnection:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any, str | None]] = []

    async def log(self, level: str, data: Any, logger: str | None = None) -> None:
        self.messages.append((level, data, logger))


class FakeSession:
    def __init__(self, connection: FakeConnection) -> None:
        self._connection = connection


async def test_messages_go_at_or_above_the_level_asked_with_secrets_redacted() -> None:
    log = ProtocolLog(lambda: ["s3cret-value-1234"])
    warn, debug, never = FakeConnection(), FakeConnection(), FakeConnection()
    for connection, level in ((warn, "warning"), (debug, "debug")):
        await log.set_level(type("Ctx", (), {"session": FakeSession(connection)})(),
                            type("Params", (), {"level": level})())
    text = "breaker opened; key s3cret-value-1234 and sk-abcdefghijklmnop"
    assert await log.broadcast("info", text, "server.pool.health") == 1
    assert await log.broadcast("error", "failed", "x") == 2
    assert warn.messages == [("error", "failed", "x")]
    assert debug.messages[0] == ("info", "breaker opened; key [redacted] and [redacted]", "server.pool.health")
    assert never.messages == []


@pytest.mark.parametrize(("levelno", "level"), [(logging.DEBUG, "debug"), (logging.INFO, "info"),
                                                (logging.WARNING, "warning"), (logging.ERROR, "error"),
                                                (logging.CRITICAL, "critical")])
def test_python_levels_map_to_mcp_severities(levelno: int, level: str) -> None:
    assert mcp_level(levelno) == level
