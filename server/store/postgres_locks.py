"""PostgreSQL's own coordination, used by the team deployment: advisory locks and LISTEN/NOTIFY.

- :class:`SessionLocks`: session-level advisory locks (https://www.postgresql.org/docs/current/
  explicit-locking.html#ADVISORY-LOCKS) on one dedicated connection. PostgreSQL releases them when the session
  ends, a SIGKILLed process's included (its socket closes), so a held lock *is* a live holder: a replica holds
  the lock on its replica id for as long as it runs.
- :func:`claim_interval`: a once-per-interval job slot, claimed under a transaction-level advisory lock.
- :class:`Listener`: LISTEN on a channel, each notification handed to a callback; :func:`notify` sends one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from server.store.location import PostgresDatabase

logger = logging.getLogger(__name__)
CHANNEL_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"


def lock_key(kind: str, name: str) -> int:
    """The signed 64-bit advisory-lock key of ``name`` in ``kind`` (SHA-256's first 8 bytes)."""
    return int.from_bytes(hashlib.sha256(f"ai-orchestration-mcp:{kind}:{name}".encode()).digest()[:8], "big",
                          signed=True)


class SessionLocks:
    """Advisory locks held by one session of their own (not the store's connection: a reconnect there must not
    drop a lock silently). Thread-safe; the calls block briefly, so async code runs them on a worker thread.

    If this connection is lost, PostgreSQL has released every lock it held: :meth:`alive` says so, and the owner
    must stop acting on them (the replica stops serving; see :mod:`server.workflows.replicas`).
    """

    def __init__(self, database: PostgresDatabase, application_name: str = "ai-orchestration-mcp-locks") -> None:
        from server.store.postgres_db import connect

        self._connection = connect(database, application_name=application_name)
        self._mutex = threading.Lock()
        self.held: set[int] = set()

    def acquire(self, key: int, wait_s: float) -> bool:
        """Take ``key``, waiting at most ``wait_s`` seconds for its holder to let go. Returns whether it is held."""
        import psycopg

        with self._mutex:
            try:
                with self._connection.transaction():
                    # lock_timeout bounds the wait; SET LOCAL keeps it to this transaction. A session lock taken
                    # inside a transaction outlives the transaction.
                    self._connection.execute(f"SET LOCAL lock_timeout = '{max(1, math.ceil(wait_s * 1000))}ms'")
                    self._connection.execute("SELECT pg_advisory_lock(%s)", [key])
            except psycopg.errors.LockNotAvailable:
                return False
            self.held.add(key)
            return True

    def try_acquire(self, key: int) -> bool:
        """Take ``key`` if nobody holds it; never waits."""
        with self._mutex:
            got = self._connection.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]
            if got:
                self.held.add(key)
            return bool(got)

    def release(self, key: int) -> None:
        with self._mutex:
            if key in self.held:
                self._connection.execute("SELECT pg_advisory_unlock(%s)", [key])
                self.held.discard(key)

    def alive(self) -> bool:
        """Whether the session (and so every lock it holds) is still there."""
        with self._mutex:
            try:
                self._connection.execute("SELECT 1")
                return True
            except Exception:  # noqa: BLE001 - any failure here means the session is gone
                return False

    def close(self) -> None:
        """End the session: PostgreSQL releases every lock it held."""
        with self._mutex:
            self.held.clear()
            self._connection.close()


def claim_interval(connection: Any, job: str, interval_s: float, now: float) -> bool:
    """Whether this caller runs ``job`` for the interval slot ``now`` falls in (slots of ``interval_s`` seconds
    since the epoch): True for exactly one caller per slot across every replica.

    A transaction-level advisory lock on the job orders the claims; the job's last claimed slot is kept in the
    ``interval_jobs`` table, so a replica that wakes later in the same slot gets
    ``False``.
    """
    slot = math.floor(now / interval_s)
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("interval-job", job)])
        claimed = connection.execute(
            "INSERT INTO interval_jobs (name, slot, interval_s, claimed_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET slot = excluded.slot, interval_s = excluded.interval_s, "
            "claimed_at = excluded.claimed_at WHERE interval_jobs.slot < excluded.slot "
            "OR interval_jobs.interval_s <> excluded.interval_s RETURNING name",
            [job, slot, interval_s, now]).fetchone()
    return claimed is not None


def notify(connection: Any, channel: str, payload: str) -> None:
    """``pg_notify(channel, payload)`` (delivered to listeners when the transaction commits)."""
    connection.execute("SELECT pg_notify(%s, %s)", [channel, payload])


class Listener:
    """LISTEN on ``channel`` on a connection of its own, in a daemon thread; ``on_message(payload)`` is called
    (on that thread) for each notification. A lost connection is reopened (notifications sent meanwhile are
    missed: listeners must treat them as hints and re-read the state they point at)."""

    def __init__(self, database: PostgresDatabase, channel: str, on_message: Callable[[str], None]) -> None:
        import re

        if not re.match(CHANNEL_PATTERN, channel):
            raise ValueError(f"bad channel name {channel!r}")
        self._database = database
        self._channel = channel
        self._on_message = on_message
        self._stopped = threading.Event()
        self._connection: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{channel}", daemon=True)
        self._thread.start()
        self._ready.wait(15)

    def _run(self) -> None:
        from server.store.postgres_db import connect

        while not self._stopped.is_set():
            try:
                self._connection = connect(self._database, application_name="ai-orchestration-mcp-listen")
                self._connection.execute(f"LISTEN {self._channel}")
                self._ready.set()
                while not self._stopped.is_set():
                    for message in self._connection.notifies(timeout=1.0):
                        try:
                            self._on_message(message.payload)
                        except Exception:
                            logger.warning("a notification listener failed", exc_info=True)
            except Exception:
                if self._stopped.is_set():
                    return
                logger.warning("LISTEN %s: connection lost; reconnecting", self._channel, exc_info=True)
                self._stopped.wait(1.0)
            finally:
                if self._connection is not None:
                    self._connection.close()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
