"""Dashboard sessions: a signed cookie that names an API key by its SHA-256, CSRF tokens bound to it.

A login exchanges an API key (the same keys and roles as ``/mcp``) for a session cookie: ``HttpOnly``,
``SameSite=Strict``, ``Path=/dashboard``, ``Max-Age`` = ``[dashboard] session_ttl_s``, ``Secure`` when the request
came over HTTPS. The cookie carries a random nonce, an expiry (Unix seconds) and the key's SHA-256 (what the
store keeps; never the key), signed with the shared session secret by itsdangerous (HMAC-SHA256, constant-time
checks), so any replica that has the same secret accepts it. Every request checks the key again through the
bearer verifier's cache (:meth:`server.security.verifiers.ApiKeyVerifier.verify_digest`): a revoked or
expired key ends the session within ``[auth] key_cache_s``.

CSRF: every state-changing form carries a token that is the session nonce signed under another salt (the
synchronizer-token pattern, OWASP CSRF cheat sheet); the login form's token is bound the same way to a
short-lived pre-login cookie. Both cookies are ``SameSite=Strict`` as well, and Origin is checked in front
(:class:`server.security.http.HostOriginGuard`).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer, URLSafeSerializer

SESSION_COOKIE = "aiom_dashboard"
LOGIN_COOKIE = "aiom_dashboard_login"
LOGIN_TTL_S = 600.0
COOKIE_PATH = "/dashboard"
_MAX_COOKIE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Session:
    """A signed session.

    Attributes:
        nonce: random, per login; CSRF tokens are bound to it.
        key_digest: hex SHA-256 of the API key that logged in; ``None`` on a server without authentication
            (the machine's own user, as on ``/mcp``).
        expires_at: Unix seconds.
    """

    nonce: str
    key_digest: str | None
    expires_at: float


class SessionSigner:
    """Issues and reads session and pre-login cookies and their CSRF tokens.

    Args:
        secret: the shared signing key (at least 32 characters; a random one per process when none is configured).
        ttl_s: how long a session lasts.
    """

    def __init__(self, secret: str, ttl_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._session = URLSafeSerializer(secret, salt="aiom-dashboard-session")
        self._login = URLSafeSerializer(secret, salt="aiom-dashboard-login")
        self._csrf = Signer(secret, salt="aiom-dashboard-csrf")
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, key_digest: str | None) -> tuple[str, Session]:
        """A new session for the key with SHA-256 ``key_digest``: the cookie value and the session."""
        session = Session(secrets.token_urlsafe(16), key_digest, self._clock() + self.ttl_s)
        value = self._session.dumps({"n": session.nonce, "d": session.key_digest, "e": session.expires_at})
        return value, session

    def read(self, value: str | None) -> Session | None:
        """The session in a cookie value, or ``None`` when it is missing, forged, malformed or expired."""
        data = self._load(self._session, value)
        if data is None or not isinstance(data.get("d"), (str, type(None))):
            return None
        expires_at = data.get("e")
        if not isinstance(expires_at, (int, float)) or expires_at <= self._clock():
            return None
        return Session(str(data.get("n")), data.get("d"), float(expires_at))

    def login_nonce(self) -> tuple[str, str]:
        """A pre-login cookie value and its nonce (the login form's CSRF token is bound to it)."""
        nonce = secrets.token_urlsafe(16)
        return self._login.dumps({"n": nonce, "e": self._clock() + LOGIN_TTL_S}), nonce

    def read_login_nonce(self, value: str | None) -> str | None:
        data = self._load(self._login, value)
        if data is None or not isinstance(data.get("e"), (int, float)) or data["e"] <= self._clock():
            return None
        return str(data.get("n"))

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token for forms of the session (or pre-login cookie) with ``nonce``."""
        return self._csrf.get_signature(nonce).decode()

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of ``nonce`` (constant time)."""
        if not nonce or not token:
            return False
        return hmac.compare_digest(self.csrf_token(nonce).encode(), token.encode("utf-8", "replace"))

    @staticmethod
    def _load(serializer: URLSafeSerializer, value: str | None) -> dict | None:
        if not value or len(value) > _MAX_COOKIE_CHARS:
            return None
        try:
            data = serializer.loads(value)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None
