"""Calls to tools of downstream MCP servers (workflow ``tool`` steps): the server acts as an MCP client.

Servers come from the configuration's ``[mcp_servers.NAME]`` tables (like Claude Desktop's ``mcpServers``):
``command``/``args``/``env`` starts a stdio server for the call, ``url`` reaches a Streamable HTTP one. One
connection per call keeps runs independent and leaves nothing running between steps; the MCP client is
imported on first use.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio

from server.config import McpServerConfig
from server.security.redact import redact
from server.workflows.steps import StepFailed

logger = logging.getLogger(__name__)
_MAX_TEXT = 1_000_000


class DownstreamServers:
    """The configured downstream MCP servers.

    Args:
        servers: name -> configuration.
        secrets: values redacted from any error text (env values, headers).
        allow_addresses: ``[network].allow_addresses``: exceptions to the address policy a server's ``url`` is
            checked against (after DNS resolution) before each connection (:mod:`server.security.addresses`).
        resolve: ``socket.getaddrinfo``-shaped resolver (tests pass a fake one).

    Only the configured ``headers`` are sent to a URL server: nothing of the MCP client's own request (its
    ``Authorization`` header above all) is ever forwarded.
    """

    def __init__(self, servers: Mapping[str, McpServerConfig], secrets: Iterable[str] = (), *,
                 allow_addresses: Sequence[str] = (), resolve: Callable[..., Any] = socket.getaddrinfo) -> None:
        self._servers = dict(servers)
        self._secrets = list(secrets)
        self._allow = tuple(allow_addresses)
        self._resolve = resolve

    async def call(self, server: str, tool: str, arguments: Mapping[str, Any], timeout_s: float | None
                   ) -> dict[str, Any]:
        """Call ``tool`` on ``server``.

        Returns:
            ``{"text": <text content joined>, "content": [<content blocks>], "structured": <structured content>}``.

        Raises:
            StepFailed: ``unknown_server``, ``connection`` (could not reach or start the server), ``timeout``, or
                ``tool_error`` (the tool answered with an error, or the server refused the call).
        """
        from mcp import Client, MCPError, StdioServerParameters

        config = self._servers.get(server)
        if config is None:
            known = ", ".join(sorted(self._servers)) or "none configured"
            raise StepFailed(f"unknown MCP server {server!r}; configured: {known}", error_class="unknown_server")
        if config.command is not None:
            target: Any = StdioServerParameters(command=config.command, args=list(config.args),
                                                env=dict(config.env) or None, cwd=config.cwd)
        else:
            from server.security.addresses import AddressRefused, check_url_resolved

            try:
                await anyio.to_thread.run_sync(lambda: check_url_resolved(config.url, self._allow,
                                                                          resolve=self._resolve))
            except AddressRefused as exc:
                raise StepFailed(f"MCP server {server!r}: {exc}", error_class="address_refused") from None
            target = config.url if not config.headers else _http_transport(config)
        limit = min(timeout_s or config.timeout_s, config.timeout_s)
        try:
            with anyio.fail_after(limit):
                async with Client(target, read_timeout_seconds=limit) as client:
                    result = await client.call_tool(tool, dict(arguments))
        except TimeoutError:
            raise StepFailed(f"MCP server {server!r} did not answer {tool!r} within {limit:g} s",
                             error_class="timeout") from None
        except MCPError as exc:
            raise StepFailed(f"MCP server {server!r} refused {tool!r}: {self._clean(exc)}",
                             error_class="tool_error") from None
        except (OSError, ExceptionGroup, RuntimeError) as exc:
            raise StepFailed(f"could not reach MCP server {server!r}: {self._clean(exc)}",
                             error_class="connection") from None
        blocks = [block.model_dump(mode="json", exclude_none=True) for block in result.content]
        text = "\n".join(b.get("text", "") for b in blocks if b.get("type") == "text")[:_MAX_TEXT]
        if result.is_error:
            raise StepFailed(f"tool {tool!r} on {server!r} failed: {redact(text, self._secrets)[:500]}",
                             error_class="tool_error")
        return {"text": text, "content": blocks, "structured": result.structured_content}

    def _clean(self, exc: BaseException) -> str:
        if isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0] if exc.exceptions else exc
        return redact(str(exc) or type(exc).__name__, self._secrets)[:500]


def _http_transport(config: McpServerConfig) -> Any:
    """A Streamable HTTP transport that sends the configured headers."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    return streamable_http_client(config.url, http_client=httpx2.AsyncClient(headers=dict(config.headers)))
