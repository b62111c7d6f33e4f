"""The HTTP front of the server: Host/Origin check, body limit, bearer authentication, per-key limits.

Order of the layers, outermost first (each is the MCP SDK's own machinery where it has one):

1. Host/Origin check (the SDK's ``TransportSecurityMiddleware`` rules): a foreign ``Host`` gets 421, a
   foreign ``Origin`` 403, *before* the ``Authorization`` header is even read. The SDK checks these inside the
   transport, after authentication; with auth on that would answer a DNS-rebinding request with 401 and
   call the token verifier first.
2. Authentication: Starlette's ``AuthenticationMiddleware`` with the SDK's ``BearerAuthBackend``, the SDK's
   ``AuthContextMiddleware`` and ``RequireAuthMiddleware`` (401 + ``WWW-Authenticate``; 403
   ``insufficient_scope``). ``/.well-known/oauth-protected-resource…`` (RFC 9728) stays open.
3. Per-key limits: requests per minute (token bucket; 429 + ``Retry-After``), concurrent POSTs (429) and,
   on Streamable HTTP, open handshake-era sessions (429; :mod:`server.security.sessions`).
4. The SDK's Streamable HTTP or SSE app, which also enforces the body-size limit (413) and checks
   Host/Origin again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.security import Principal, principal_from_scope
from server.security.sessions import HANDSHAKE_VERSIONS, SESSION_HEADER, VERSION_HEADER, SessionLimiter
from server.security.settings import JwtSettings, LimitSettings

WELL_KNOWN = "/.well-known/"
logger = logging.getLogger(__name__)


class HostOriginGuard:
    """Refuses requests whose Host or Origin is not allowed, before anything else runs. At DEBUG, logs each
    request's method, path (no query string), status, duration and principal: never a header or a body."""

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings) -> None:
        self.app = app
        self._check = TransportSecurityMiddleware(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self._check.validate_request(Request(scope), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            if logger.isEnabledFor(logging.DEBUG):
                await self._logged(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        watch, response = _watching(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            logger.debug("%s %s -> %d in %.1f ms (%s)", scope.get("method"), scope.get("path"), response.status,
                         (time.perf_counter() - started) * 1000, principal_from_scope(scope).id)


@dataclass
class _Response:
    status: int = 0
    headers: Sequence[tuple[bytes, bytes]] = ()


def _watching(send: Send) -> tuple[Send, _Response]:
    """``send``, noting the response's status and headers as they go out."""
    response = _Response()

    async def watch(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status, response.headers = message["status"], message.get("headers", ())
        await send(message)

    return watch, response


class RequireAuthExceptWellKnown:
    """The SDK's ``RequireAuthMiddleware`` on every path but RFC 9728 metadata."""

    def __init__(self, app: ASGIApp, required_scopes: Sequence[str], resource_metadata_url: Any = None) -> None:
        from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware

        self.app = app
        self._required = RequireAuthMiddleware(app, list(required_scopes), resource_metadata_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(WELL_KNOWN):
            await self._required(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class _Bucket:
    tokens: float
    updated: float
    in_flight: int = 0


@dataclass
class KeyLimiter:
    """Requests per minute (a token bucket of ``requests_per_minute`` refilled continuously) and concurrent
    calls per principal. Pure bookkeeping; :class:`KeyLimits` applies it."""

    requests_per_minute: int | None
    max_concurrent: int | None
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def admit(self, key: str) -> float | None:
        """Take one request for ``key``: ``None`` if allowed, else seconds until one would be."""
        if self.requests_per_minute is None:
            return None
        now = self.clock()
        rate = self.requests_per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.requests_per_minute), now)
        bucket.tokens = min(float(self.requests_per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / rate

    def enter(self, key: str) -> bool:
        if self.max_concurrent is None:
            return True
        bucket = self._buckets.setdefault(key, _Bucket(float(self.requests_per_minute or 0), self.clock()))
        if bucket.in_flight >= self.max_concurrent:
            return False
        bucket.in_flight += 1
        return True

    def leave(self, key: str) -> None:
        if self.max_concurrent is not None:
            self._buckets[key].in_flight -= 1


class _PerPrincipal:
    """Base of the per-key middleware: authenticated HTTP requests go to :meth:`handle`, the rest pass through."""

    def __init__(self, app: ASGIApp, limiter: Any) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_from_scope(scope) if scope["type"] == "http" else None
        if principal is None or not principal.authenticated:
            await self.app(scope, receive, send)
            return
        await self.handle(principal, scope, receive, send)

    async def handle(self, principal: Principal, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class KeyLimits(_PerPrincipal):
    """429 with ``Retry-After`` over a key's request rate or concurrent-call limit (authenticated requests)."""

    async def handle(self, principal: Principal, scope: Scope, receive: Receive, send: Send) -> None:
        wait_s = self.limiter.admit(principal.id)
        if wait_s is not None:
            await _too_many(scope, receive, send, wait_s, "request rate limit for this key exceeded")
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        if not self.limiter.enter(principal.id):
            await _too_many(scope, receive, send, 1.0, "too many concurrent calls for this key")
            return
        in_flight = True

        async def send_then_release(message: Message) -> None:
            # The call is over once its response's last byte goes out, though the app may still be winding down
            # (an SSE stream closing): release the slot before that byte, so a client that sends its next call
            # as soon as it has the reply is never refused for a call it has already finished.
            nonlocal in_flight
            if in_flight and message["type"] == "http.response.body" and not message.get("more_body", False):
                in_flight = False
                self.limiter.leave(principal.id)
            await send(message)

        try:
            await self.app(scope, receive, send_then_release)
        finally:
            if in_flight:
                self.limiter.leave(principal.id)


async def _too_many(scope: Scope, receive: Receive, send: Send, wait_s: float, message: str) -> None:
    response = JSONResponse({"error": "rate_limited", "error_description": message}, status_code=429,
                            headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
    await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


class SessionLimits(_PerPrincipal):
    """Each key's allowance of handshake-era Streamable HTTP sessions (:mod:`server.security.sessions`): 429 with
    ``Retry-After`` and a JSON-RPC error over it."""

    async def handle(self, principal: Principal, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = _header(scope, SESSION_HEADER)
        if session_id is not None:
            await self._in_session(principal.id, session_id, scope, receive, send)
            return
        version = _header(scope, VERSION_HEADER)
        if scope.get("method") != "POST" or (version is not None and version not in HANDSHAKE_VERSIONS):
            await self.app(scope, receive, send)  # cannot open a session
            return
        wait_s = self.limiter.reserve(principal.id)
        if wait_s is not None:
            await _refuse_session(scope, receive, send, self.limiter.max_per_key, wait_s)
            return
        watch, response = _watching(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            opened = [v.decode("latin-1") for k, v in response.headers if k == SESSION_HEADER]
            self.limiter.settle(principal.id, opened[0] if opened and 0 < response.status < 400 else None)

    async def _in_session(self, principal: str, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.limiter.begin(principal, session_id):
            await self.app(scope, receive, send)  # not this key's session: the SDK answers 404
            return
        watch, response = _watching(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            code = response.status
            gone = code == 404 or (scope.get("method") == "DELETE" and 200 <= code < 300)
            self.limiter.end(principal, session_id, gone=gone)


async def _refuse_session(scope: Scope, receive: Receive, send: Send, limit: int, wait_s: float) -> None:
    message = (f"too many open sessions for this key (limit {limit}): close one (HTTP DELETE with its "
               f"Mcp-Session-Id) or retry after {math.ceil(wait_s)} s, when an idle one expires")
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    response = JSONResponse(body, status_code=429, headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
    await response(scope, receive, send)


class WellKnownMetadata:
    """Serves the RFC 9728 protected-resource metadata (the SDK's routes) and passes everything else on."""

    def __init__(self, app: ASGIApp, jwt: JwtSettings, required_scopes: Sequence[str]) -> None:
        from mcp.server.auth.routes import create_protected_resource_routes
        from pydantic import AnyHttpUrl
        from starlette.routing import Router

        servers = [AnyHttpUrl(s) for s in (jwt.authorization_servers or (jwt.issuer,))]
        self._router = Router(routes=create_protected_resource_routes(
            resource_url=AnyHttpUrl(jwt.audience), authorization_servers=servers,
            scopes_supported=list(required_scopes) or None))
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(WELL_KNOWN + "oauth-protected-resource"):
            await self._router(scope, receive, send)
            return
        await self.app(scope, receive, send)


def secure_app(inner: ASGIApp, *, security: TransportSecuritySettings, verifier: Any | None,
               limits: LimitSettings, jwt: JwtSettings | None = None, sessions: bool = False) -> ASGIApp:
    """Wrap the SDK's transport app ``inner`` in the layers of this module (auth ones only with a verifier).

    Args:
        sessions: ``inner`` is the Streamable HTTP app: limit each key's handshake-era sessions.
    """
    app: ASGIApp = inner
    if verifier is not None:
        if sessions:
            app = SessionLimits(app, SessionLimiter(limits.max_sessions_per_key, limits.session_idle_s))
        from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
        from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
        from starlette.middleware.authentication import AuthenticationMiddleware

        required = list(jwt.required_scopes) if jwt else []
        metadata_url = None
        if jwt is not None:
            from mcp.server.auth.routes import build_resource_metadata_url
            from pydantic import AnyHttpUrl

            metadata_url = build_resource_metadata_url(AnyHttpUrl(jwt.audience))
        app = KeyLimits(app, KeyLimiter(limits.requests_per_minute, limits.max_concurrent_calls))
        app = RequireAuthExceptWellKnown(app, required, metadata_url)
        if jwt is not None:
            app = WellKnownMetadata(app, jwt, required)
        app = AuthContextMiddleware(app)
        app = AuthenticationMiddleware(app, backend=BearerAuthBackend(verifier))
    return HostOriginGuard(app, security)
