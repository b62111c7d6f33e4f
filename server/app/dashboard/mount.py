"""Where the dashboard sits in the HTTP app: beside the MCP transport, in front of nothing else.

``/dashboard…`` goes to the dashboard (``/`` redirects there), behind the same Host/Origin check as ``/mcp``
(a foreign ``Host`` gets 421, a foreign ``Origin`` 403, before anything else runs). ``/health`` and ``/ready``
go to the probes, without the Host check: a load balancer probes by address, and they reveal nothing. Every
other path and the ASGI lifespan go to the MCP app as before. Simple mode (and ``[dashboard] enabled =
false``) answers ``/dashboard…`` with 501 and why, importing nothing outside ``mcp``'s dependencies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from server.app.dashboard.probes import health, ready_endpoint
from server.security.http import HostOriginGuard

if TYPE_CHECKING:
    from server.dependencies import Dependencies

logger = logging.getLogger(__name__)
PREFIX = "/dashboard"
PROBES = ("/", "/health", "/ready")  # and "/" itself, which points at the dashboard
Mounter = Callable[[ASGIApp, TransportSecuritySettings], ASGIApp]


def dashboard_mounter(deps: Dependencies, verifier: Any | None) -> Mounter:
    """What :func:`server.app.transports.http_app` calls to put the dashboard beside the MCP app.

    Args:
        deps: the server's dependencies (the same services the MCP tools use).
        verifier: the bearer verifier of ``/mcp`` (``None``: authentication off; the dashboard then serves the
            machine's own user, as ``/mcp`` does).
    """

    def mount(mcp_app: ASGIApp, security: TransportSecuritySettings) -> ASGIApp:
        probes = Router(routes=[Route("/", _to_dashboard, methods=["GET", "HEAD"]),
                                Route("/health", health, methods=["GET", "HEAD"]),
                                Route("/ready", ready_endpoint(deps), methods=["GET", "HEAD"])])
        settings = deps.config.dashboard
        if deps.simple or not settings.enabled:
            pages: ASGIApp = _unavailable("the dashboard needs full mode: start the server without --simple, "
                                          "with the full install (pip install ai-orchestration-mcp)"
                                          if deps.simple else "the dashboard is off ([dashboard] enabled = false)")
        else:
            if settings.session_secret is None:
                logger.warning("dashboard sessions are signed with a key made for this process: they end when it "
                               "stops and another replica refuses them; set %s (32+ characters, the same on every "
                               "replica)", settings.session_secret_env)
            pages = BuiltAtFirstRequest(lambda: _pages(deps, verifier), deps)
        return Beside(mcp_app, HostOriginGuard(pages, security), probes)

    return mount


def _pages(deps: Dependencies, verifier: Any | None) -> ASGIApp:
    from server.app.dashboard.web import dashboard_app  # Jinja2 and the pages: full mode only

    return dashboard_app(deps, verifier)


class BuiltAtFirstRequest:
    """An ASGI app made by ``build`` at its first request (so a start imports no template engine), served once
    the server's stored state is loaded (:attr:`Dependencies.readiness`: the pages list patterns and agents)."""

    def __init__(self, build: Callable[[], ASGIApp], deps: Dependencies) -> None:
        self._build = build
        self._deps = deps
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._deps.readiness is not None and not self._deps.readiness.ready:
            await self._deps.readiness.settle()
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


class Beside:
    """Routes ``/dashboard…`` to ``pages`` and the probe paths to ``probes``; everything else to ``app``."""

    def __init__(self, app: ASGIApp, pages: ASGIApp, probes: ASGIApp) -> None:
        self.app, self.pages, self.probes = app, pages, probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == PREFIX or path.startswith(PREFIX + "/"):
                await self.pages(scope, receive, send)
                return
            if path in PROBES:
                await self.probes(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _to_dashboard(_: Any) -> RedirectResponse:
    return RedirectResponse(PREFIX, status_code=307)


def _unavailable(message: str) -> ASGIApp:
    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(message + "\n", status_code=501)(scope, receive, send)

    return answer
