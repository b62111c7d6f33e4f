"""MCP logging (``logging/setLevel`` and ``notifications/message``) for the clients that use it.

SEP-2577 deprecates protocol logging in the 2026-07-28 revision, where a client opts in per request
(``_meta`` log level) and the SDK gates delivery on that request's stream. Handshake-era clients set a level for
their connection with ``logging/setLevel``, which this module serves (so the server declares the ``logging``
capability); from then on the server's notable events reach that connection as ``notifications/message`` at or
above the level: provider fallbacks, circuit breakers opening, incidents opened and resolved, workflow run state
changes (the records of :data:`NOTABLE_LOGGERS` at INFO and above), with secrets redacted
(:func:`server.security.redact.redact`). A client that never asked gets none. Nothing essential rides on it:
the server's own log goes to stderr as always.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp_types import SetLevelRequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from server.app.sdk_seams import connection_of, serve_request
from server.security.redact import redact

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
"""RFC 5424 severities, least severe first (MCP 2025-11-25, ``server/utilities/logging``)."""
NOTABLE_LOGGERS = ("server.pool.fallback", "server.pool.health", "server.operations.incidents",
                   "server.workflows.run_records")
"""The loggers whose records are notable events for clients (the MCP ``logger`` field carries the name)."""
QUEUE_SIZE = 256
"""Events waiting to be sent; more are dropped (a slow client never holds the server back)."""


def mcp_level(levelno: int) -> str:
    """The MCP severity of a Python logging level."""
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    return "info" if levelno >= logging.INFO else "debug"


class ProtocolLog:
    """The log level each connected (handshake-era) client asked for, and the forwarding of notable events.

    Args:
        secrets: the configured secret values, redacted from every message (with key-shaped text).
    """

    def __init__(self, secrets: Callable[[], Sequence[str]] = tuple) -> None:
        self._levels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._secrets = secrets
        self._send: Any = None
        self._token: Any = None
        self._loop_thread: int | None = None
        self._depth = 0

    def serve(self, mcp: MCPServer) -> None:
        """Serve ``logging/setLevel`` on ``mcp`` (declaring the ``logging`` capability)."""
        serve_request(mcp, "logging/setLevel", SetLevelRequestParams, self.set_level)

    async def set_level(self, ctx: Any, params: SetLevelRequestParams) -> dict[str, Any]:
        """Remember the connection's level; the answer is the empty result the spec names."""
        self._levels[connection_of(ctx.session)] = params.level
        return {}

    def wants(self, connection: Any, level: str) -> bool:
        """Whether a message at ``level`` goes to ``connection`` (one that never asked gets none)."""
        asked = self._levels.get(connection)
        return asked is not None and LEVELS.index(level) >= LEVELS.index(asked)

    async def send(self, session: Any, level: str, data: Any, logger: str | None = None,
                   related_request_id: Any = None) -> bool:
        """Send one message to the client of a request's ``session`` if its connection asked for ``level`` (a
        2026-07-28 request: if the request opted in; the SDK checks). Returns whether it was offered."""
        if session.protocol_version not in MODERN_PROTOCOL_VERSIONS and not self.wants(connection_of(session), level):
            return False
        text = redact(data, self._secrets()) if isinstance(data, str) else data
        await session.send_log_message(level, text, logger, related_request_id=related_request_id)
        return True

    async def broadcast(self, level: str, data: Any, logger: str | None = None) -> int:
        """Send one message to every connection that asked for ``level`` or below; returns how many got it."""
        text = redact(data, self._secrets()) if isinstance(data, str) else data
        sent = 0
        for connection in list(self._levels.keys()):
            if not self.wants(connection, level):
                continue
            try:
                await connection.log(level, text, logger)
                sent += 1
            except Exception:  # noqa: BLE001 - a closed connection: the others still get it
                self._levels.pop(connection, None)
        return sent

    @asynccontextmanager
    async def forwarding(self) -> AsyncIterator[None]:
        """While the block runs, forward the records of :data:`NOTABLE_LOGGERS` to the clients that asked
        (re-entrant: SSE runs a lifespan per connection; the outermost block forwards)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        send, receive = anyio.create_memory_object_stream[tuple[str, str, str]](QUEUE_SIZE)
        self._send, self._token, self._loop_thread = send, anyio.lowlevel.current_token(), threading.get_ident()
        handler = _Forward(self)
        for name in NOTABLE_LOGGERS:
            logging.getLogger(name).addHandler(handler)

        async def deliver() -> None:
            async with receive:
                async for level, message, logger in receive:
                    await self.broadcast(level, message, logger)

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(deliver)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        finally:
            for name in NOTABLE_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            self._send, self._depth = None, 0
            send.close()

    def offer(self, record: logging.LogRecord) -> None:
        """Queue one record for the clients (dropped when nobody asked, or the queue is full)."""
        send = self._send
        if send is None or not self._levels:
            return
        item = (mcp_level(record.levelno), record.getMessage(), record.name)
        try:
            if threading.get_ident() == self._loop_thread:
                send.send_nowait(item)
            else:
                anyio.from_thread.run_sync(send.send_nowait, item, token=self._token)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
            pass  # full or closing: notifications are best effort


class _Forward(logging.Handler):
    def __init__(self, log: ProtocolLog) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log.offer(record)
        except Exception:  # noqa: BLE001 - logging must never fail the caller
            self.handleError(record)
