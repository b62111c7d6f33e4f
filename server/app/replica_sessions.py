"""Handshake-era session ids that name their replica, so a reverse proxy can send a session back to it.

Streamable HTTP sessions (``Mcp-Session-Id``, handshake era) live in one process: the SDK keeps each session's
transport in memory. Behind a proxy with several replicas, every request of a session must reach the replica
that opened it. This ASGI layer, outside the SDK's app, prefixes the session id the SDK makes with the replica
id on the way out (``<replica>-<sdk id>``) and takes the prefix off on the way in, so the proxy routes on the
header alone (nginx: a ``map`` on ``$http_mcp_session_id``; see the README's Team deployment section). A
request that arrives with another replica's session id (a proxy without the route) gets 404 naming the replica,
as the SDK answers an unknown session. Only ASGI messages are touched, nothing of the SDK's.

Sessionless (2026-07-28) requests carry no session id and pass through unchanged: any replica answers them.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"mcp-session-id"
SDK_ID = re.compile(rb"^[0-9a-f]{32}$")  # uuid4().hex, as the SDK makes them (checked on mcp 2.3)


class ReplicaSessionIds:
    """Wrap an ASGI app so handshake-era session ids carry ``replica_id`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.prefix = f"{replica_id}-".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        for index, (name, value) in enumerate(headers):
            if name != HEADER:
                continue
            if value.startswith(self.prefix) and SDK_ID.match(value[len(self.prefix):]):
                headers[index] = (name, value[len(self.prefix):])
                scope = {**scope, "headers": headers}
                break
            await _not_here(value, send)
            return

        async def send_prefixed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    (name, self.prefix + value if name == HEADER and SDK_ID.match(value) else value)
                    for name, value in message.get("headers") or []]}
            await send(message)

        await self.app(scope, receive, send_prefixed)


async def _not_here(session_id: bytes, send: Send) -> None:
    owner = session_id.rsplit(b"-", 1)[0].decode("ascii", "replace")[:64] if b"-" in session_id else "?"
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32001, "message": f"Session not found: it belongs to replica {owner!r}; route requests by "
                                   "Mcp-Session-Id (see the team deployment's proxy configuration)"}}).encode()
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
