"""MCP logging (``logging/setLevel`` and ``notifications/message``) for the clients that use it.

SEP-2577 deprecates protocol logging in the 2026-07-28 revision, where a client opts in per request
(``_meta`` log level) and the SDK gates delivery; handshake-era clients set a level for their connection with
``logging/setLevel``, which this module serves (and so the server declares the ``logging`` capability). Nothing
essential rides on it: the server's own log goes to stderr as always.
"""

from __future__ import annotations

import weakref
from typing import Any

from mcp.server import MCPServer
from mcp_types import SetLevelRequestParams

from server.app.sdk_seams import connection_of, serve_request

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
"""RFC 5424 severities, least severe first (MCP logging, 2025-11-25 ``server/utilities/logging``)."""


class ProtocolLog:
    """The log level each connected (handshake-era) client asked for."""

    def __init__(self) -> None:
        self._levels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def serve(self, mcp: MCPServer) -> None:
        """Serve ``logging/setLevel`` on ``mcp`` (declaring the ``logging`` capability)."""
        serve_request(mcp, "logging/setLevel", SetLevelRequestParams, self.set_level)

    async def set_level(self, ctx: Any, params: SetLevelRequestParams) -> dict[str, Any]:
        """Remember the connection's level; the answer is the empty result the spec names."""
        self._levels[connection_of(ctx.session)] = params.level
        return {}

    def level_of(self, session: Any) -> str | None:
        """The level the session's connection asked for (``None``: it never asked, so it gets no messages)."""
        return self._levels.get(connection_of(session))

    def wants(self, session: Any, level: str) -> bool:
        """Whether a message at ``level`` goes to the session's client."""
        asked = self.level_of(session)
        return asked is not None and LEVELS.index(level) >= LEVELS.index(asked)
