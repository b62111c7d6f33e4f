"""The HTTP front of the server: Host/Origin check, body limit, bearer authentication, per-key limits.

Order of the layers, outermost first (each is the MCP SDK's own machinery where it has one):

1. Host/Origin check (the SDK's ``TransportSecurityMiddleware`` rules): a foreign ``Host`` gets 421, a
   foreign ``Origin`` 403, *before* the ``Authorization`` header is even read. The SDK checks these inside the
   transport, after authentication; with auth on that would answer a DNS-rebinding request with 401 and
   call the token verifier first.
2. Authentication: Starlette's ``AuthenticationMiddleware`` with the SDK's ``BearerAuthBackend``, the SDK's
   ``AuthContextMiddleware`` and ``RequireAuthMiddleware`` (401 + ``WWW-Authenticate``; 403
   ``insufficient_scope``). ``/.well-known/oauth-protected-resource…`` (RFC 9728) stays open.
3. Per-key limits: requests per minute (token bucket; 429 + ``Retry-After``) and concurrent POSTs (429).
4. The SDK's Streamable HTTP or SSE app, which also enforces the body-size limit (413) and checks
   Host/Origin again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.security import principal_from_scope
from server.security.settings import JwtSettings, LimitSettings

WELL_KNOWN = "/.well-known/"


class HostOriginGuard:
    """Refuses requests whose Host or Origin is not allowed, before anything else runs."""

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings) -> None:
        self.app = app
        self._check = TransportSecurityMiddleware(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self._check.validate_request(Request(scope), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


class KeyLimits:
    """429 with ``Retry-After`` over a key's request rate or concurrent-call limit (authenticated requests)."""

    def __init__(self, app: ASGIApp, limiter: KeyLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_from_scope(scope) if scope["type"] == "http" else None
        if principal is None or not principal.authenticated:
            await self.app(scope, receive, send)
            return
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
               limits: LimitSettings, jwt: JwtSettings | None = None) -> ASGIApp:
    """Wrap the SDK's transport app ``inner`` in the layers of this module (auth ones only with a verifier)."""
    app: ASGIApp = inner
    if verifier is not None:
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
