"""Per-key limits on handshake-era Streamable HTTP sessions.

The MCP SDK's ``StreamableHTTPSessionManager`` keeps one table of handshake-era sessions for the whole server,
capped globally (``max_sessions``) and expired after ``session_idle_timeout`` without a request in flight; both
are public constructor arguments, and the server sets them from ``[limits]``. A global cap alone lets one key
that opens sessions and never closes them fill the table and lock every other key out, admins included.
:class:`SessionLimiter`, applied by :class:`server.security.http.SessionLimits` in front of the SDK's app, gives
each authenticated principal its own allowance, using only what crosses the HTTP boundary (no SDK internals):

- an opening request (a POST without ``Mcp-Session-Id`` in the handshake era) takes a slot before it reaches
  the SDK, and keeps it when the response carries the new session's ``Mcp-Session-Id``;
- a session's slot is free again when the client deletes it (DELETE answered 2xx), when the SDK no longer knows
  it (404), or when it has had no request in flight (an open GET stream counts) for the idle timeout plus a
  second. The SDK's own idle countdown starts inside our request, so it always ends first: the SDK's table never
  holds more of a key's sessions than our count says.

A key over its allowance gets 429 with ``Retry-After`` (seconds until its oldest idle session expires) and a
JSON-RPC error naming the limit, at once. The 2026-07-28 era has no sessions and is not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
# A request without the version header is handshake era too (the SDK's session manager routes it so).
HANDSHAKE_VERSIONS = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
GRACE_S = 1.0


@dataclass
class _Session:
    last_active: float
    in_flight: int = 0


@dataclass
class SessionLimiter:
    """The bookkeeping behind :class:`server.security.http.SessionLimits`: each principal's open sessions and
    pending opens.

    Args:
        max_per_key: sessions one principal may hold at once.
        idle_s: the SDK's idle timeout (seconds); a session idle this long (plus :data:`GRACE_S`) is gone.
    """

    max_per_key: int
    idle_s: float
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, dict[str, _Session]] = field(default_factory=dict)
    _pending: dict[str, int] = field(default_factory=dict)

    def _purge(self, principal: str, now: float) -> dict[str, _Session]:
        sessions = self._sessions.get(principal, {})
        for session_id in [s for s, entry in sessions.items() if self._expires(entry) <= now]:
            del sessions[session_id]
        return sessions

    def _expires(self, entry: _Session) -> float:
        return math.inf if entry.in_flight else entry.last_active + self.idle_s + GRACE_S

    def reserve(self, principal: str) -> float | None:
        """Take a slot for an opening request: ``None`` if taken, else seconds until one may be free."""
        now = self.clock()
        sessions = self._purge(principal, now)
        if len(sessions) + self._pending.get(principal, 0) < self.max_per_key:
            self._pending[principal] = self._pending.get(principal, 0) + 1
            return None
        soonest = min((self._expires(entry) for entry in sessions.values()), default=math.inf)
        return max(1.0, soonest - now) if math.isfinite(soonest) else self.idle_s

    def settle(self, principal: str, session_id: str | None) -> None:
        """The opening request is over: its slot becomes ``session_id``'s, or is freed (``None``)."""
        self._pending[principal] -= 1
        if not self._pending[principal]:
            del self._pending[principal]
        if session_id is not None:
            self._sessions.setdefault(principal, {})[session_id] = _Session(self.clock())

    def begin(self, principal: str, session_id: str) -> bool:
        """A request of ``session_id`` starts; ``False`` when the session is not one of ``principal``'s."""
        entry = self._sessions.get(principal, {}).get(session_id)
        if entry is None:
            return False
        entry.in_flight += 1
        return True

    def end(self, principal: str, session_id: str, *, gone: bool) -> None:
        """A request of ``session_id`` ended; ``gone``: the session ended with it (DELETE, or unknown to the SDK)."""
        sessions = self._sessions.get(principal, {})
        entry = sessions.get(session_id)
        if entry is None:
            return
        entry.in_flight -= 1
        entry.last_active = self.clock()
        if gone:
            del sessions[session_id]
        if not sessions:
            self._sessions.pop(principal, None)

    def open_sessions(self, principal: str) -> int:
        """How many sessions ``principal`` holds now."""
        return len(self._purge(principal, self.clock()))
