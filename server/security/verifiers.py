"""Bearer-token verifiers behind the MCP SDK's ``TokenVerifier`` protocol: our API keys, and JWTs (JWKS).

The SDK's ``BearerAuthBackend`` calls :meth:`verify_token` and its ``RequireAuthMiddleware`` answers 401 with
``WWW-Authenticate`` for a missing or refused token and 403 ``insufficient_scope`` for missing scopes (MCP
authorization spec, resource-server role; RFC 6750 §3). The verified :class:`~server.security.Principal`
travels in ``AccessToken.claims["principal"]``. ``AccessToken.token`` never holds the presented token: it
holds the key id (or the JWT's ``jti``), so nothing downstream can log or forward it.

A refused token is logged with its reason and the key id at most, never the token. Any error while verifying a
JWT (a malformed header, a ``kid`` that names a key of another type, an unreachable JWKS) refuses it: 401.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mcp.server.auth.provider import AccessToken

from server.security import Principal
from server.security.keys import hash_key, key_state, looks_like_key
from server.security.settings import JwtSettings
from server.store import KeyStore

logger = logging.getLogger(__name__)


class ApiKeyVerifier:
    """Verifies ``aiom_…`` keys against the store's hashes.

    Args:
        cache_s: how long a verified key is trusted without a store lookup (revocation takes effect within it).
    """

    def __init__(self, store: KeyStore, *, cache_s: float = 2.0, extra_scopes: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._extra_scopes = list(extra_scopes)
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, AccessToken | None]] = {}

    async def verify_token(self, token: str) -> AccessToken | None:
        if not looks_like_key(token):
            return None
        return await self.verify_digest(hash_key(token))

    async def verify_digest(self, digest: str) -> AccessToken | None:
        """:meth:`verify_token` for a key known by its SHA-256 (a dashboard session holds that, never the key),
        through the same cache."""
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self._store.api_key_by_hash(digest)
        access: AccessToken | None = None
        if record is None:
            logger.info("refused an API key: unknown")
        elif (state := key_state(record, now)) != "active":
            logger.info("refused API key %s: %s", record.id, state)
        else:
            principal = Principal(f"key:{record.id}", record.role)  # type: ignore[arg-type]
            scopes = (["user", "admin"] if record.role == "admin" else ["user"]) + self._extra_scopes
            access = AccessToken(token=record.id, client_id=f"key:{record.id}", scopes=scopes,
                                 expires_at=int(record.expires_at) if record.expires_at else None,
                                 claims={"principal": principal})
        if self._cache_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._cache_s, access)
        return access


class JwtVerifier:
    """Verifies JWTs: signature by a key of the JWKS at ``jwks_url``, ``iss``, ``aud``, ``exp`` (and ``nbf``).

    Scopes come from ``scope`` (space-separated) or ``scp`` (list). The role is ``admin`` when the token carries
    ``admin_scope``, else ``user``. PyJWT (and cryptography) are imported on first use.
    """

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._jwks: Any = None

    def _client(self) -> Any:
        if self._jwks is None:
            import jwt

            self._jwks = jwt.PyJWKClient(self._settings.jwks_url, cache_keys=True, lifespan=300, timeout=10)
        return self._jwks

    async def verify_token(self, token: str) -> AccessToken | None:
        if token.count(".") != 2:
            return None
        import anyio

        return await anyio.to_thread.run_sync(self._verify, token)

    def _verify(self, token: str) -> AccessToken | None:
        import jwt

        settings = self._settings
        try:
            key = self._client().get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=list(settings.algorithms), audience=settings.audience,
                                issuer=settings.issuer, leeway=settings.leeway_s,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            logger.info("refused a JWT: expired")
            return None
        except jwt.InvalidAudienceError:
            logger.info("refused a JWT: wrong audience")
            return None
        except jwt.InvalidIssuerError:
            logger.info("refused a JWT: wrong issuer")
            return None
        except Exception as exc:  # noqa: BLE001 - any failure to verify is a refusal (401), never a 500
            # e.g. a `kid` naming a key of another type: PyJWT raises TypeError from the key's own parser.
            logger.info("refused a JWT: %s", type(exc).__name__)
            return None
        scopes = _scopes(claims)
        role = "admin" if settings.admin_scope in scopes else "user"
        principal = Principal(f"jwt:{claims['iss']}#{claims['sub']}", role)
        return AccessToken(token=str(claims.get("jti") or ""), client_id=str(claims.get("client_id") or
                                                                            claims.get("azp") or claims["sub"]),
                           scopes=scopes, expires_at=int(claims["exp"]), resource=settings.audience,
                           subject=str(claims["sub"]), claims={"principal": principal, "iss": claims["iss"]})


def _scopes(claims: dict[str, Any]) -> list[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [str(s) for s in scp]
    return []


class ChainVerifier:
    """Tries each verifier in turn; the first that accepts the token wins."""

    def __init__(self, *verifiers: Any) -> None:
        self._verifiers = verifiers

    @property
    def api_keys(self) -> ApiKeyVerifier | None:
        """The API-key verifier of the chain, if it has one."""
        return next((v for v in self._verifiers if isinstance(v, ApiKeyVerifier)), None)

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self._verifiers:
            access = await verifier.verify_token(token)
            if access is not None:
                return access
        return None
