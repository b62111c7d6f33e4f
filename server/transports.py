"""Serving the MCP server over stdio, SSE or Streamable HTTP, with DNS-rebinding protection and clean shutdown.

HTTP transports bind to loopback only until authentication exists. Host and Origin are validated on every
listening transport: the SDK does that by itself only for loopback binds, so the settings are always passed
explicitly. SIGTERM and Ctrl-C end the server through cancellation, so the dependencies' shutdown (which
flushes queued call records) always runs.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
from collections.abc import Sequence
from typing import Literal

import anyio
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from server.errors import ConfigError

logger = logging.getLogger(__name__)
Transport = Literal["stdio", "sse", "http"]
_LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_host(host: str) -> None:
    """Refuse a non-loopback bind address.

    Raises:
        ConfigError: ``host`` is not a loopback address.
    """
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host}: authentication is required before the server may listen on a "
            "non-loopback address, and it is not available in this version; use 127.0.0.1 (the default)",
            key="--host",
        )


def security_settings(host: str, port: int, allowed_hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    """Host/Origin allow-lists: the loopback names on ``port`` plus ``allowed_hosts`` (each ``name`` or ``name:port``)."""
    names = ["127.0.0.1", "localhost", "[::1]"]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        names.append(host if ":" not in host else f"[{host.strip('[]')}]")
    hosts = [f"{name}:{port}" for name in names]
    origins = [f"{scheme}://{name}:{port}" for name in names for scheme in ("http", "https")]
    for extra in allowed_hosts:
        extra = extra.strip()
        if not extra:
            continue
        with_port = extra if ":" in extra.split("]")[-1] else f"{extra}:{port}"
        hosts += [extra, with_port]
        origins += [f"http://{extra}", f"https://{extra}", f"http://{with_port}", f"https://{with_port}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


async def serve(
    mcp: MCPServer,
    transport: Transport = "stdio",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve until the transport ends (stdin closed, server stopped) or SIGTERM/SIGINT arrives."""
    if transport != "stdio":
        check_bind_host(host)
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, group.cancel_scope)
        if transport == "stdio":
            await mcp.run_stdio_async()
        elif transport == "sse":
            security = security_settings(host, port, allowed_hosts)
            await mcp.run_sse_async(host=host, port=port, transport_security=security)
        else:
            security = security_settings(host, port, allowed_hosts)
            await mcp.run_streamable_http_async(host=host, port=port, transport_security=security)
        group.cancel_scope.cancel()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            scope.cancel()
            return
