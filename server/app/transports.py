"""Serving the MCP server over stdio, SSE or Streamable HTTP, with DNS-rebinding protection and clean shutdown.

HTTP transports bind to a non-loopback address only with authentication on (:mod:`server.security.http`
puts Host/Origin checks, bearer authentication and per-key limits in front of the SDK's transport). Host and Origin are validated on every
listening transport: the SDK does that by itself only for loopback binds, so the settings are always passed
explicitly. SIGTERM and Ctrl-C end the server through cancellation, so the dependencies' shutdown (which
flushes queued call records) always runs. In HTTP and SSE mode the stop is graceful: uvicorn stops accepting,
streams still open (an SSE connection, a long tool call's event stream) are ended cleanly, the app's lifespan
shuts down, and the process exits 0 with nothing logged at ERROR; a second signal forces the exit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from server.errors import ConfigError
from server.security.settings import JwtSettings, LimitSettings

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


def check_bind_host(host: str, auth_enabled: bool = False) -> None:
    """Refuse a non-loopback bind address unless authentication is on.

    Raises:
        ConfigError: ``host`` is not a loopback address and authentication is off.
    """
    if not is_loopback(host) and not auth_enabled:
        raise ConfigError(
            f"refusing to listen on {host}: a non-loopback address needs authentication; create a key "
            "(ai-orchestration-mcp keys create NAME) and leave [auth].enabled unset or true, or use 127.0.0.1",
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
    verifier: Any | None = None,
    limits: LimitSettings | None = None,
    jwt: JwtSettings | None = None,
    dashboard: Callable[[Any, TransportSecuritySettings], Any] | None = None,
    replica_id: str | None = None,
) -> None:
    """Serve until the transport ends (stdin closed, server stopped) or SIGTERM/SIGINT arrives.

    Args:
        verifier: a ``TokenVerifier`` (:mod:`server.security.verifiers`): HTTP requests need a bearer token.
        limits: body size and per-key limits (defaults: :class:`LimitSettings`).
        jwt: JWT settings, for the protected-resource metadata and required scopes.
        dashboard: puts the dashboard beside the MCP app (:func:`server.app.dashboard.dashboard_mounter`).
        replica_id: one replica among several (team deployment): Streamable HTTP session ids carry it
            (:mod:`server.app.replica_sessions`) for the proxy's session affinity.
    """
    if transport != "stdio":
        check_bind_host(host, verifier is not None)
    async with anyio.create_task_group() as group:
        if transport == "stdio":
            group.start_soon(_stop_on_signal, group.cancel_scope.cancel)
            await mcp.run_stdio_async()
        else:
            stopping = anyio.Event()
            app = http_app(mcp, transport, host=host, port=port, allowed_hosts=allowed_hosts, verifier=verifier,
                           limits=limits, jwt=jwt, dashboard=dashboard)
            if replica_id is not None and transport == "http":
                from server.app.replica_sessions import ReplicaSessionIds

                app = ReplicaSessionIds(app, replica_id)
            server = _Uvicorn(_ending_streams_on(stopping, app), host, port)

            def stop() -> None:
                if stopping.is_set():
                    server.force_exit = True  # a second signal: do not wait any longer
                stopping.set()
                server.should_exit = True

            group.start_soon(_stop_on_signal, stop, True)
            await server.serve()
        group.cancel_scope.cancel()


def http_app(mcp: MCPServer, transport: Transport, *, host: str, port: int, allowed_hosts: Sequence[str] = (),
             verifier: Any | None = None, limits: LimitSettings | None = None, jwt: JwtSettings | None = None,
             dashboard: Callable[[Any, TransportSecuritySettings], Any] | None = None) -> Any:
    """The ASGI app for ``sse`` or ``http``: the SDK's transport app inside :func:`server.security.http.secure_app`,
    and beside it the dashboard when ``dashboard`` is given."""
    from server.security.http import secure_app

    limits = limits or LimitSettings()
    security = security_settings(host, port, allowed_hosts)
    if transport == "sse":
        inner = mcp.sse_app(transport_security=security, host=host, max_request_body_size=limits.max_body_bytes)
    else:
        inner = mcp.streamable_http_app(transport_security=security, host=host,
                                        max_request_body_size=limits.max_body_bytes)
    app = secure_app(inner, security=security, verifier=verifier, limits=limits, jwt=jwt)
    return app if dashboard is None else dashboard(app, security)


GRACEFUL_S = 10.0
"""How long a stop waits for requests in flight (streams are ended at once) before it cancels them."""


def _Uvicorn(app: Any, host: str, port: int) -> Any:  # noqa: N802 - builds the server object, like a class
    """A ``uvicorn.Server`` for ``app`` (the SDK's ``run_*_async``, with our app) that leaves signals to us:
    :func:`serve` stops it gracefully (``should_exit``) instead of uvicorn re-raising the signal after it."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # signals are handled by serve()
            yield

    # log_config=None, log_level=None: uvicorn logs through the entry point's (redacting) handler at its levels.
    # ws="none": MCP speaks no WebSocket, so uvicorn loads no WebSocket library (it would, when one is installed).
    return Server(uvicorn.Config(app, host=host, port=port, log_level=None, log_config=None, ws="none",
                                 timeout_graceful_shutdown=GRACEFUL_S))


def _ending_streams_on(stopping: anyio.Event, app: Any) -> Any:
    """``app``, whose HTTP responses end cleanly once ``stopping`` is set: a stream still open (SSE) gets its
    last, empty body chunk, so the server can drain without cancelling requests (and logging them)."""

    async def ending(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        state = {"started": False, "ended": False}

        async def tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["ended"] = True
            await send(message)

        async with anyio.create_task_group() as group:
            async def end_on_stop() -> None:
                await stopping.wait()
                group.cancel_scope.cancel()

            group.start_soon(end_on_stop)
            await app(scope, receive, tracked)
            group.cancel_scope.cancel()
        if state["started"] and not state["ended"]:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif not state["started"]:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": b"shutting down"})

    return ending


async def _stop_on_signal(stop: Any, repeat: bool = False) -> None:
    """Call ``stop()`` on SIGTERM or SIGINT (on every one with ``repeat``)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            stop()
            if not repeat:
                return
