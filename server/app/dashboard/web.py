"""The dashboard's Starlette app: routes, login and sessions, CSRF, roles, security headers, rendering.

Pages (full mode, HTTP and SSE transports), all under ``/dashboard``:

=============================  ======================================================================
``GET  /dashboard``            overview: calls, error rate, p95 latency, cost over 1h / 24h / 7d (SVG charts)
``GET  /dashboard/providers``  the pool: circuit, cooldown, in flight, latency, error rate, spend today
``GET  /dashboard/runs``       runs (status and workflow filters, paging): a user's own, an admin's all
``GET  /dashboard/runs/{id}``  a run: its DAG, steps with status and timings; approve / reject (admins)
``GET  /dashboard/incidents``  open and recent incidents; acknowledge (admins)
``GET  /dashboard/patterns``   patterns and agents with their versions (read only)
``…/live``                     the overview's and a run's live region, fetched every ``[dashboard] refresh_s``
=============================  ======================================================================

Every response carries a strict Content-Security-Policy (``script-src 'self'``: no inline script or style),
``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` (with ``no-referrer`` browsers send ``Origin: null`` on form posts) and ``Cache-Control: no-store``. Requests count
against the same per-key rate (``[limits] requests_per_minute``) as ``/mcp``. Data comes from the core
services the MCP tools call (:mod:`server.app.dashboard.pages`), never from SQL.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.app.dashboard import pages
from server.app.dashboard.formatting import FILTERS
from server.app.dashboard.sessions import COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE, Session, SessionSigner
from server.security import LOCAL, Forbidden, Principal, require_role
from server.security.http import KeyLimiter
from server.security.keys import hash_key

if TYPE_CHECKING:
    from server.dependencies import Dependencies

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP, "x-frame-options": "DENY", "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin", "cache-control": "no-store", "cross-origin-opener-policy": "same-origin",
}
MAX_FORM_BYTES = 16_384


class FormError(ValueError):
    """A form that is too large, of the wrong type, or with fields the endpoint does not take."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who is asking: the principal, their session, and a cookie to set when the session is new."""

    principal: Principal
    session: Session
    new_cookie: str | None = None


def dashboard_app(deps: Dependencies, verifier: Any | None, *, clock: Callable[[], float] = time.time) -> ASGIApp:
    """The dashboard over ``deps``; ``verifier`` is ``/mcp``'s bearer verifier (``None``: authentication off)."""
    return SecurityHeaders(Dashboard(deps, verifier, clock=clock).app)


def templates() -> Jinja2Templates:
    """The page templates (autoescaped, strict about undefined names) with the formatting filters."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    return Jinja2Templates(env=env)


class Dashboard:
    """The routes and what they share (see the module docstring)."""

    def __init__(self, deps: Dependencies, verifier: Any | None, *, clock: Callable[[], float] = time.time) -> None:
        settings = deps.config.dashboard
        secret = settings.session_secret.get_secret_value() if settings.session_secret is not None else None
        if secret is None:  # logged at start-up (server.app.dashboard.mount)
            secret = secrets.token_urlsafe(32)
        self.deps = deps
        self.signer = SessionSigner(secret, settings.session_ttl_s, clock=clock)
        self.auth_on = verifier is not None
        self.keys = verifier if hasattr(verifier, "verify_digest") else getattr(verifier, "api_keys", None)
        self.refresh_s = settings.refresh_s
        self.limiter = KeyLimiter(deps.config.limits.requests_per_minute, None)
        self.templates = templates()
        self.app = Starlette(routes=[
            Route("/dashboard", self.overview), Route("/dashboard/overview/live", self.overview_live),
            Route("/dashboard/providers", self.providers), Route("/dashboard/runs", self.runs),
            Route("/dashboard/runs/{run_id}", self.run), Route("/dashboard/runs/{run_id}/live", self.run_live),
            Route("/dashboard/runs/{run_id}/decision", self.decide, methods=["POST"]),
            Route("/dashboard/incidents", self.incidents),
            Route("/dashboard/incidents/{incident_id}/acknowledge", self.acknowledge, methods=["POST"]),
            Route("/dashboard/patterns", self.patterns),
            Route("/dashboard/login", self.login_form, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="static"),
        ])

    # -- who is asking -------------------------------------------------------------------------------------

    async def visitor(self, request: Request) -> Visitor | None:
        """The visitor of a valid session whose key is still active; without authentication, the local user
        (with a new session if they have none). ``None``: log in (again)."""
        session = self.signer.read(request.cookies.get(SESSION_COOKIE))
        if not self.auth_on:
            if session is not None and session.key_digest is None:
                return Visitor(LOCAL, session)
            value, session = self.signer.issue(None)
            return Visitor(LOCAL, session, value)
        if session is None or session.key_digest is None or self.keys is None:
            return None
        access = await self.keys.verify_digest(session.key_digest)  # revoked or expired: refused here
        principal = (access.claims or {}).get("principal") if access is not None else None
        return Visitor(principal, session) if isinstance(principal, Principal) else None

    async def _page(self, request: Request, handler: Callable[[Visitor], Any], *, live: bool = False) -> Response:
        """Run ``handler`` for a logged-in visitor within the key's rate; else the login page (401 for live regions)."""
        visitor = await self.visitor(request)
        if visitor is None:
            if live:
                return PlainTextResponse("log in again\n", status_code=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return self._forget(RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303))
        wait_s = self.limiter.admit(visitor.principal.id)
        if wait_s is not None:
            return PlainTextResponse("too many requests for this key\n", status_code=429,
                                     headers={"Retry-After": str(max(1, round(wait_s)))})
        try:
            response = await handler(visitor)
        except pages.NotFound as exc:
            response = self.error(request, visitor, 404, str(exc))
        except pages.Refused as exc:
            response = self.error(request, visitor, 409, str(exc))
        except pages.BadRequest as exc:
            response = self.error(request, visitor, 400, str(exc))
        except FormError as exc:
            response = self.error(request, visitor, exc.status_code, str(exc))
        except Forbidden as exc:
            response = self.error(request, visitor, 403, str(exc))
        if visitor.new_cookie is not None:
            self._remember(response, request, visitor.new_cookie, self.signer.ttl_s)
        return response

    async def _form(self, request: Request, visitor: Visitor, fields: set[str]) -> dict[str, str]:
        """The posted form, after its CSRF token is checked (403 otherwise)."""
        form = await read_form(request, fields | {"csrf"})
        if not self.signer.csrf_ok(visitor.session.nonce, form.get("csrf")):
            raise FormError("the form's CSRF token is missing or wrong: reload the page and try again", 403)
        return form

    # -- rendering -----------------------------------------------------------------------------------------

    def render(self, request: Request, visitor: Visitor | None, name: str, context: dict[str, Any],
               status_code: int = 200) -> Response:
        principal = visitor.principal if visitor else None
        return self.templates.TemplateResponse(request, name, {
            "principal": principal, "auth_on": self.auth_on, "refresh_s": self.refresh_s,
            "is_admin": principal is not None and principal.role == "admin",
            "csrf": self.signer.csrf_token(visitor.session.nonce) if visitor else "", **context,
        }, status_code=status_code)

    def error(self, request: Request, visitor: Visitor | None, status_code: int, message: str) -> Response:
        return self.render(request, visitor, "error.html", {"active": "", "status_code": status_code,
                                                            "message": message}, status_code)

    def _remember(self, response: Response, request: Request, value: str, max_age_s: float,
                  name: str = SESSION_COOKIE) -> Response:
        response.set_cookie(name, value, max_age=int(max_age_s), path=COOKIE_PATH, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @staticmethod
    def _forget(response: Response) -> Response:
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    # -- pages ---------------------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            context = await pages.overview(self.deps, request.query_params.get("window", "1h"))
            return self.render(request, visitor, "overview.html", {"active": "overview", **context})
        return await self._page(request, show)

    async def overview_live(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            context = await pages.overview(self.deps, request.query_params.get("window", "1h"))
            return self.render(request, visitor, "_overview.html", context)
        return await self._page(request, show, live=True)

    async def providers(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            return self.render(request, visitor, "providers.html", {"active": "providers",
                                                                    **pages.providers(self.deps)})
        return await self._page(request, show)

    async def runs(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            query = request.query_params
            context = await pages.runs(self.deps, visitor.principal, query.get("status") or None,
                                       query.get("workflow") or None, query.get("offset", "0"))
            return self.render(request, visitor, "runs.html", {"active": "runs", **context})
        return await self._page(request, show)

    async def run(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            context = await pages.run(self.deps, visitor.principal, request.path_params["run_id"])
            done = request.query_params.get("done")  # after a decision: which one, for the notice
            return self.render(request, visitor, "run.html", {
                "active": "runs", "done": done if done in ("approved", "rejected") else None, **context})
        return await self._page(request, show)

    async def run_live(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            context = await pages.run(self.deps, visitor.principal, request.path_params["run_id"])
            return self.render(request, visitor, "_run.html", context)
        return await self._page(request, show, live=True)

    async def decide(self, request: Request) -> Response:
        async def act(visitor: Visitor) -> Response:
            form = await self._form(request, visitor, {"decision", "step", "comment"})
            require_role(visitor.principal, "admin", "approving or rejecting a run on the dashboard")
            run_id = request.path_params["run_id"]
            decision = await pages.decide(self.deps, visitor.principal, run_id, form)
            return RedirectResponse(f"/dashboard/runs/{quote(run_id)}?done={decision}", status_code=303)
        return await self._page(request, act)

    async def incidents(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            context = await pages.incidents(self.deps)
            return self.render(request, visitor, "incidents.html", {"active": "incidents", **context})
        return await self._page(request, show)

    async def acknowledge(self, request: Request) -> Response:
        async def act(visitor: Visitor) -> Response:
            form = await self._form(request, visitor, {"note"})
            require_role(visitor.principal, "admin", "acknowledging an incident")
            await pages.acknowledge(self.deps, visitor.principal, request.path_params["incident_id"], form)
            return RedirectResponse("/dashboard/incidents", status_code=303)
        return await self._page(request, act)

    async def patterns(self, request: Request) -> Response:
        async def show(visitor: Visitor) -> Response:
            context = await pages.patterns(self.deps)
            return self.render(request, visitor, "patterns.html", {"active": "patterns", **context})
        return await self._page(request, show)

    # -- login ---------------------------------------------------------------------------------------------

    async def login_form(self, request: Request, *, message: str = "", status_code: int = 200) -> Response:
        if not self.auth_on:
            return RedirectResponse("/dashboard", status_code=303)
        value, nonce = self.signer.login_nonce()
        response = self.templates.TemplateResponse(request, "login.html", {
            "principal": None, "auth_on": True, "active": "", "csrf": self.signer.csrf_token(nonce),
            "next": safe_next(request.query_params.get("next")), "message": message,
        }, status_code=status_code)
        return self._remember(response, request, value, 600, LOGIN_COOKIE)

    async def login(self, request: Request) -> Response:
        if not self.auth_on:
            return RedirectResponse("/dashboard", status_code=303)
        try:
            form = await read_form(request, {"key", "csrf", "next"})
        except FormError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=exc.status_code)
        nonce = self.signer.read_login_nonce(request.cookies.get(LOGIN_COOKIE))
        if not self.signer.csrf_ok(nonce, form.get("csrf")):
            return PlainTextResponse("the login form's CSRF token is missing or wrong: reload the page\n",
                                     status_code=403)
        key = form.get("key", "").strip()
        access = await self.keys.verify_token(key) if self.keys is not None and key else None
        if access is None:
            logger.info("dashboard login refused")  # never the key, nor anything typed
            return await self.login_form(request, message="That key was refused: unknown, revoked or expired.",
                                         status_code=401)
        value, _ = self.signer.issue(hash_key(key))
        response = RedirectResponse(safe_next(form.get("next")), status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return self._remember(response, request, value, self.signer.ttl_s)

    async def logout(self, request: Request) -> Response:
        async def act(visitor: Visitor) -> Response:
            await self._form(request, visitor, set())
            return self._forget(RedirectResponse("/dashboard/login" if self.auth_on else "/dashboard",
                                                 status_code=303))
        return await self._page(request, act)


def safe_next(target: str | None) -> str:
    """Where to go after login: a dashboard path, never another site (``//host`` or a scheme)."""
    if not target or not target.startswith("/dashboard") or "//" in target or "\\" in target:
        return "/dashboard"
    return target


async def read_form(request: Request, fields: set[str]) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body of at most :data:`MAX_FORM_BYTES`, with ``fields`` only.

    Raises:
        FormError: 413 too large, 415 another type, 400 unknown, repeated or undecodable fields.
    """
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise FormError("send the form as application/x-www-form-urlencoded", 415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                          max_num_fields=len(fields))
    except (UnicodeDecodeError, ValueError):
        raise FormError("the form could not be read (bad encoding or too many fields)") from None
    unknown = sorted(set(parsed) - fields)
    if unknown:
        raise FormError(f"unknown form field(s): {', '.join(unknown)}")
    if any(len(values) > 1 for values in parsed.values()):
        raise FormError("a form field was sent twice")
    return {name: values[0] for name, values in parsed.items()}


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
