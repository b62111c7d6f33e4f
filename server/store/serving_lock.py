"""One serving process per SQLite database (or simple-mode state file), and the DBOS executor id of a database.

A serving process holds an exclusive ``flock`` on ``<database>.lock`` beside the database for as long as it
serves; the operating system releases the lock when the process ends, however it ends (a SIGKILL included), so
there is no stale lock to clean up. A second serving process on the same database is refused at start. Short
CLI commands (``keys``, ``patterns``, ``metrics``) take no lock: SQLite's own locking lets them work beside the
server. Several replicas share state only through PostgreSQL (the README's "Team deployment").
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from server.errors import OrchestrationError
from server.store.errors import StorageError, StoreUnavailable

TEAM_HINT = ("a SQLite database belongs to one serving process: give this server its own --database, or run "
             "several replicas on PostgreSQL (README: Team deployment)")


class DatabaseInUse(StorageError):
    """Another serving process holds the database's lock.

    Attributes:
        location: the database.
        holder: the process id written in the lock file by its holder (``None`` when unreadable).
    """

    def __init__(self, location: str, holder: int | None) -> None:
        who = f"another server process (pid {holder})" if holder else "another server process"
        OrchestrationError.__init__(self, f"{who} is serving the database {location}; {TEAM_HINT}")
        self.condition, self.what, self.location, self.holder = "locked", "the database", location, holder


def lock_path(database: str | Path) -> Path:
    """The lock file beside ``database``: its name with ``.lock`` added."""
    path = Path(database)
    return path.with_name(path.name + ".lock")


class ServingLock:
    """The serving lock of one database, held from :func:`hold_serving_lock` until :meth:`close` (or the end of
    the process, however it ends). Also a context manager."""

    def __init__(self, handle: int | None) -> None:
        self._handle = handle

    def close(self) -> None:
        """Release the lock (the file stays: removing it would race a process taking it). Idempotent."""
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> ServingLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hold_serving_lock(database: str | Path) -> ServingLock:
    """Take the serving lock of ``database`` (``":memory:"`` needs none), without waiting.

    Raises:
        DatabaseInUse: another live process holds it (names the process and the database).
        StoreUnavailable: the lock file cannot be made (names the database and why: a read-only folder …).
    """
    if str(database) == ":memory:":
        return ServingLock(None)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        return ServingLock(None)
    path = lock_path(database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreUnavailable(str(database), exc) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(handle)
        os.close(handle)
        raise DatabaseInUse(str(database), holder) from None
    except OSError as exc:
        os.close(handle)
        raise StoreUnavailable(str(database), exc) from None
    os.ftruncate(handle, 0)
    os.write(handle, f"{os.getpid()}\n".encode())
    return ServingLock(handle)


def _holder(handle: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(handle, 32, 0).decode().strip() or 0) or None
    return None


def database_executor_id(database: str | Path) -> str:
    """A DBOS executor id for the server of ``database``: stable across its restarts (so it recovers its own
    interrupted runs) and different for every other database, so two servers that share one configured DBOS
    system database never recover each other's runs."""
    resolved = str(Path(database).expanduser().resolve())
    return "db-" + hashlib.sha256(resolved.encode()).hexdigest()[:16]
