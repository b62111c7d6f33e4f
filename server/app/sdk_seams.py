"""The SDK seams: the places this project reaches past the MCP SDK's public API.

Each seam exists because ``MCPServer`` (mcp 2.x) offers no public hook for what it does; each says why. When
the SDK grows the hook, the seam goes. Checked against: mcp 2.3.0 (``mcp/server/mcpserver/server.py``,
``mcp/server/lowlevel/server.py``, ``mcp/server/session.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server import MCPServer

SDK_VERSION_CHECKED = "2.3.0"


def serve_request(mcp: MCPServer, method: str, params_type: type[Any],
                  handler: Callable[[Any, Any], Awaitable[Any]]) -> None:
    """Serve a spec request method ``MCPServer`` registers no handler for (``logging/setLevel``).

    Why: ``MCPServer`` has no public way to add a request handler, and an extension may not bind a spec method
    (``MethodBinding`` refuses it; the SDK's docstring points to the low-level ``add_request_handler``). The
    low-level server then also declares the matching capability (``logging`` for ``logging/setLevel``).
    Private: ``MCPServer._lowlevel_server`` (its ``add_request_handler`` is public on the low-level server).
    """
    mcp._lowlevel_server.add_request_handler(method, params_type, handler)  # noqa: SLF001 - see the docstring


def connection_of(session: Any) -> Any:
    """The connection a request's session belongs to (a ``ServerSession`` is made per request; the connection
    under it is what lasts), to remember a client's log level by.

    Why: the SDK keeps the connection on the session privately. Private: ``ServerSession._connection``
    (the session itself when it has none).
    """
    return getattr(session, "_connection", session)
