"""The SDK seams: the only places this project reaches past the MCP SDK's public API.

Each seam below exists because ``MCPServer`` (mcp 2.x) offers no public hook for what it does; each says why,
and which SDK version it was checked against (``tests/unit/test_architecture.py`` fails any SDK-private access
outside this module, and the integration tests exercise every seam through real clients). When the SDK grows
the hook, the seam goes.

Checked against: mcp 2.3.0 (``mcp/server/mcpserver/server.py``, ``mcp/server/lowlevel/server.py``,
``mcp/server/session.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server import MCPServer, NotificationOptions
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

SDK_VERSION_CHECKED = "2.3.0"


def advertise_list_changed(mcp: MCPServer) -> None:
    """Declare ``listChanged`` for prompts and resources to handshake-era clients.

    Why: patterns change the prompt and resource lists at run time and ``register_pattern`` notifies. The
    2026-07-28 era derives the flags from ``subscriptions/listen`` being served; the handshake era takes them
    from the ``NotificationOptions`` that ``MCPServer`` never passes (the SDK's own TODO "L53"), so every
    transport's ``create_initialization_options()`` call on the low-level server gets them here.
    Private: ``MCPServer._lowlevel_server``.
    """
    lowlevel = mcp._lowlevel_server  # noqa: SLF001 - see the docstring
    create = lowlevel.create_initialization_options

    def with_list_changed(notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any) -> Any:
        options = notification_options or NotificationOptions(prompts_changed=True, resources_changed=True)
        return create(options, *args, **kwargs)

    lowlevel.create_initialization_options = with_list_changed  # type: ignore[method-assign]


def serve_resource_subscriptions(
    mcp: MCPServer,
    subscribe: Callable[[Any, SubscribeRequestParams], Awaitable[EmptyResult]],
    unsubscribe: Callable[[Any, UnsubscribeRequestParams], Awaitable[EmptyResult]],
) -> None:
    """Serve ``resources/subscribe`` and ``resources/unsubscribe`` (handshake era) with these handlers.

    Why: ``MCPServer`` registers no handler for them (2026-07-28 clients use ``subscriptions/listen``, which it
    serves) and has no public way to add a request handler. Private: ``MCPServer._lowlevel_server``
    (its ``add_request_handler`` is public on the low-level server).
    """
    lowlevel = mcp._lowlevel_server  # noqa: SLF001 - see the docstring
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


def connection_of(session: Any) -> Any:
    """The connection a request's session belongs to (a ``ServerSession`` is made per request; the connection
    under it is what lasts), to remember a handshake-era subscriber by.

    Why: the SDK keeps the connection on the session privately. Private: ``ServerSession._connection``
    (the session itself when it has none).
    """
    return getattr(session, "_connection", session)


def serve_request(mcp: MCPServer, method: str, params_type: type[Any],
                  handler: Callable[[Any, Any], Awaitable[Any]]) -> None:
    """Serve a spec request method ``MCPServer`` registers no handler for (``logging/setLevel``).

    Why: ``MCPServer`` has no public way to add a request handler, and an extension may not bind a spec method
    (``MethodBinding`` refuses it; the SDK's docstring points to the low-level ``add_request_handler``). The
    low-level server then also declares the matching capability (``logging`` for ``logging/setLevel``).
    Private: ``MCPServer._lowlevel_server`` (its ``add_request_handler`` is public on the low-level server).
    """
    mcp._lowlevel_server.add_request_handler(method, params_type, handler)  # noqa: SLF001 - see the docstring
